"""Membership changes around a scale of the nodes' StatefulSet, run by the chart's hook Jobs with the node
image's Python (standard library only).

    membership.py pre  --statefulset S --replicas N --running-replicas M ...   (pre-upgrade)
    membership.py post --statefulset S --replicas N ...                        (post-upgrade)

`pre`, before the StatefulSet changes: the leader removes the members of the ordinals that go (highest
first, one change at a time: single-server changes), then adds the new ordinals' ids as learners (a
learner does not count for the quorum while it catches up). An ordinal whose id was removed from the
cluster earlier (ids are never reused) gets a new one, `<pod>.g<k>`, written to the node-ids ConfigMap
that node-start.sh reads. `post`, after it: each learner that caught up (applied what the leader had
committed when we looked) is promoted to voter, one at a time.

Every step is idempotent (it compares the cluster's membership with the wanted one), so a Job that failed
half-way is simply run again by the next `helm upgrade`.

The node's HTTP API it speaks (services/node/src/dscore_node/http.py, `DSCORE_HTTP__ADMIN=true`; every
`/admin` call carries `Authorization: Bearer $DSCORE_HTTP__ADMIN_TOKEN`, from the chart's Secret):
`GET /debug/state` (`node_id`, `role`, `leader_id`, `voters`, `learners`, `removed`, `commit_index`,
`applied_index`); `POST /admin/introduce/<id>` on every running member before an add (they accept the
new node's messages before their logs hold the change); on the leader `POST
/admin/members/<id>?learner=true`, `POST /admin/members/<id>/promote`, `DELETE /admin/members/<id>`:
200 once committed, or with `"unchanged": true` when there was nothing to do; 421 with `leader_id` on a
follower; 409 `change_in_progress` (retry), 409 `id_removed` and other refusals (fail). See
charts/dscore/README.md, "Scaling".
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
#: the nodes' admin bearer token (the chart's Secret); never printed
ADMIN_TOKEN_ENV = "DSCORE_HTTP__ADMIN_TOKEN"
MAX_NODE_ID = 63
#: pauses between polls of a node (a change in progress, a learner catching up)
POLL_S = 1.0


class MembershipError(Exception):
    """A step that cannot be done: the Job fails with this message (and helm with the Job)."""


class NoLeaderError(MembershipError):
    """No pod names a leader that says it leads (an election, a leader restarting): retried until the
    deadline."""


@dataclass(frozen=True)
class ClusterView:
    """What the cluster's leader says about its membership."""

    leader_id: str
    voters: frozenset[str]
    learners: frozenset[str]
    removed: frozenset[str]

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners


@dataclass(frozen=True)
class Action:
    kind: str  # "remove", "rename", "add_learner", "promote"
    node_id: str
    pod: str = ""


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)

    def describe(self) -> str:
        if not self.actions:
            return "nothing to do"
        return "; ".join(f"{a.kind} {a.node_id}" + (f" (pod {a.pod})" if a.pod else "") for a in self.actions)


def pod_name(statefulset: str, ordinal: int) -> str:
    return f"{statefulset}-{ordinal}"


def id_of(pod: str, node_ids: dict[str, str]) -> str:
    return node_ids.get(pod) or pod


def next_id(pod: str, taken: frozenset[str]) -> str:
    """The first `<pod>.g<k>` (k >= 2) never used in this cluster."""
    generation = 2
    while f"{pod}.g{generation}" in taken:
        generation += 1
    candidate = f"{pod}.g{generation}"
    if len(candidate) > MAX_NODE_ID:
        raise MembershipError(f"node id {candidate!r} would exceed {MAX_NODE_ID} characters")
    return candidate


def plan_pre(view: ClusterView, statefulset: str, replicas: int, node_ids: dict[str, str]) -> Plan:
    """Removals of the ordinals at and above `replicas` (highest first), then the new ordinals as
    learners (renamed first when their id was removed before)."""
    if replicas < 1:
        raise MembershipError("node.replicas must be at least 1")
    plan = Plan()
    wanted = {pod_name(statefulset, i) for i in range(replicas)}
    going = sorted(
        (member for member in view.members if pod_of(member, statefulset, node_ids) not in wanted),
        key=lambda member: ordinal_of(pod_of(member, statefulset, node_ids), statefulset),
        reverse=True,
    )
    for member in going:
        plan.actions.append(Action("remove", member))
    taken = view.members | view.removed | frozenset(node_ids.values())
    for ordinal in range(replicas):
        pod = pod_name(statefulset, ordinal)
        node = id_of(pod, node_ids)
        if node in view.members:
            continue
        if node in view.removed:
            node = next_id(pod, taken)
            taken = taken | {node}
            plan.actions.append(Action("rename", node, pod))
        plan.actions.append(Action("add_learner", node, pod))
    return plan


def plan_post(view: ClusterView, statefulset: str, replicas: int, node_ids: dict[str, str]) -> Plan:
    """Promotion of the wanted ordinals that are learners."""
    plan = Plan()
    for ordinal in range(replicas):
        pod = pod_name(statefulset, ordinal)
        node = id_of(pod, node_ids)
        if node in view.learners:
            plan.actions.append(Action("promote", node, pod))
    return plan


def ordinal_of(pod: str, statefulset: str) -> int:
    suffix = pod.removeprefix(f"{statefulset}-")
    return int(suffix) if suffix.isdigit() and pod != suffix else -1


def pod_of(node: str, statefulset: str, node_ids: dict[str, str]) -> str:
    """The pod a member runs in: the node-ids map's inverse, else the id itself (ids are pod names)."""
    for pod, mapped in node_ids.items():
        if mapped == node:
            return pod
    return node


# -- I/O ------------------------------------------------------------------------------------------------

#: (url, method, headers) -> (status, JSON body); raises OSError when the node cannot be reached
Fetch = Callable[[str, str, dict[str, str]], tuple[int, dict[str, Any]]]


def http_json(
    url: str,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    *,
    timeout_s: float = 10.0,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    """One JSON request; returns (status, body) for any HTTP status, raises OSError when unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        parsed = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        parsed = {"text": raw[:200].decode(errors="replace")}
    return status, parsed if isinstance(parsed, dict) else {"value": parsed}


class Nodes:
    """The nodes' HTTP API, each pod reached through the headless Service."""

    def __init__(
        self,
        statefulset: str,
        headless: str,
        namespace: str,
        port: int,
        admin_token: str,
        *,
        fetch: Fetch | None = None,
        base_url: Callable[[str], str] | None = None,
    ) -> None:
        self.statefulset = statefulset
        self.headless = headless
        self.namespace = namespace
        self.port = port
        self._admin = {"Authorization": f"Bearer {admin_token}"}
        #: what each pod answered last (for the error when no leader is found)
        self.last_answers: dict[str, str] = {}
        self._fetch: Fetch = fetch or (lambda url, method, headers: http_json(url, method, headers=headers))
        # a pod's base URL: through the headless Service by default (tests point it elsewhere)
        self._base_url = base_url or (lambda pod: f"http://{pod}.{headless}.{namespace}.svc:{port}")

    def url(self, pod: str, path: str) -> str:
        return self._base_url(pod) + path

    def state(self, pod: str) -> dict[str, Any] | None:
        try:
            status, body = self._fetch(self.url(pod, "/debug/state"), "GET", {})
        except OSError as error:
            self.last_answers[pod] = f"unreachable ({error})"
            return None
        self.last_answers[pod] = f"{status} role={body.get('role')} leader={body.get('leader_id')}"
        return body if status == 200 else None

    def introduce(self, pods: Sequence[str], node: str) -> None:
        """Every reachable member accepts messages from `node` from now on (a pod that is down learns the
        member from the configuration once it is back)."""
        for pod in pods:
            try:
                status, answer = self._fetch(self.url(pod, f"/admin/introduce/{node}"), "POST", self._admin)
            except OSError:
                continue
            if status == 401:
                raise MembershipError(f"{pod} refused the admin token ({ADMIN_TOKEN_ENV}): {answer}")

    def view(self, pods: Sequence[str], node_ids: dict[str, str]) -> tuple[ClusterView, str]:
        """The leader's view and the leader's pod, asked of the first pod that knows a leader."""
        for pod in pods:
            state = self.state(pod)
            if state is None or not state.get("leader_id"):
                continue
            leader_pod = pod_of(state["leader_id"], self.statefulset, node_ids)
            leader = self.state(leader_pod)
            if leader is None or leader.get("role") != "leader":
                continue
            for key in ("voters", "learners", "removed"):
                if key not in leader:
                    raise MembershipError(
                        f"the node's /debug/state has no {key!r}: this node image lacks what the chart's "
                        "membership Job needs (charts/dscore/README.md, Scaling)"
                    )
            return ClusterView(
                str(leader["node_id"]),
                frozenset(leader["voters"]),
                frozenset(leader["learners"]),
                frozenset(leader["removed"]),
            ), leader_pod
        answers = "; ".join(f"{pod}: {self.last_answers.get(pod, '-')}" for pod in pods)
        raise NoLeaderError(f"no leader found among {', '.join(pods)} ({answers})")

    def change(self, leader_pod: str, method: str, path: str) -> bool:
        """True when the leader made the change (or there was nothing to do); False when it asks to retry
        (not the leader any more, not running, a change in progress, the outcome not known in time,
        unreachable)."""
        try:
            status, answer = self._fetch(self.url(leader_pod, path), method, self._admin)
        except OSError:
            return False
        if status == 200:
            return True
        if status in (421, 503, 504) or (status == 409 and answer.get("error") == "change_in_progress"):
            return False
        raise MembershipError(f"{method} {path} on {leader_pod}: {status} {answer}")


class Kube:
    """The node-ids ConfigMap, through the API server with the pod's service account."""

    def __init__(self, namespace: str, configmap: str, base: str = "https://kubernetes.default.svc") -> None:
        self.url = f"{base}/api/v1/namespaces/{namespace}/configmaps/{configmap}"
        with open(f"{SERVICE_ACCOUNT}/token") as token:
            self.headers = {"Authorization": f"Bearer {token.read().strip()}"}
        self.context = ssl.create_default_context(cafile=f"{SERVICE_ACCOUNT}/ca.crt")

    def node_ids(self) -> dict[str, str]:
        status, body = http_json(self.url, headers=self.headers, context=self.context)
        if status == 404:
            return {}
        if status != 200:
            raise MembershipError(f"reading {self.url}: {status} {body}")
        return dict(body.get("data") or {})

    def set_node_id(self, pod: str, node: str) -> None:
        status, body = http_json(
            self.url,
            "PATCH",
            {"data": {pod: node}},
            headers=self.headers,
            context=self.context,
            content_type="application/merge-patch+json",
        )
        if status != 200:
            raise MembershipError(f"patching {self.url}: {status} {body}")


def run(
    phase: str,
    args: argparse.Namespace,
    nodes: Nodes,
    node_ids: dict[str, str],
    *,
    set_node_id: Callable[[str, str], None],
    deadline: float,
) -> Plan:
    """Carry out the phase's plan, asking the leader again before every step."""
    running = [pod_name(args.statefulset, i) for i in range(max(args.running_replicas, args.replicas))]
    planner = plan_pre if phase == "pre" else plan_post
    done = Plan()
    while True:
        try:
            view, leader_pod = nodes.view(running, node_ids)
        except NoLeaderError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)
            continue
        plan = planner(view, args.statefulset, args.replicas, node_ids)
        if not plan.actions:
            return done
        action = plan.actions[0]
        if action.kind == "rename":
            set_node_id(action.pod, action.node_id)
            node_ids[action.pod] = action.node_id
            done.actions.append(action)
            continue
        if action.kind == "promote" and not caught_up(nodes, action.pod, view, leader_pod):
            made = False
        elif action.kind == "remove":
            made = nodes.change(leader_pod, "DELETE", f"/admin/members/{action.node_id}")
        elif action.kind == "add_learner":
            nodes.introduce(running, action.node_id)
            made = nodes.change(leader_pod, "POST", f"/admin/members/{action.node_id}?learner=true")
        else:
            made = nodes.change(leader_pod, "POST", f"/admin/members/{action.node_id}/promote")
        if made:
            done.actions.append(action)
            print(f"membership: {action.kind} {action.node_id}: done", flush=True)
            continue
        if time.monotonic() > deadline:
            raise MembershipError(
                f"{action.kind} {action.node_id} not done in time (so far: {done.describe()})"
            )
        time.sleep(POLL_S)


def caught_up(nodes: Nodes, pod: str, view: ClusterView, leader_pod: str) -> bool:
    leader = nodes.state(leader_pod)
    learner = nodes.state(pod)
    if leader is None or learner is None:
        return False
    return int(learner.get("applied_index") or 0) >= int(leader.get("commit_index") or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=["pre", "post"])
    parser.add_argument("--statefulset", required=True)
    parser.add_argument("--headless", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--node-ids-configmap", required=True)
    parser.add_argument("--replicas", type=int, required=True)
    parser.add_argument("--running-replicas", type=int, default=0)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout_s
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        print(f"membership {args.phase}: {ADMIN_TOKEN_ENV} is not set", file=sys.stderr, flush=True)
        return 1
    try:
        kube = Kube(args.namespace, args.node_ids_configmap)
        nodes = Nodes(args.statefulset, args.headless, args.namespace, args.port, token)
        done = run(args.phase, args, nodes, kube.node_ids(), set_node_id=kube.set_node_id, deadline=deadline)
    except (MembershipError, OSError) as error:
        print(f"membership {args.phase}: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"membership {args.phase}: {done.describe()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
