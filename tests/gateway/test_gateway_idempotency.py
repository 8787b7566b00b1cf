"""Idempotency-Key: a retried HTTP write with the same key takes effect once (IETF httpapi draft)."""

from __future__ import annotations

import asyncio

from gw_harness import TIMEOUT_S, Harness, harness

from dscore.protocols.raft import RaftConfig, RaftNode


async def test_append_retried_with_the_same_key_applies_once(h: Harness) -> None:
    headers = {"Idempotency-Key": '"a1b2c3"'}
    first = await h.http.post("/v1/kv/log/append", json={"value": "+1"}, headers=headers)
    assert first.status_code == 204 and "Idempotent-Replayed" not in first.headers
    again = await h.http.post("/v1/kv/log/append", json={"value": "+1"}, headers=headers)
    assert again.status_code == 204
    assert again.headers["Idempotent-Replayed"] == "true"
    # a bare token names the same key as the quoted sf-string
    bare = await h.http.post("/v1/kv/log/append", json={"value": "+1"}, headers={"Idempotency-Key": "a1b2c3"})
    assert bare.status_code == 204 and bare.headers["Idempotent-Replayed"] == "true"
    assert (await h.http.get("/v1/kv/log")).json()["value"] == "+1"
    # without a key, the same request is a new append
    assert (await h.http.post("/v1/kv/log/append", json={"value": "+1"})).status_code == 204
    assert (await h.http.get("/v1/kv/log")).json()["value"] == "+1+1"
    assert h.metric("dscore_gateway_idempotent_replays_total") == 2
    assert h.metric("dscore_gateway_idempotency_keys") == 1


async def test_replay_returns_the_first_answer_not_a_new_one(h: Harness) -> None:
    headers = {"Idempotency-Key": "cas-1"}
    body = {"expected": None, "value": "mine"}
    assert (await h.http.post("/v1/kv/lock/cas", json=body, headers=headers)).status_code == 204
    # run again, this cas would fail (the key now holds "mine"); the retry gets the first answer
    retry = await h.http.post("/v1/kv/lock/cas", json=body, headers=headers)
    assert retry.status_code == 204 and retry.headers["Idempotent-Replayed"] == "true"
    # a definite failure is replayed as well
    mismatch_headers = {"Idempotency-Key": "cas-2"}
    lost = await h.http.post(
        "/v1/kv/lock/cas", json={"expected": None, "value": "yours"}, headers=mismatch_headers
    )
    assert lost.status_code == 409 and lost.json()["current"] == "mine"
    await h.http.put("/v1/kv/lock", json={"value": "changed"})
    lost_again = await h.http.post(
        "/v1/kv/lock/cas", json={"expected": None, "value": "yours"}, headers=mismatch_headers
    )
    assert lost_again.status_code == 409 and lost_again.json() == lost.json()
    assert lost_again.headers["Idempotent-Replayed"] == "true"


async def test_key_reused_for_another_request_is_422(h: Harness) -> None:
    headers = {"Idempotency-Key": "k-1"}
    assert (await h.http.put("/v1/kv/a", json={"value": "1"}, headers=headers)).status_code == 204
    for method, url, body in (
        ("PUT", "/v1/kv/a", {"value": "2"}),  # another body
        ("PUT", "/v1/kv/b", {"value": "1"}),  # another key
        ("POST", "/v1/kv/a/append", {"value": "1"}),  # another operation
        ("DELETE", "/v1/kv/a", None),
    ):
        response = await h.http.request(method, url, json=body, headers=headers)
        assert response.status_code == 422, (method, url, response.text)
        assert response.json()["error"] == "idempotency_key_reused"
        assert "different request" in response.json()["message"]
    assert (await h.http.get("/v1/kv/a")).json()["value"] == "1"
    assert (await h.http.get("/v1/kv/b")).status_code == 404
    # the same JSON written differently is the same request
    same = await h.http.put(
        "/v1/kv/a", content=b'{ "value" : "1" }', headers={**headers, "Content-Type": "application/json"}
    )
    assert same.status_code == 204 and same.headers["Idempotent-Replayed"] == "true"


async def test_retry_while_the_first_is_running_is_409_and_a_refused_write_is_forgotten() -> None:
    async with harness(request_timeout_s=1.0) as h:
        assert (await h.http.put("/v1/kv/k", json={"value": "v"})).status_code == 204
        h.cluster.partition([[n] for n in h.cluster.node_ids])
        await h.cluster.wait_for(
            lambda: (
                not any((rt := h.cluster.runtime(n)) is not None and rt.is_leader for n in h.cluster.node_ids)
            ),
            TIMEOUT_S,
        )
        headers = {"Idempotency-Key": "slow-1"}
        first = asyncio.create_task(h.http.post("/v1/kv/k/append", json={"value": "+"}, headers=headers))
        while h.gateway.in_flight == 0:  # the first request is being served
            await asyncio.sleep(0)
        second = await h.http.post("/v1/kv/k/append", json={"value": "+"}, headers=headers)
        assert second.status_code == 409
        assert second.json()["error"] == "idempotency_key_in_use"
        assert "Retry-After" in second.headers
        # the first certainly did nothing (every node refused it): 503, and the key is not kept
        assert (await first).status_code == 503
        h.cluster.heal()
        await h.cluster.wait_for_leader(TIMEOUT_S)
        retry = await h.http.post("/v1/kv/k/append", json={"value": "+"}, headers=headers)
        assert retry.status_code == 204 and "Idempotent-Replayed" not in retry.headers
        assert (await h.http.get("/v1/kv/k")).json()["value"] == "v+"


async def test_retry_after_504_resumes_the_same_command_and_applies_it_once() -> None:
    """The hard case: the first copy of an append IS applied, but only after the gateway gave up (504).

    n3 is killed and n1 (the leader) cut off from n2: n1 appends the command to its log but cannot commit
    it, and the gateway answers 504. After the heal n1 is the only node that can win (its log is the
    longest), and its first commit in the new term commits the append: applied once. The retry with the
    same Idempotency-Key re-sends the same (client_id, seq), which the state machine answers with the
    first result instead of applying it again. Without the pinned session the append would run twice.
    """
    async with harness(raft=RaftConfig(election_timeout_ticks=50), request_timeout_s=1.5) as h:
        assert (await h.http.put("/v1/kv/k", json={"value": "v"})).status_code == 204
        leader = h.cluster.leader()
        assert leader is not None
        follower, dead = (n for n in h.cluster.node_ids if n != leader)
        h.cluster.kill(dead)
        h.cluster.partition([[leader], [follower]])
        runtime = h.cluster.runtime(leader)
        assert runtime is not None and isinstance(runtime.core, RaftNode)
        core = runtime.core
        headers = {"Idempotency-Key": "append-once"}
        first = asyncio.create_task(h.http.post("/v1/kv/k/append", json={"value": "+"}, headers=headers))
        await h.cluster.wait_for(lambda: core.last_index > core.commit_index, TIMEOUT_S)
        unknown = await first
        assert unknown.status_code == 504, unknown.text
        assert unknown.json()["error"] == "outcome_unknown"
        assert len(h.gateway.pool.pinned) == 1
        h.cluster.heal()
        await h.cluster.wait_for_leader(TIMEOUT_S)
        await h.cluster.wait_for(
            lambda: (rt := h.cluster.runtime(follower)) is not None and rt.state_machine.read("k") == "v+",
            TIMEOUT_S,
        )
        retry = await h.http.post("/v1/kv/k/append", json={"value": "+"}, headers=headers)
        assert retry.status_code == 204, retry.text
        assert (await h.http.get("/v1/kv/k")).json()["value"] == "v+"
        assert len(h.gateway.pool.pinned) == 0
        # settled: later retries replay the answer
        replay = await h.http.post("/v1/kv/k/append", json={"value": "+"}, headers=headers)
        assert replay.status_code == 204 and replay.headers["Idempotent-Replayed"] == "true"
        assert (await h.http.get("/v1/kv/k")).json()["value"] == "v+"


async def test_get_ignores_the_key(h: Harness) -> None:
    await h.http.put("/v1/kv/g", json={"value": "1"})
    headers = {"Idempotency-Key": "read-1"}
    assert (await h.http.get("/v1/kv/g", headers=headers)).json()["value"] == "1"
    await h.http.put("/v1/kv/g", json={"value": "2"})
    read = await h.http.get("/v1/kv/g", headers=headers)
    assert read.json()["value"] == "2" and "Idempotent-Replayed" not in read.headers
