"""The local-process backend against real child processes and pid files, and the leader found over real
HTTP (`/debug/state` as the node service serves it)."""

from __future__ import annotations

import random

import httpx
import pytest
from chaos_helpers import MARKER, Children, JsonServer, node_state, running, stopped, wait_state

from dscore_chaos.backends.base import InjectionError
from dscore_chaos.backends.processes import ProcessBackend, process_state, read_dev_env
from dscore_chaos.model import FaultRequest, FaultSpec, parse_request
from dscore_chaos.settings import ProcessOptions
from dscore_chaos.targets import AnnotationLeaderFinder, HttpLeaderFinder, Member, TargetError, choose


def backend(children: Children, **options: object) -> ProcessBackend:
    return ProcessBackend(
        ProcessOptions(enabled=True, run_dir=children.run_dir, cmdline_marker=MARKER, **options),  # type: ignore[arg-type]
        rng=random.Random(0),
        finder=HttpLeaderFinder(timeout_s=2.0),
    )


def spec(kind: str, target: str, **params: object) -> FaultSpec:
    return parse_request(
        FaultRequest.model_validate({"kind": kind, "target": target, "params": params}), max_duration_s=60
    )


async def test_members_come_from_pid_files_and_make_ups_dev_env(children: Children) -> None:
    children.start("node-n1")
    children.start("node-n2")
    children.start("redis-n1")  # not a node: not a default target
    (children.run_dir / "dev.env").write_text(
        "DSCORE_KAFKA_BOOTSTRAP=127.0.0.1:23092\n"
        "DSCORE_NODE_URL_N1=http://127.0.0.1:23181\n"
        "DSCORE_NODE_URL_N2=http://127.0.0.1:23182\n"
    )
    members = backend(children).members()
    assert [(m.name, m.node_id, m.base_url) for m in members] == [
        ("node-n1", "n1", "http://127.0.0.1:23181"),
        ("node-n2", "n2", "http://127.0.0.1:23182"),
    ]
    named = backend(children, names=("redis-n1",), node_urls={"redis-n1": "http://x:1"}).members()
    assert [(m.name, m.node_id, m.base_url) for m in named] == [("redis-n1", None, "http://x:1")]
    assert read_dev_env(children.run_dir / "missing.env") == {}


async def test_kill_and_pause_real_processes(children: Children) -> None:
    victim = children.start("node-n1")
    paused = children.start("node-n2")
    processes = backend(children)
    hit = await processes.inject(spec("process_kill", "node-n1"), "f-1", 0)
    assert hit.end is None and hit.target == "node-n1"
    assert victim.wait(timeout=10) == -9
    hit = await processes.inject(spec("process_pause", "node-n2", duration_s=5), "f-2", 0)
    wait_state(paused.pid, stopped, "stopped")
    assert hit.end is not None
    assert (await hit.end()).startswith("SIGCONT")
    wait_state(paused.pid, running, "running")
    # the process is gone by the time the pause ends: nothing is signalled
    hit = await processes.inject(spec("process_pause", "node-n2", duration_s=5), "f-2", 1)
    paused.kill()
    paused.wait(timeout=10)
    assert hit.end is not None
    assert "is gone" in await hit.end()


async def test_what_is_not_ours_is_never_signalled(children: Children) -> None:
    foreign = children.start("node-n1", marker="not-ours")
    processes = backend(children)
    with pytest.raises(InjectionError, match="not a process with"):
        processes.process("node-n1")
    assert process_state(foreign.pid) is not None and foreign.poll() is None
    (children.run_dir / "node-n2.pid").write_text("1")
    with pytest.raises(InjectionError, match="holds no pid"):
        processes.process("node-n2")
    dead = children.start("node-n3")
    dead.kill()
    dead.wait(timeout=10)
    with pytest.raises(InjectionError, match="is not running"):
        processes.process("node-n3")
    with pytest.raises(InjectionError, match="no pid file"):
        processes.process("node-n4")


async def test_the_leader_is_the_node_that_says_so_in_the_highest_term(children: Children) -> None:
    for name in ("node-n1", "node-n2", "node-n3"):
        children.start(name)
    # n1 still believes it leads (cut off, term 3); n2 leads in term 4; n3 follows; n4 does not answer
    servers = {name: JsonServer() for name in ("node-n1", "node-n2", "node-n3")}
    try:
        servers["node-n1"].routes["/debug/state"] = (200, node_state("n1", "leader", 3))
        servers["node-n2"].routes["/debug/state"] = (200, node_state("n2", "leader", 4))
        servers["node-n3"].routes["/debug/state"] = (200, node_state("n3", "follower", 4))
        urls = {name: server.url for name, server in servers.items()}
        urls["node-n4"] = "http://127.0.0.1:9"
        processes = backend(children, node_urls=urls)
        assert await processes.leader_node_id() == "n2"
        await processes.inject(spec("process_kill", "leader"), "f-1", 0)
        assert children.procs["node-n2"].wait(timeout=10) == -9
        assert children.procs["node-n1"].poll() is None and children.procs["node-n3"].poll() is None
        servers["node-n2"].routes["/debug/state"] = (503, {})
        servers["node-n1"].routes["/debug/state"] = (200, node_state("n1", "follower", 5))
        with pytest.raises(TargetError, match="no leader found"):
            await processes.leader_node_id()
    finally:
        for server in servers.values():
            server.close()


async def test_leader_finders_and_choices() -> None:
    members = [
        Member("pod-b", annotations={"dscore.io/leader": "true"}),
        Member("pod-a", annotations={"dscore.io/leader": "false"}),
        Member("pod-c"),
    ]
    finder = AnnotationLeaderFinder("dscore.io/leader")
    leader = await finder.find(members)
    assert leader is not None and leader.member.name == "pod-b"
    assert await finder.find(members[1:]) is None
    rng = random.Random(5)
    picks = [(await choose(members, "random", finder=finder, rng=rng))[0].name for _ in range(8)]
    expected = random.Random(5)
    assert picks == [expected.choice(["pod-a", "pod-b", "pod-c"]) for _ in range(8)]
    assert (await choose(members, "pod-c", finder=finder, rng=rng))[0].name == "pod-c"
    with pytest.raises(TargetError, match="not one of"):
        await choose(members, "pod-z", finder=finder, rng=rng)
    with pytest.raises(TargetError, match="no members"):
        await choose([], "random", finder=finder, rng=rng)
    # a member without an address is not asked; garbage answers are skipped
    assert await HttpLeaderFinder(timeout_s=1).find([Member("x")]) is None


async def test_http_finder_skips_garbage(http_server: JsonServer) -> None:
    http_server.routes["/debug/state"] = (200, ["not", "a", "state"])
    assert await HttpLeaderFinder(timeout_s=1).find([Member("x", base_url=http_server.url)]) is None
    http_server.routes["/debug/state"] = (200, {"role": "leader", "term": "four", "node_id": 7})
    found = await HttpLeaderFinder(timeout_s=1).find([Member("x", base_url=http_server.url, node_id="nx")])
    assert found is not None and found.node_id == "nx" and found.term is None
    async with httpx.AsyncClient() as client:
        shared = HttpLeaderFinder(timeout_s=1, client=client)
        assert (await shared.find([Member("x", base_url=http_server.url)])) is not None
