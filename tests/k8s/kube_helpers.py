"""Waiting on a real API server's events (list, then watch from the list's resourceVersion; bounded)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from kubernetes import client, watch

T = TypeVar("T")

# scripts/k8s.sh's fake (kwok) nodes carry this label and taint: a pod goes there only if it asks.
KWOK_NODE_SELECTOR: dict[str, str] = {"type": "kwok"}
KWOK_TOLERATIONS: list[dict[str, str]] = [
    {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
]


def _is_running(pod: Any) -> bool:
    return (
        pod.status is not None and pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None
    )


def _describe(objects: Mapping[str, Any]) -> str:
    """Pods and namespaces alike: name=phase, marked when being deleted."""
    return ", ".join(
        f"{name}={obj.status.phase if obj.status else None}"
        f"{' (terminating)' if obj.metadata.deletion_timestamp else ''}"
        for name, obj in sorted(objects.items())
    )


def wait_for_running_pods(
    core: client.CoreV1Api,
    namespace: str,
    label_selector: str,
    count: int,
    timeout_s: int,
    gone: Collection[str] = (),
) -> dict[str, Any]:
    """Wait until exactly `count` pods matching the selector are Running (not terminating) and none of the
    pods named in `gone` exists any more; return the running pods by name."""

    def running_if_done(pods: Mapping[str, Any]) -> dict[str, Any] | None:
        if any(name in pods for name in gone):
            return None
        running = {name: pod for name, pod in pods.items() if _is_running(pod)}
        return running if len(running) == count else None

    return _watch_until(
        core.list_namespaced_pod,
        {"namespace": namespace, "label_selector": label_selector},
        running_if_done,
        timeout_s,
        what=f"{count} Running pod(s) `{label_selector}` in {namespace} (and {sorted(gone)} gone)",
    )


def wait_for_namespace_gone(core: client.CoreV1Api, name: str, timeout_s: int) -> None:
    """Wait until the namespace no longer exists (its finalizers, i.e. its contents' deletion, done)."""
    _watch_until(
        core.list_namespace,
        {"field_selector": f"metadata.name={name}"},
        lambda namespaces: True if not namespaces else None,
        timeout_s,
        what=f"namespace {name} gone",
    )


def _watch_until(
    list_fn: Callable[..., Any],
    list_args: Mapping[str, str],
    done: Callable[[Mapping[str, Any]], T | None],
    timeout_s: int,
    what: str,
) -> T:
    # The API method itself, not a wrapper: the client reads the type to decode events from its docstring.
    listed = list_fn(**list_args)
    objects: dict[str, Any] = {item.metadata.name: item for item in listed.items}
    result = done(objects)
    if result is not None:
        return result
    stream = watch.Watch()
    for event in stream.stream(
        list_fn,
        **list_args,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=timeout_s,
        _request_timeout=timeout_s + 10,
    ):
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            stream.stop()
            raise AssertionError(f"watch failed while waiting for {what}: {event['raw_object']}")
        if kind == "DELETED":
            objects.pop(obj.metadata.name, None)
        else:
            objects[obj.metadata.name] = obj
        result = done(objects)
        if result is not None:
            stream.stop()
            return result
    raise AssertionError(f"no {what} within {timeout_s} s; last seen: {_describe(objects) or 'nothing'}")
