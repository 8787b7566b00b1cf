"""`Gateway.start_write`: a plain write begun without a task (the HTTP fast path's), on an embedded Raft
cluster. An OK first attempt is answered from the endpoint's callback; anything else goes on through the
retries of `ClusterClient.write`; where it would have to wait it declines and does nothing."""

from __future__ import annotations

import asyncio

import pytest
from gw_harness import TIMEOUT_S, Harness, harness

from dscore.core.client_messages import Op, Outcome
from dscore.core.errors import LocalError
from dscore_gateway.cluster_client import Answer, WriteOp


class Done:
    """The `done` callback of one `start_write`: what it was called with, and how often."""

    def __init__(self) -> None:
        self.answers: list[Answer | None] = []
        self.event = asyncio.Event()

    def __call__(self, answer: Answer | None) -> None:
        self.answers.append(answer)
        self.event.set()

    async def answer(self) -> Answer | None:
        async with asyncio.timeout(TIMEOUT_S):
            await self.event.wait()
        await asyncio.sleep(0)  # a second call would come in the same turn
        assert len(self.answers) == 1, self.answers
        return self.answers[0]


async def registered(h: Harness) -> None:
    """One write through HTTP, so the pool holds a registered idle session."""
    assert (await h.http.put("/v1/kv/warm", json={"value": "up"})).status_code == 204
    assert h.gateway.pool.idle == 1 and h.gateway.pool.busy == 0


async def begun_without_a_leader(h: Harness) -> Done:
    """A write begun by `start_write` on a registered session, once every node is cut off from the rest."""
    await registered(h)
    h.cluster.partition([[n] for n in h.cluster.node_ids])
    await h.cluster.wait_for(
        lambda: (
            not any((rt := h.cluster.runtime(n)) is not None and rt.is_leader for n in h.cluster.node_ids)
        ),
        TIMEOUT_S,
    )
    done = Done()
    assert h.gateway.start_write(WriteOp(Op.PUT, "k", "v"), done) is True
    return done


async def test_an_ok_first_attempt_is_answered_from_the_endpoint_without_a_task() -> None:
    async with harness() as h:
        await registered(h)
        session = h.gateway.pool._idle[0]
        seq = session.seq
        oks = h.metric("dscore_gateway_node_attempts_total", outcome="ok")
        done = Done()
        tasks = len(asyncio.all_tasks())
        assert h.gateway.start_write(WriteOp(Op.PUT, "k", "v"), done) is True
        assert h.gateway.pool.busy == 1
        assert len(asyncio.all_tasks()) == tasks  # no task per write
        answer = await done.answer()
        assert answer == Answer(Outcome.OK, None, None, h.cluster.leader(), 1)
        assert not h.gateway._writes
        # the session is back, its seq moved on; the write took effect
        assert h.gateway.pool.busy == 0 and h.gateway.pool.idle == 1 and session.seq == seq + 1
        assert h.metric("dscore_gateway_node_attempts_total", outcome="ok") == oks + 1
        assert (await h.http.get("/v1/kv/k")).json()["value"] == "v"


async def test_a_refused_first_attempt_goes_on_to_the_leader_in_a_task() -> None:
    async with harness() as h:
        await registered(h)
        leader = h.cluster.leader()
        follower = next(n for n in h.cluster.node_ids if n != leader)
        h.gateway.client.tracker.leader = follower  # stale knowledge: the first attempt is refused
        refused = h.metric("dscore_gateway_node_attempts_total", node=follower, outcome="not_leader")
        done = Done()
        assert h.gateway.start_write(WriteOp(Op.APPEND, "k", "+"), done) is True
        answer = await done.answer()
        assert answer is not None and answer.outcome is Outcome.OK
        assert answer.node == leader and answer.attempts == 2
        assert (
            h.metric("dscore_gateway_node_attempts_total", node=follower, outcome="not_leader") == refused + 1
        )
        assert h.gateway.client.tracker.leader == leader
        assert h.gateway.pool.busy == 0 and h.gateway.pool.idle == 1
        assert (await h.http.get("/v1/kv/k")).json()["value"] == "+"  # applied once


async def test_a_write_without_a_leader_ends_as_the_task_path_ends_it() -> None:
    async with harness(request_timeout_s=0.3, attempt_timeout_s=0.1, silence_s=0) as h:
        done = await begun_without_a_leader(h)
        answer = await done.answer()
        # refused by every node, or silent past the deadline: never OK, never lost track of
        assert answer is not None and answer.outcome in {Outcome.NOT_LEADER, Outcome.UNKNOWN}
        assert answer.attempts >= 2
        assert h.gateway.pool.busy == 0 and not h.gateway._writes


async def test_it_declines_where_it_would_wait_and_takes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness() as h:
        done = Done()
        # no registered session yet: the task path registers one
        assert h.gateway.start_write(WriteOp(Op.PUT, "k", "v"), done) is False
        assert h.gateway.pool.busy == 0 and h.gateway.pool.idle == 0
        await registered(h)
        taken = await h.gateway.pool.acquire(1.0)
        # the only session is busy: the task path waits for it
        assert h.gateway.start_write(WriteOp(Op.PUT, "k", "v"), done) is False
        h.gateway.pool.release(taken)

        def no_node() -> str:
            raise LocalError("the gateway knows no node to talk to")

        with monkeypatch.context() as patch:
            patch.setattr(h.gateway.client.tracker, "target", no_node)
            # nothing sent: the session goes back unchanged, the task path answers the error
            assert h.gateway.start_write(WriteOp(Op.PUT, "k", "v"), done) is False
            assert h.gateway.pool.busy == 0 and h.gateway.pool.idle == 1
        h.gateway.client.byzantine = True  # PBFT: answers need a quorum of replicas
        assert h.gateway.start_write(WriteOp(Op.PUT, "k", "v"), done) is False
        assert h.gateway.pool.busy == 0 and done.answers == []


async def test_stop_answers_a_write_still_going_on() -> None:
    async with harness(request_timeout_s=30.0, attempt_timeout_s=0.05, silence_s=0) as h:
        done = await begun_without_a_leader(h)
        await h.cluster.wait_for(lambda: bool(h.gateway._writes), TIMEOUT_S)  # retrying in its task
        await h.gateway.stop()
        assert await done.answer() is None  # the HTTP side answers 500
        assert h.gateway.pool.busy == 0 and not h.gateway._writes
