"""A node as a process: a failure exits non-zero with the error logged (so an orchestrator restarts it),
SIGTERM stops it cleanly with exit status 0, and a leader hands leadership over before it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from dscore.runtime.cluster import EmbeddedCluster, raft_factory

HERE = Path(__file__).parent
TIMEOUT_S = 30.0

# A node process: one NodeRuntime on a memory network, run by `serve`. With "explode", its core raises on
# the first message it steps (a bug), and a forged-but-valid peer message is injected to trigger it.
NODE_MAIN = textwrap.dedent(
    """
    import asyncio, logging, sys
    sys.path.insert(0, {here!r})
    from rt_doubles import MiniLogCore, MiniNote
    from dscore.core.codec import encode_envelope
    from dscore.core.envelope import EnvelopeFactory
    from dscore.runtime.node import NodeRuntime
    from dscore.runtime.process import serve
    from dscore.storage.memory import MemoryStorage
    from dscore.transport.memory import MemoryNetwork

    class Explodes(MiniLogCore):
        def step(self, envelope):
            raise RuntimeError("boom in step")

    async def main() -> int:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        explode = sys.argv[1] == "explode"
        network = MemoryNetwork(("n1", "n2"))
        core = Explodes if explode else MiniLogCore
        runtime = NodeRuntime(
            "n1", ("n1", "n2"), lambda *a: core(*a), network.endpoint("n1"), MemoryStorage()
        )
        if explode:
            note = EnvelopeFactory("n2", 1).wrap("n1", MiniNote(1))
            network.inject("n1", encode_envelope(note))
        else:
            asyncio.get_running_loop().call_soon(lambda: print("serving", flush=True))
        return await serve(runtime)

    sys.exit(asyncio.run(main()))
    """
).format(here=str(HERE))


def start_node(mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", NODE_MAIN, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_a_failing_node_exits_non_zero_with_the_error_logged() -> None:
    node = start_node("explode")
    _, stderr = node.communicate(timeout=TIMEOUT_S)
    assert node.returncode == 1, stderr
    assert "node n1 failed; exiting with status 1" in stderr
    assert "RuntimeError: boom in step" in stderr  # with its traceback


def test_sigterm_stops_a_node_cleanly_with_status_zero() -> None:
    node = start_node("serve")
    assert node.stdout is not None
    assert node.stdout.readline().strip() == "serving"  # waits for the node to be up, not for time
    node.send_signal(signal.SIGTERM)
    _, stderr = node.communicate(timeout=TIMEOUT_S)
    assert node.returncode == 0, stderr
    assert "node n1 stopping" in stderr and "node n1 stopped" in stderr


async def test_a_stopping_leader_hands_leadership_to_a_caught_up_voter() -> None:
    async with EmbeddedCluster(raft_factory(), 3, seed=21) as cluster:
        leader = await cluster.wait_for_leader(10.0)
        runtime = cluster.runtime(leader)
        assert runtime is not None
        target = await runtime.hand_over(5.0)
        assert target is not None and target != leader
        assert await cluster.wait_for_leader(5.0, exclude=(leader,)) == target
        # A follower has nothing to hand over.
        other = cluster.runtime(next(n for n in cluster.node_ids if n not in (leader, target)))
        assert other is not None and await other.hand_over(1.0) is None
