"""What only the Redis storage has: a server that can be killed, records that can rot, other writers,
persistence settings, round trips and a key layout. (The shared contract is test_storage_contract.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from dscore.protocols.contract import DurableState, EntryKind, LogEntry, Snapshot
from dscore.protocols.raft import HardState, Membership
from dscore.storage.base import StoredState, WriteBatch
from dscore.storage.redis import (
    CorruptStorageError,
    FencedError,
    RedisStorage,
    StorageUnavailableError,
    StorageWipedError,
    UnsafeDurabilityError,
    read_durability,
    require_durable,
)


def entries(first: int, count: int, term: int) -> tuple[LogEntry, ...]:
    return tuple(LogEntry(i, term, EntryKind.NORMAL, b"cmd%d" % i) for i in range(first, first + count))


FULL_BATCH = WriteBatch(
    hard_state=HardState(2, "n1", 3),
    snapshot=Snapshot(2, 1, b"image", Membership(("n1", "n2", "n3"))),
    entries=entries(3, 3, 2),
    dedup_marks={"n2": (1, 7)},
    input_positions={"in/0": 12},
)


@pytest.fixture
async def opened() -> AsyncIterator[Callable[[str, str], RedisStorage]]:
    storages: list[RedisStorage] = []

    def open_storage(url: str, prefix: str) -> RedisStorage:
        storage = RedisStorage.from_url(url, prefix)
        storages.append(storage)
        return storage

    yield open_storage
    for storage in storages:
        await storage.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


# -- kill -9 of Redis -----------------------------------------------------------------------------------


async def saved_then_killed(
    server: Any, opened: Callable[[str, str], RedisStorage], namespace: str
) -> tuple[StoredState, StoredState]:
    """Save, kill -9 Redis right after the acknowledgement, restart it: (what was saved, what loads)."""
    storage = opened(server.url, f"{namespace}:n1")
    incarnation = await storage.bump_incarnation()
    await storage.save(WriteBatch(entries=entries(1, 2, 1)))
    await storage.save(FULL_BATCH)
    saved = await storage.load()
    assert saved.incarnation == incarnation and saved.durable.hard_state == FULL_BATCH.hard_state
    server.kill()
    with pytest.raises(StorageUnavailableError):
        await storage.save(WriteBatch(hard_state=HardState(9, None, 0)))
    server.restart()
    return saved, await opened(server.url, f"{namespace}:n1").load()


async def test_an_acknowledged_save_survives_kill_9_of_redis(
    redis_server_factory: Callable[..., Any], opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    server = redis_server_factory()  # appendonly yes, appendfsync always
    saved, loaded = await saved_then_killed(server, opened, namespace)
    assert loaded == saved


async def test_without_an_append_only_file_the_same_kill_loses_the_save(
    redis_server_factory: Callable[..., Any], opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    # The control: the kill and restart above really go through the disk.
    server = redis_server_factory("--appendonly", "no")
    _, loaded = await saved_then_killed(server, opened, namespace)
    assert loaded == StoredState()


# -- persistence settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fsyncs"),
    [
        ((), True),
        (("--appendfsync", "everysec"), False),
        (("--appendfsync", "no"), False),
        (("--appendonly", "no"), False),
        (("--rename-command", "CONFIG", ""), False),  # settings unreadable: unknown is unsafe
    ],
)
async def test_a_node_can_refuse_a_server_that_does_not_fsync_every_write(
    redis_server_factory: Callable[..., Any], args: tuple[str, ...], fsyncs: bool
) -> None:
    server = redis_server_factory(*args)
    async with aioredis.Redis.from_url(server.url) as client:
        durability = await read_durability(client)
        assert durability.fsyncs_every_write is fsyncs
        if fsyncs:
            assert await require_durable(client) == durability
        else:
            with pytest.raises(UnsafeDurabilityError, match="appendfsync always"):
                await require_durable(client)
            assert await require_durable(client, allow_unsafe=True) == durability
    storage = RedisStorage.from_url(server.url, "x")
    try:
        assert (await storage.durability(allow_unsafe=True)).fsyncs_every_write is fsyncs
    finally:
        await storage.close()


# -- corrupt records --------------------------------------------------------------------------------------


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]


async def _rewrite_field(r: aioredis.Redis, key: str, field: bytes, change: Callable[[bytes], bytes]) -> None:
    await r.hset(key, field, change(await r.hget(key, field)))


async def _rewrite_entry(r: aioredis.Redis, s: RedisStorage) -> None:
    [(member, score)] = await r.zrange(s.log_key, 0, 0, withscores=True)
    await r.zrem(s.log_key, member)
    await r.zadd(s.log_key, {flip(member, len(member) - 2): score})


async def _move_entry(r: aioredis.Redis, s: RedisStorage) -> None:
    [(member, _)] = await r.zrange(s.log_key, 0, 0, withscores=True)
    await r.zadd(s.log_key, {member: 100})


async def _copy_entry_into_snapshot(r: aioredis.Redis, s: RedisStorage) -> None:
    [member] = await r.zrange(s.log_key, 0, 0)
    await r.hset(s.state_key, "snapshot", member)


CORRUPTIONS: dict[str, Callable[[aioredis.Redis, RedisStorage], Awaitable[Any]]] = {
    # a bit flipped in a record: the CRC catches what msgpack might read as another value
    "hard bit flip": lambda r, s: _rewrite_field(r, s.state_key, b"hard", lambda v: flip(v, len(v) - 1)),
    "snapshot bit flip": lambda r, s: _rewrite_field(r, s.state_key, b"snapshot", lambda v: flip(v, 8)),
    "hard not a record": lambda r, s: r.hset(s.state_key, "hard", b"\x01garbage"),
    "snapshot index disagrees": lambda r, s: r.hset(s.state_key, "snapshot_index", 1),
    "snapshot index not a number": lambda r, s: r.hset(s.state_key, "snapshot_index", "two"),
    "incarnation not a number": lambda r, s: r.hset(s.state_key, "incarnation", "-1"),
    "future layout": lambda r, s: r.hset(s.state_key, "layout", 2),
    "entry garbage": lambda r, s: r.zadd(s.log_key, {b"\x00\x00": 9}),
    "entry under the wrong index": _move_entry,
    "entry bit flip": _rewrite_entry,
    "mark not inc:seq": lambda r, s: r.hset(s.marks_key, "n2", "7"),
    "position not a number": lambda r, s: r.hset(s.positions_key, "in/0", "12.5"),
    "snapshot record is an entry": _copy_entry_into_snapshot,
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
async def test_a_corrupt_record_is_an_error_naming_its_key_never_a_wrong_state(
    corruption: str,
    redis_url: str,
    raw: aioredis.Redis,
    opened: Callable[[str, str], RedisStorage],
    namespace: str,
) -> None:
    storage = opened(redis_url, namespace)
    await storage.bump_incarnation()
    await storage.save(FULL_BATCH)
    await CORRUPTIONS[corruption](raw, storage)
    with pytest.raises(CorruptStorageError) as error:
        await opened(redis_url, namespace).load()
    assert error.value.key in storage.keys and error.value.key in str(error.value)


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [("marks", "n2", "garbage"), ("positions", "in/0", "x"), ("state", "snapshot_index", "-3")],
)
async def test_a_save_over_a_corrupt_record_writes_nothing(
    key: str,
    field: str,
    value: str,
    redis_url: str,
    raw: aioredis.Redis,
    opened: Callable[[str, str], RedisStorage],
    namespace: str,
) -> None:
    storage = opened(redis_url, namespace)
    await storage.save(FULL_BATCH)
    await raw.hset(f"{{{namespace}}}:{key}", field, value)
    with pytest.raises(CorruptStorageError, match=field):
        await storage.save(
            WriteBatch(
                hard_state=HardState(5, None, 0),
                snapshot=Snapshot(4, 2, b"newer"),
                dedup_marks={"n2": (2, 0)},
                input_positions={"in/0": 13},
            )
        )
    assert await raw.hget(storage.state_key, "hard") == await _record_of(FULL_BATCH.hard_state)


async def _record_of(value: object) -> bytes:
    from dscore.core.codec import encode_value, frame

    return frame(encode_value(value))


async def test_a_corrupt_incarnation_stops_the_bump(
    redis_url: str, raw: aioredis.Redis, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    storage = opened(redis_url, namespace)
    await raw.hset(storage.state_key, "incarnation", "many")
    with pytest.raises(CorruptStorageError, match="incarnation"):
        await storage.bump_incarnation()


# -- other writers: fencing -------------------------------------------------------------------------------


async def test_a_restarted_node_fences_off_its_previous_process(
    redis_url: str, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    zombie = opened(redis_url, namespace)
    await zombie.bump_incarnation()
    await zombie.save(WriteBatch(hard_state=HardState(1, "n1", 0), entries=entries(1, 3, 1)))
    restarted = opened(redis_url, namespace)
    await restarted.load()
    await restarted.bump_incarnation()
    await restarted.save(WriteBatch(hard_state=HardState(2, "n2", 0), entries=entries(2, 1, 2)))
    expected = await restarted.load()
    with pytest.raises(FencedError, match="behind"):
        await zombie.save(WriteBatch(hard_state=HardState(1, "n3", 0), entries=entries(2, 5, 1)))
    assert await opened(redis_url, namespace).load() == expected


async def test_a_save_of_the_previous_process_between_bump_and_load_is_refused_not_missed(
    redis_url: str, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    # A node starts as NodeRuntime.start does: bump, then load. Its previous process, still running,
    # tries to save a vote in between: refused, so it never sends it, and the state loaded is the truth.
    zombie = opened(redis_url, namespace)
    await zombie.bump_incarnation()
    await zombie.save(WriteBatch(hard_state=HardState(6, "n1", 0), entries=entries(6, 1, 1)))
    restarted = opened(redis_url, namespace)
    await restarted.bump_incarnation()
    with pytest.raises(FencedError, match="behind"):
        await zombie.save(WriteBatch(hard_state=HardState(7, "n2", 0)))
    loaded = await restarted.load()
    assert loaded == await opened(redis_url, namespace).load()
    assert loaded.durable.hard_state == HardState(6, "n1", 0)


async def test_a_state_wiped_while_the_node_runs_is_refused_not_rebuilt(
    redis_url: str, opened: Callable[[str, str], RedisStorage], raw: aioredis.Redis, namespace: str
) -> None:
    # Redis restarted without its data, or the keys were deleted, while the node ran: its next save must
    # not quietly write a partial state that no longer fences anything.
    storage = opened(redis_url, namespace)
    await storage.bump_incarnation()
    await storage.save(WriteBatch(hard_state=HardState(3, "n1", 0), entries=entries(3, 1, 2)))
    await raw.delete(*storage.keys)
    with pytest.raises(StorageWipedError, match="no stored incarnation"):
        await storage.save(WriteBatch(hard_state=HardState(3, "n1", 2)))
    assert not await raw.exists(*storage.keys)  # nothing written
    # a writer that never bumped saves unfenced, as before (tools, tests)
    unfenced = opened(redis_url, namespace + ":unfenced")
    await unfenced.save(WriteBatch(hard_state=HardState(1, None, 0)))


async def test_a_late_copy_of_a_save_changes_nothing(
    redis_url: str, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    # A save retried after a timeout can reach Redis twice, and the first attempt late, after newer saves.
    storage = opened(redis_url, namespace)
    incarnation = await storage.bump_incarnation()
    first = WriteBatch(hard_state=HardState(1, None, 0), entries=entries(1, 4, 1))
    await storage.save(first)
    first_args = storage._save_args(first, str(incarnation), 1)
    assert not await storage._run_save(first_args)  # the same attempt again: a duplicate, not applied
    await storage.save(WriteBatch(hard_state=HardState(2, "n2", 0), entries=entries(3, 1, 2)))
    expected = await storage.load()
    with pytest.raises(FencedError, match="older"):
        await storage._run_save(first_args)  # the first attempt, arriving after the second save
    assert await storage.load() == expected
    assert [(e.index, e.term) for e in expected.durable.entries] == [(1, 1), (2, 1), (3, 2)]


async def test_a_storage_that_never_bumps_saves_unfenced(
    redis_url: str, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    first = opened(redis_url, namespace)
    await first.bump_incarnation()
    await first.save(WriteBatch(entries=entries(1, 1, 1)))
    tool = opened(redis_url, namespace)  # an inspection tool, say: it loads and writes without a bump
    await tool.save(WriteBatch(entries=entries(2, 1, 1)))
    await first.save(WriteBatch(entries=entries(3, 1, 1)))
    assert [e.index for e in (await tool.load()).durable.entries] == [1, 2, 3]


# -- round trips, layout, size ----------------------------------------------------------------------------


class CountingConnection(Connection):
    """Counts the writes to the socket: each is one round trip (a pipeline's commands go in one)."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


async def test_a_save_and_a_load_are_one_round_trip_each(redis_url: str, namespace: str) -> None:
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    storage = RedisStorage(client, namespace)
    try:
        # Connect both connections a storage uses (saves keep one of their own): the handshakes'
        # commands are not ours to count.
        await client.ping()
        await client.script_load(storage._save_script.script)
        await storage.save(WriteBatch(entries=entries(1, 1, 1)))
        await storage.load()
        link = storage._save_link
        assert link is not None

        def sends() -> int:  # saves go on a link of their own (`SaveLink`), the rest through redis-py
            return CountingConnection.sends + link.sends

        counts = []
        for operation in (
            storage.bump_incarnation,
            lambda: storage.save(FULL_BATCH),
            lambda: storage.save(WriteBatch(hard_state=HardState(3, None, 5), entries=entries(6, 100, 3))),
            storage.load,
        ):
            before = sends()
            await operation()
            counts.append(sends() - before)
        assert counts == [1, 1, 1, 1]
        assert storage._save_link is link  # the saves kept their connection
    finally:
        await client.aclose(close_connection_pool=True)


async def test_a_node_owns_exactly_its_keys_and_nodes_can_share_a_server(
    redis_url: str, raw: aioredis.Redis, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    n1, n2 = opened(redis_url, f"{namespace}:n1"), opened(redis_url, f"{namespace}:n2")
    await n1.bump_incarnation()
    await n1.save(FULL_BATCH)
    await n2.save(WriteBatch(hard_state=HardState(7, None, 0)))
    found = {key.decode() async for key in raw.scan_iter(match=f"{{{namespace}:n1}}*")}
    assert (
        found
        == set(n1.keys)
        == {
            f"{{{namespace}:n1}}:state",
            f"{{{namespace}:n1}}:log",
            f"{{{namespace}:n1}}:marks",
            f"{{{namespace}:n1}}:positions",
        }
    )
    assert (await n1.load()).durable.hard_state == FULL_BATCH.hard_state
    assert await n2.load() == StoredState(DurableState(HardState(7, None, 0)))


async def test_big_batches_and_snapshots_round_trip(
    redis_url: str, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    storage = opened(redis_url, namespace)
    many = entries(1, 2500, 1)  # more than one ZADD slice in the script
    image = bytes(range(256)) * (5 * 4096)  # 5 MiB: past the codec's envelope limit, which is for the wire
    await storage.save(WriteBatch(entries=many))
    await storage.save(WriteBatch(snapshot=Snapshot(1000, 1, image)))
    state = await opened(redis_url, namespace).load()
    assert state.durable.entries == many[1000:] and state.durable.snapshot == Snapshot(1000, 1, image)


async def test_an_unreachable_server_is_a_storage_error(namespace: str) -> None:
    storage = RedisStorage.from_url("redis://127.0.0.1:1/0", namespace, connect_timeout_s=1)
    try:
        for operation in (storage.load(), storage.bump_incarnation(), storage.save(FULL_BATCH)):
            with pytest.raises(StorageUnavailableError):
                await operation
    finally:
        await storage.close()


# -- the save's own connection ------------------------------------------------------------------------


async def _flush_scripts(raw: aioredis.Redis) -> None:
    await raw.script_flush()  # what a restarted Redis without the script looks like to a save


async def _kill_other_connections(raw: aioredis.Redis) -> None:
    await raw.client_kill_filter(skipme=True)  # every other client's connection: the save's too


@pytest.mark.parametrize(
    "disruption", [_flush_scripts, _kill_other_connections], ids=["script", "connection"]
)
async def test_a_save_survives_a_server_that_lost_its_script_or_its_connection(
    redis_url: str,
    opened: Callable[[str, str], RedisStorage],
    namespace: str,
    raw: aioredis.Redis,
    disruption: Callable[[aioredis.Redis], Awaitable[None]],
) -> None:
    storage = opened(redis_url, namespace)
    await storage.bump_incarnation()
    await storage.save(WriteBatch(entries=entries(1, 2, 1)))
    await disruption(raw)
    await storage.save(FULL_BATCH)
    assert (await opened(redis_url, namespace).load()).durable.hard_state == FULL_BATCH.hard_state


async def test_a_cancelled_save_leaves_no_answer_for_the_next_one_to_read(
    redis_url: str, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    """A save cancelled while its answer is on the way (a node killed in-process) must not leave that
    answer on the connection: the next save would take it for its own. Here the next save is fenced
    off, so only its own answer (an error) is right."""
    zombie = opened(redis_url, namespace)
    await zombie.bump_incarnation()
    await zombie.save(WriteBatch(entries=entries(1, 1, 1)))
    cancelled = asyncio.create_task(zombie.save(WriteBatch(entries=entries(2, 1, 1))))
    while zombie._save_link is None or not zombie._lock.locked():
        await asyncio.sleep(0)
    for _ in range(3):  # let it send its command and start waiting for the answer
        await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # It was cancelled while waiting for its answer (the hazard), and the connection was dropped for it.
    assert zombie._save_link is not None and not zombie._save_link.is_open
    restarted = opened(redis_url, namespace)
    await restarted.load()
    await restarted.bump_incarnation()
    with pytest.raises(FencedError):
        await zombie.save(WriteBatch(entries=entries(3, 1, 1)))


async def test_a_save_cancelled_at_any_loop_turn_ends_cancelled(
    redis_url: str, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    """A cancelled save must end cancelled, whichever loop turn the cancellation lands on. redis-py sends
    through `asyncio.wait_for`, which on Python 3.11 returns normally when the cancellation lands in the
    turn its send completes (CPython gh-86296): a node's loop task then ran on after `stop()` cancelled
    it. Each turn from the save's start to its end is tried once."""
    storage = opened(redis_url, namespace)
    await storage.bump_incarnation()
    await storage.save(WriteBatch(entries=entries(1, 1, 1)))  # connected, script loaded
    index = 2
    turns = 0
    while True:
        save = asyncio.create_task(storage.save(WriteBatch(entries=entries(index, 1, 1))))
        index += 1
        for _ in range(turns):
            await asyncio.sleep(0)  # one loop turn: no time passes
        if save.done():
            break  # every turn of a save has had its cancellation
        save.cancel()
        await asyncio.wait([save])
        assert save.cancelled(), f"a save cancelled {turns} loop turns in ran to the end"
        turns += 1
    assert turns >= 3  # the cancellations landed in the send, in the wait for the answer, and between


class _CuttingProxy:
    """A TCP relay to a real Redis that, once armed, closes the next client connection that sends a
    command, before forwarding it: a connection lost while a save waits for its answer."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.armed = False
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, cut: bool) -> None:
            try:
                while data := await source.read(65536):
                    if cut and self.armed:
                        self.armed = False
                        self.cuts += 1
                        writer.close()
                        upstream_writer.close()
                        return
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        for task in (pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False)):
            self.pipes.add(asyncio.create_task(task))

    async def close(self) -> None:
        for task in self.pipes:
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        if self.server is not None:
            self.server.close()


async def test_a_save_whose_connection_is_lost_on_the_way_is_sent_once_more_on_a_new_one(
    redis_url: str, opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    proxy = _CuttingProxy(port)
    proxy_url = f"redis://127.0.0.1:{await proxy.start()}/0"
    try:
        storage = opened(proxy_url, namespace)
        await storage.bump_incarnation()
        await storage.save(WriteBatch(entries=entries(1, 2, 1)))  # the save's connection is open
        first = storage._save_link
        proxy.armed = True
        await storage.save(FULL_BATCH)  # its connection is cut as the command goes out
        assert proxy.cuts == 1
        assert storage._save_link is not first and storage._save_link is not None
        assert (await opened(redis_url, namespace).load()).durable.hard_state == FULL_BATCH.hard_state
    finally:
        await proxy.close()


async def test_saves_authenticate_as_the_url_says_on_a_server_that_requires_a_password(
    redis_server_factory: Callable[..., Any], opened: Callable[[str, str], RedisStorage], namespace: str
) -> None:
    """The save connection is set up by redis-py (AUTH from the URL) before `SaveLink` takes it over;
    without the password the server refuses every save."""
    server = redis_server_factory()
    admin = aioredis.Redis.from_url(server.url)
    try:  # set after start: scripts/redis.sh checks readiness with a plain PING
        await admin.config_set("requirepass", "s3cret-for-this-test")
    finally:
        await admin.aclose()
    with_password = server.url.replace("redis://", "redis://:s3cret-for-this-test@")
    storage = opened(with_password, namespace)
    await storage.bump_incarnation()
    await storage.save(FULL_BATCH)
    await storage.save(WriteBatch(entries=entries(6, 3, 1)))
    # both saves on one authenticated link; the first met a fresh server without the script (NOSCRIPT),
    # loaded it and was sent again
    assert storage._save_link is not None and storage._save_link.sends == 3
    assert (await opened(with_password, namespace).load()).durable.hard_state == FULL_BATCH.hard_state
    with pytest.raises(StorageUnavailableError):
        await opened(server.url, namespace).save(FULL_BATCH)
