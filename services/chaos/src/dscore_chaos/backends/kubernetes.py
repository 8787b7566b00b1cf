"""Kubernetes: delete a node pod (the leader, a random one, or one by name); its StatefulSet replaces it.

The pods are those of `namespace` matching `label_selector` that are Running and not being deleted. A
named pod must be one of them: the service never deletes a pod outside the selector. The delete names
the pod's uid as a precondition, so a pod replaced between the choice and the delete is not hit by
mistake. The grace period is the pod's own unless the request sets one (never 0: see
`PodKillParams`): the node then gets SIGTERM, and a leader hands leadership over before it exits; a
crash without hand-over is `process_kill` locally.

The Kubernetes client is synchronous; its calls run in a worker thread, each bounded by
`request_timeout_s`. RBAC it needs in the namespace: pods get, list, delete.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from kubernetes import client, config

from dscore.core.errors import ConfigError
from dscore_chaos.backends.base import Hit, InjectionError
from dscore_chaos.model import ChaosKind, FaultSpec, PodKillParams
from dscore_chaos.settings import KubernetesOptions
from dscore_chaos.targets import LeaderFinder, Member, TargetError, choose


def api_client(options: KubernetesOptions) -> Any:
    """A client from `options.kubeconfig`, else the in-cluster service account; `ConfigError` if neither
    works."""
    try:
        if options.kubeconfig is not None:
            return config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(options.kubeconfig), persist_config=False
            )
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        where = options.kubeconfig or "the in-cluster service account"
        raise ConfigError(f"no Kubernetes credentials from {where}: {error}") from None
    return client.ApiClient()


def _base_url(pod_ip: str | None, port: int) -> str | None:
    if not pod_ip:
        return None
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}"


class KubernetesBackend:
    """`pod_kill` (see the module docstring)."""

    kinds = frozenset({ChaosKind.POD_KILL})

    def __init__(
        self,
        api: Any,
        *,
        namespace: str,
        options: KubernetesOptions,
        finder: LeaderFinder,
        rng: random.Random,
    ) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.options = options
        self._finder = finder
        self._rng = rng

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await asyncio.to_thread(self._api.close)

    async def members(self) -> list[Member]:
        options = self.options
        try:
            pods = await asyncio.to_thread(
                self._core.list_namespaced_pod,
                self.namespace,
                label_selector=options.label_selector,
                _request_timeout=options.request_timeout_s,
            )
        except client.ApiException as error:
            raise InjectionError(f"listing pods in {self.namespace}: {error.status} {error.reason}") from None
        except Exception as error:  # the client raises urllib3's errors for a network failure
            raise InjectionError(f"listing pods in {self.namespace}: {error!r}") from None
        members = []
        for pod in pods.items:
            meta, status = pod.metadata, pod.status
            if meta is None or meta.name is None or status is None:
                continue
            if status.phase != "Running" or meta.deletion_timestamp is not None:
                continue
            members.append(
                Member(
                    meta.name,
                    base_url=_base_url(status.pod_ip, options.node_http_port),
                    annotations=dict(meta.annotations or {}),
                    uid=meta.uid,
                )
            )
        return sorted(members, key=lambda m: m.name)

    async def inject(self, spec: FaultSpec, fault_id: str, number: int) -> Hit:
        params = spec.params
        assert isinstance(params, PodKillParams)
        members = await self.members()
        if not members:
            raise InjectionError(
                f"no running pod matches {self.options.label_selector!r} in {self.namespace}"
            )
        try:
            member, node_id = await choose(members, spec.target, finder=self._finder, rng=self._rng)
        except TargetError as error:
            raise InjectionError(str(error)) from None
        body = client.V1DeleteOptions(
            grace_period_seconds=params.grace_period_s, preconditions=client.V1Preconditions(uid=member.uid)
        )
        try:
            await asyncio.to_thread(
                self._core.delete_namespaced_pod,
                member.name,
                self.namespace,
                body=body,
                _request_timeout=self.options.request_timeout_s,
            )
        except client.ApiException as error:
            raise InjectionError(f"deleting pod {member.name}: {error.status} {error.reason}") from None
        except Exception as error:
            raise InjectionError(f"deleting pod {member.name}: {error!r}") from None
        node = f", node {node_id}" if node_id else ""
        return Hit(member.name, f"deleted pod {member.name} (uid {member.uid}{node})")

    async def leader_node_id(self) -> str:
        leader = await self._finder.find(await self.members())
        if leader is None:
            raise TargetError(f"no leader found among the pods of {self.options.label_selector!r}")
        return leader.node_id or leader.member.name
