"""The node's HTTP endpoints (aiohttp, on the node's own event loop).

- `GET /metrics`: Prometheus text format (`dscore.metrics`, registered by `dscore_node.metrics`);
- `GET /healthz`: 200 while the process serves and its runtime is starting or running; 503 once it
  failed or stopped (a liveness probe: restart me);
- `GET /readyz`: 200 when the runtime runs, knows a leader and has applied everything it knows is
  committed; 503 with the reason otherwise (a readiness probe);
- `GET /debug/state`: the node's status as JSON, with a SHA-256 of its state machine's snapshot
  (replicas that converged have equal digests) and the ids of the transport faults in force;
- `/admin/*`, only with `DSCORE_HTTP__ADMIN=true`, and only with `Authorization: Bearer <token>`
  (`DSCORE_HTTP__ADMIN_TOKEN`; compared in constant time; 401 otherwise, counted in
  `dscore_admin_requests_rejected_total`):
- `POST /admin/consume/stop`, `POST /admin/consume/start`: stop / resume reading the inbox (cuts the
  node off from its peers);
- membership, after etcd's `member add`: `POST /admin/introduce/{id}` on every running member (accept
  messages from a node about to be added), then on the leader `POST /admin/members/{id}?learner=true`
  (add; a learner first, so an empty voter does not count for the quorum before it caught up),
  `POST /admin/members/{id}/promote` and `DELETE /admin/members/{id}`. Answers (the chart's membership
  Job, charts/dscore/files/membership.py, and `dscore.stack.ProcessCluster` rely on them):
  - 200 `{"index", "voters", "learners", "removed", "unchanged": false}` once the change is committed;
  - 200 with `"unchanged": true` when there was nothing to do (idempotent, so a retried request or a
    re-run Job succeeds): adding a member (voter or learner), removing a non-member, promoting a voter;
  - 421 `{"error": "not_leader", "leader_id"}` on a follower (ask the leader; `leader_id` may be null);
  - 409 `{"error": "change_in_progress"}`: another change is not committed yet (or the new leader has
    not committed an entry of its term): retry shortly;
  - 409 `{"error": "id_removed"}`: the id was removed before, ids are never reused (use a new one);
    409 `{"error": "not_learner"}` / `"last_voter"` / `"unsupported"` for the other refusals;
  - 504 when its outcome is not known in time (check the configuration in `/debug/state`).

"Caught up" is as far as a node can tell by itself: a follower's commit index is what its leader told it,
so a follower whose applied index equals its commit index has applied everything its leader confirmed to
it. (A follower far behind learns a higher commit index only as its log catches up; the leader's own
commit index in its heartbeats would make this exact, see the README.)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr

from dscore.core.errors import ChangeRefusal, NotLeaderError
from dscore.metrics import AdminMetrics
from dscore.runtime.errors import MembershipChangeRejectedError, OutcomeUnknownError
from dscore.runtime.node import NodeRuntime
from dscore.transport.faults import FaultyTransport
from dscore_node.instruments import ConsumeGate

_RUNTIME = web.AppKey("runtime", NodeRuntime)
_TRANSPORT = web.AppKey("transport", ConsumeGate)
_FAULTS = web.AppKey("faults", FaultyTransport)
_REGISTRY = web.AppKey("registry", CollectorRegistry)
_ADMIN_TOKEN = web.AppKey("admin_token", bytes)
_ADMIN_METRICS = web.AppKey("admin_metrics", AdminMetrics)


def readiness(runtime: NodeRuntime) -> tuple[bool, str]:
    """(ready, why not) for `/readyz`."""
    status = runtime.status()
    if not status.running:
        return False, f"runtime is {runtime.state}"
    if status.leader_id is None:
        return False, "no leader known"
    if status.commit_index is not None and status.applied_index < status.commit_index:
        return False, f"applied {status.applied_index} of {status.commit_index} committed"
    return True, "ready"


def state_of(
    runtime: NodeRuntime, transport: ConsumeGate, faults: FaultyTransport | None = None
) -> dict[str, Any]:
    status = runtime.status()
    state: dict[str, Any] = {
        "node_id": status.node_id,
        "state": runtime.state,
        "role": status.role,
        "leader_id": status.leader_id,
        "term": status.term,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "incarnation": status.incarnation,
        "voters": list(status.voters),
        "learners": list(status.learners),
        # ids removed from the configuration: never reusable (the chart's Job names a new one)
        "removed": list(status.removed),
        "consuming": transport.consuming,
        # the transport faults in force here (None: this node does not obey the control topic)
        "transport_faults": None if faults is None else sorted(r.fault_id for r in faults.rules.active),
    }
    if runtime.state != "new":
        state["state_machine_sha256"] = hashlib.sha256(runtime.state_machine.snapshot()).hexdigest()
    return state


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    runtime = request.app[_RUNTIME]
    alive = runtime.state in ("new", "running")
    return web.json_response({"status": "ok" if alive else runtime.state}, status=200 if alive else 503)


async def _readyz(request: web.Request) -> web.Response:
    runtime = request.app[_RUNTIME]
    ready, why = readiness(runtime)
    status = runtime.status()
    body = {
        "ready": ready,
        "reason": why,
        "leader_id": status.leader_id,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
    }
    return web.json_response(body, status=200 if ready else 503)


async def _state(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response(state_of(app[_RUNTIME], app[_TRANSPORT], app.get(_FAULTS)))


async def _stop_consuming(request: web.Request) -> web.Response:
    transport = request.app[_TRANSPORT]
    transport.stop_consuming()
    return web.json_response({"consuming": transport.consuming})


async def _resume_consuming(request: web.Request) -> web.Response:
    transport = request.app[_TRANSPORT]
    transport.resume_consuming()
    return web.json_response({"consuming": transport.consuming})


#: a membership change not committed within this is answered 504 (it may still take effect)
MEMBERSHIP_TIMEOUT_S = 10.0


#: what a refusal means for the caller of each change: None = answer 200 "unchanged" (nothing to do)
_UNCHANGED: dict[str, frozenset[ChangeRefusal]] = {
    "add": frozenset({ChangeRefusal.ALREADY_MEMBER}),
    "remove": frozenset({ChangeRefusal.NOT_MEMBER}),
    "promote": frozenset(),  # NOT_LEARNER is "unchanged" only if it is a voter: checked below
}


def _membership(runtime: NodeRuntime) -> dict[str, Any]:
    return {
        "voters": list(runtime.voters),
        "learners": list(runtime.learners),
        "removed": list(runtime.removed),
    }


async def _change(request: web.Request, what: str) -> web.Response:
    runtime = request.app[_RUNTIME]
    node_id = request.match_info["node_id"]
    if runtime.state != "running":
        # certainly nothing proposed: 503, not the 504 of a change the node stopped under
        return web.json_response(
            {"error": "not_running", "detail": f"node {runtime.node_id} is {runtime.state}"},
            status=503,
            headers={"Retry-After": "1"},
        )
    try:
        if what == "add":
            learner = request.query.get("learner", "false").lower() in ("1", "true", "yes")
            index = await runtime.add_member(node_id, as_learner=learner, timeout_s=MEMBERSHIP_TIMEOUT_S)
        elif what == "promote":
            index = await runtime.promote(node_id, timeout_s=MEMBERSHIP_TIMEOUT_S)
        else:
            index = await runtime.remove_member(node_id, timeout_s=MEMBERSHIP_TIMEOUT_S)
    except NotLeaderError as error:
        # 421 Misdirected Request: this node cannot make the change, the leader can
        return web.json_response({"error": "not_leader", "leader_id": error.leader_hint}, status=421)
    except MembershipChangeRejectedError as error:
        refusal = error.refusal
        # A refusal other than "in progress" is decided on a committed configuration (the core checks
        # for an uncommitted change first), so "already a member" means the add is done, not pending.
        unchanged = refusal in _UNCHANGED[what] or (
            what == "promote" and refusal is ChangeRefusal.NOT_LEARNER and node_id in runtime.voters
        )
        if unchanged:
            return web.json_response({"index": None, "unchanged": True, **_membership(runtime)})
        code = refusal.value if refusal is not None else "rejected"
        return web.json_response(
            {"error": code, "detail": str(error), "leader_id": runtime.leader_id}, status=409
        )
    except (OutcomeUnknownError, TimeoutError) as error:
        return web.json_response({"error": f"outcome unknown: {error!r}"}, status=504)
    except ValueError as error:  # a malformed node id
        return web.json_response({"error": str(error)}, status=400)
    return web.json_response({"index": index, "unchanged": False, **_membership(runtime)})


async def _add_member(request: web.Request) -> web.Response:
    return await _change(request, "add")


async def _promote_member(request: web.Request) -> web.Response:
    return await _change(request, "promote")


async def _remove_member(request: web.Request) -> web.Response:
    return await _change(request, "remove")


async def _introduce(request: web.Request) -> web.Response:
    runtime = request.app[_RUNTIME]
    runtime.introduce(request.match_info["node_id"])
    return web.json_response({"introduced": request.match_info["node_id"]})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/admin/*` only with the bearer token; everything else is open (probes, Prometheus, /debug)."""
    if not request.path.startswith("/admin/"):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        request.app[_ADMIN_METRICS].rejected("missing_token")
        return _unauthorized("missing bearer token")
    if not hmac.compare_digest(presented.strip().encode(), request.app[_ADMIN_TOKEN]):
        request.app[_ADMIN_METRICS].rejected("bad_token")
        return _unauthorized("bad token")
    return await handler(request)


def _unauthorized(why: str) -> web.Response:
    return web.json_response(
        {"error": "unauthorized", "detail": why},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="dscore-admin"'},
    )


def build_app(
    runtime: NodeRuntime,
    transport: ConsumeGate,
    registry: CollectorRegistry,
    *,
    admin: bool,
    admin_token: SecretStr | None = None,
    faults: FaultyTransport | None = None,
) -> web.Application:
    """The node's HTTP app; with `admin`, `/admin/*` too, behind `admin_token` (required then)."""
    if admin and (admin_token is None or not admin_token.get_secret_value()):
        raise ValueError("the admin endpoints need an admin token")
    # no endpoint takes a body
    app = web.Application(client_max_size=1024, middlewares=[_admin_auth] if admin else [])
    app[_RUNTIME] = runtime
    app[_TRANSPORT] = transport
    if faults is not None:
        app[_FAULTS] = faults
    app[_REGISTRY] = registry
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/debug/state", _state)
    if admin:
        assert admin_token is not None
        app[_ADMIN_TOKEN] = admin_token.get_secret_value().encode()
        app[_ADMIN_METRICS] = AdminMetrics(registry, runtime.node_id)
        app.router.add_post("/admin/consume/stop", _stop_consuming)
        app.router.add_post("/admin/consume/start", _resume_consuming)
        member = "/admin/members/{node_id:[A-Za-z0-9][A-Za-z0-9_.-]{0,62}}"
        app.router.add_post(member, _add_member)
        app.router.add_post(member + "/promote", _promote_member)
        app.router.add_delete(member, _remove_member)
        app.router.add_post("/admin/introduce/{node_id:[A-Za-z0-9][A-Za-z0-9_.-]{0,62}}", _introduce)
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen; returns the runner (`await runner.cleanup()` stops it) and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    addresses = runner.addresses
    bound = int(addresses[0][1]) if addresses else port
    return runner, bound
