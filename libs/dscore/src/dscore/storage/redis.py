"""Stable storage in Redis: one node's durable state under its own key prefix, one atomic write per save.

Key layout (all keys of a node share the hash tag `{PREFIX}`, so one script may touch them all, on a
single server or on a Redis Cluster):

==========================  =====  ==================================================================
key                         type   holds
==========================  =====  ==================================================================
``{PREFIX}:state``          hash   ``hard`` (hard state record), ``snapshot`` (record) and
                                   ``snapshot_index``, ``incarnation``, ``last_save`` (the fencing token
                                   ``incarnation:seq`` of the last save), ``layout`` (= 1)
``{PREFIX}:log``            zset   one member per log entry: the entry's record, scored by its index
``{PREFIX}:marks``          hash   sender -> ``incarnation:seq`` (dedup high-water mark)
``{PREFIX}:positions``      hash   channel -> position (decimal)
==========================  =====  ==================================================================

A record is `codec.frame(codec.encode_value(value))`: dscore's msgpack encoding behind a CRC-32, so a
corrupt record is a `CorruptStorageError` naming its key at `load()`, never a wrong state.

Why a Lua script and not MULTI/EXEC: a save is conditional (a snapshot replaces the stored one only if
newer, and then drops entries; marks and positions only grow; a stale writer is fenced off). MULTI/EXEC
cannot branch, so it would need a WATCH plus a read first (two round trips, and retries under
contention). The script decides on the server: one round trip (EVALSHA), atomic, and propagated to the
AOF as one MULTI/EXEC block, so a torn save is never replayed. The log is a sorted set because every
`Ready` rule maps to a range removal by score (truncate a suffix, compact a prefix) plus one ZADD, with
no index bookkeeping and for any entry indexes `apply_persist` accepts.

A save is idempotent (replaying it changes nothing), so it may be sent again after a lost connection.
Retries bring one hazard: a timed-out attempt that reaches Redis late, after newer saves. Every save
therefore carries a fencing token `(incarnation, seq)`: the incarnation this object got from
`bump_incarnation()` (which every node start calls; an object that never bumps saves unfenced), and a
counter. The script applies a save only if its token is
newer than the stored `last_save`, treats the same token again as a duplicate (success, nothing
written), and refuses an older one (`FencedError`): a late attempt, or a zombie process of a node that
has restarted since (its incarnation is behind the stored one). A fenced save that finds no stored
incarnation at all is refused too (`StorageWipedError`): the state was wiped while the node ran, and
writing would quietly rebuild a partial one that no longer fences anything.

Where: by default each node has its own Redis server (`make up` runs one per node): a node's durable
state is then its own failure domain, as its disk would be, while one shared Redis would be a single
point of failure for the whole quorum. Small setups may still share one server, since every node lives
under its own key prefix.

Durability is Redis's setting, not ours: with `appendonly yes` and `appendfsync always` an acknowledged
save is on disk (it survives kill -9 of Redis and a power cut); with `everysec` the last second of
writes can be lost in a power cut or kernel crash. `read_durability` / `require_durable` let a node read
the server's settings at start and refuse an unsafe server unless told otherwise.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from dscore.core.codec import decode_value, encode_value, frame, unframe
from dscore.core.errors import ConfigError, DecodeError, DscoreError, LocalError
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry, Snapshot
from dscore.storage.base import DedupMark, StoredState, WriteBatch
from dscore.storage.redis_link import SaveLink

#: the layout this module writes and reads (`{PREFIX}:state` field `layout`)
LAYOUT_VERSION = 1
#: indexes, positions and marks must stay exact as Redis sorted-set scores (doubles) and Lua numbers
MAX_EXACT_INT = 2**53 - 1

_DECIMAL = re.compile(rb"0|[1-9][0-9]*")
_MARK = re.compile(rb"(0|[1-9][0-9]*):(0|[1-9][0-9]*)")


class StorageError(DscoreError):
    """Base class of the Redis storage's own errors."""


class StorageUnavailableError(StorageError):
    """Redis could not be reached or refused a command. A failed `save` may or may not have been applied:
    send nothing, acknowledge nothing, and restart from `load()` (which sees the outcome)."""


class CorruptStorageError(StorageError):
    """A stored record cannot be read back. `key` and `field` say where; nothing is guessed or skipped."""

    def __init__(self, key: str, field: str, reason: str) -> None:
        super().__init__(f"corrupt record in Redis key {key!r} field {field!r}: {reason}")
        self.key = key
        self.field = field


class FencedError(StorageError):
    """A save was refused because a newer one is stored: a late attempt, or another process of the same
    node (it bumped the incarnation since this object started). This object must stop writing."""


class StorageWipedError(StorageError):
    """A save found the node's state gone while the node ran (its Redis restarted without its data, or
    the keys were deleted): nothing was written. The node has lost what it promised (votes, entries), so
    it must not go on, and restarting cannot help (its peers refuse a storage that went back)."""


class UnsafeDurabilityError(ConfigError):
    """The Redis server does not fsync every write (`appendonly yes`, `appendfsync always`)."""


@dataclass(frozen=True, slots=True)
class RedisDurability:
    """A server's persistence settings as read by `CONFIG GET` (empty strings when not readable)."""

    appendonly: str
    appendfsync: str

    @property
    def fsyncs_every_write(self) -> bool:
        """An acknowledged write is on disk: it survives kill -9 of Redis and a power cut."""
        return self.appendonly == "yes" and self.appendfsync == "always"

    def describe(self) -> str:
        if self.fsyncs_every_write:
            return "appendonly yes, appendfsync always: every acknowledged write is on disk"
        if not self.appendonly:
            return "persistence settings unreadable (CONFIG GET refused): durability unknown"
        if self.appendonly != "yes":
            return "appendonly no: Redis keeps no append-only file; a restart loses recent writes"
        return (
            f"appendonly yes, appendfsync {self.appendfsync}: a power cut or kernel crash can lose "
            "acknowledged writes (about the last second with everysec)"
        )


async def read_durability(client: aioredis.Redis) -> RedisDurability:
    """The server's `appendonly` and `appendfsync` (empty strings if `CONFIG` is disabled)."""
    try:
        found: dict[Any, Any] = await client.config_get("append*")
    except ResponseError:
        return RedisDurability("", "")
    except RedisError as exc:
        raise StorageUnavailableError(f"cannot read Redis's persistence settings: {exc}") from exc
    values = {_text(k): _text(v) for k, v in found.items()}
    return RedisDurability(values.get("appendonly", ""), values.get("appendfsync", ""))


async def require_durable(client: aioredis.Redis, *, allow_unsafe: bool = False) -> RedisDurability:
    """Read the server's durability; raise `UnsafeDurabilityError` unless it fsyncs every write or
    `allow_unsafe` (an explicit operator choice, e.g. a throwaway test cluster)."""
    durability = await read_durability(client)
    if not durability.fsyncs_every_write and not allow_unsafe:
        raise UnsafeDurabilityError(
            f"Redis is not safe for consensus state ({durability.describe()}); set `appendonly yes` and "
            "`appendfsync always` on the server, or allow an unsafe server explicitly"
        )
    return durability


# The save, on the server. ARGV: writer incarnation ('' = unfenced), seq, hard record ('' = none),
# snapshot record ('' = none), snapshot index, log_replaced ('1'/'0'), entry count, mark count,
# position count, then (index, record) per entry, (sender, incarnation, seq) per mark, (channel,
# position) per position. Numbers are canonical decimal strings (no sign, no leading zero), compared by
# length then bytes, which is exact at any size. Every check runs before the first write: a script that
# fails half-way keeps its earlier writes.
_SAVE_LUA = r"""
local state, log, marks, positions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function corrupt(key, field)
  return redis.error_reply('DSCORE_CORRUPT ' .. key .. ' ' .. field)
end
local function decimal(s) return s and string.match(s, '^%d+$') ~= nil end

local inc, seq = ARGV[1], ARGV[2]
local hard, snap, snap_index, replaced = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local n_entries, n_marks, n_positions = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local first_entry = 10
local first_mark = first_entry + 2 * n_entries
local first_position = first_mark + 3 * n_marks

-- 1. checks, no writes
local stored = redis.call('HMGET', state, 'incarnation', 'last_save', 'snapshot_index')
local stored_inc, last, stored_snap = stored[1], stored[2], stored[3]
if inc ~= '' then
  -- a fenced writer bumped the incarnation first: its absence means the state was wiped under it
  if not stored_inc then
    return redis.error_reply('DSCORE_WIPED no stored incarnation, while this writer has ' .. inc)
  end
  if not decimal(stored_inc) then return corrupt(state, 'incarnation') end
  if stored_inc and greater(stored_inc, inc) then
    return redis.error_reply('DSCORE_FENCED incarnation ' .. inc .. ' is behind the stored ' .. stored_inc)
  end
  if last then
    local last_inc, last_seq = string.match(last, '^(%d+):(%d+)$')
    if not last_inc then return corrupt(state, 'last_save') end
    if last_inc == inc then
      if last_seq == seq then return 0 end
      if greater(last_seq, seq) then
        return redis.error_reply('DSCORE_FENCED save ' .. inc .. ':' .. seq .. ' is older than ' .. last)
      end
    elseif greater(last_inc, inc) then
      return redis.error_reply('DSCORE_FENCED save ' .. inc .. ':' .. seq .. ' is older than ' .. last)
    end
  end
end
local take_snapshot = false
if snap ~= '' then
  if stored_snap and not decimal(stored_snap) then return corrupt(state, 'snapshot_index') end
  take_snapshot = (not stored_snap) or greater(snap_index, stored_snap)
end
local new_marks = {}
for i = first_mark, first_position - 1, 3 do
  local sender, m_inc, m_seq = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', marks, sender)
  local take = true
  if old then
    local old_inc, old_seq = string.match(old, '^(%d+):(%d+)$')
    if not old_inc then return corrupt(marks, sender) end
    take = greater(m_inc, old_inc) or (m_inc == old_inc and greater(m_seq, old_seq))
  end
  if take then
    new_marks[#new_marks + 1] = sender
    new_marks[#new_marks + 1] = m_inc .. ':' .. m_seq
  end
end
local new_positions = {}
for i = first_position, first_position + 2 * n_positions - 1, 2 do
  local channel, position = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', positions, channel)
  if old and not decimal(old) then return corrupt(positions, channel) end
  if (not old) or greater(position, old) then
    new_positions[#new_positions + 1] = channel
    new_positions[#new_positions + 1] = position
  end
end

-- 2. writes, in the order of Ready's rules
local fields = {'layout', '1'}
if inc ~= '' then fields[#fields + 1] = 'last_save'; fields[#fields + 1] = inc .. ':' .. seq end
if hard ~= '' then fields[#fields + 1] = 'hard'; fields[#fields + 1] = hard end
if take_snapshot then
  fields[#fields + 1] = 'snapshot'; fields[#fields + 1] = snap
  fields[#fields + 1] = 'snapshot_index'; fields[#fields + 1] = snap_index
end
redis.call('HSET', state, unpack(fields))
if take_snapshot then
  if replaced == '1' then
    redis.call('DEL', log)
  else
    redis.call('ZREMRANGEBYSCORE', log, '-inf', snap_index)
  end
end
if n_entries > 0 then
  redis.call('ZREMRANGEBYSCORE', log, ARGV[first_entry], '+inf')
  -- ARGV already holds (score, member) pairs; ZADD in slices that stay within Lua's stack limit
  local last_arg = first_mark - 1
  local i = first_entry
  while i <= last_arg do
    local stop = math.min(i + 999, last_arg)
    redis.call('ZADD', log, unpack(ARGV, i, stop))
    i = stop + 1
  end
end
if #new_marks > 0 then redis.call('HSET', marks, unpack(new_marks)) end
if #new_positions > 0 then redis.call('HSET', positions, unpack(new_positions)) end
return 1
"""


class RedisStorage:
    """A node's `Storage` in Redis under `key_prefix` (say ``dscore:<cluster>:<node>``).

    The client must not decode responses (`decode_responses=False`, the default). Saves are serialized
    (a lock), each one round trip on a connection of its own; `load` is one round trip (a MULTI/EXEC of
    four reads).
    """

    def __init__(self, client: aioredis.Redis, key_prefix: str, *, owns_client: bool = False) -> None:
        if not key_prefix or any(c in key_prefix for c in "{} \t\r\n"):
            raise LocalError(
                f"a Redis key prefix needs no braces, no spaces and one character: {key_prefix!r}"
            )
        self._client = client
        self._owns_client = owns_client
        tag = "{" + key_prefix + "}"
        self.key_prefix = key_prefix
        self.state_key = f"{tag}:state"
        self.log_key = f"{tag}:log"
        self.marks_key = f"{tag}:marks"
        self.positions_key = f"{tag}:positions"
        self._keys = (self.state_key, self.log_key, self.marks_key, self.positions_key)
        self._save_script = client.register_script(_SAVE_LUA)
        #: the connection saves use, taken from the client's pool at the first save and kept (see `_evalsha`)
        self._save_link: SaveLink | None = None
        self._lock = asyncio.Lock()
        # The fencing token of the next save: (incarnation from bump_incarnation(), seq); None = unfenced.
        self._writer_incarnation: int | None = None
        self._seq = 0
        #: number of `save` calls that reached Redis, for tests and benchmarks
        self.saves = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        key_prefix: str,
        *,
        socket_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> RedisStorage:
        """A storage with its own connection pool to `url` (closed by `close()`)."""
        client = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s
        )
        return cls(client, key_prefix, owns_client=True)

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key this storage writes (for inspection, or to delete a retired node's state)."""
        return self._keys

    async def close(self) -> None:
        link, self._save_link = self._save_link, None
        if link is not None:
            await self._let_go(link)
        if self._owns_client:
            await self._client.aclose()

    async def durability(self, *, allow_unsafe: bool = False) -> RedisDurability:
        """`require_durable` on this storage's server."""
        return await require_durable(self._client, allow_unsafe=allow_unsafe)

    # -- Storage ----------------------------------------------------------------------------------

    async def load(self) -> StoredState:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self.state_key)
                pipe.zrange(self.log_key, 0, -1, withscores=True)
                pipe.hgetall(self.marks_key)
                pipe.hgetall(self.positions_key)
                state, log, marks, positions = await pipe.execute()
        except RedisError as exc:
            raise StorageUnavailableError(f"load of {self.key_prefix!r} failed: {exc}") from exc
        return self._decode(state, log, marks, positions)

    async def save(self, batch: WriteBatch) -> None:
        if not batch:
            return  # nothing to make durable
        async with self._lock:
            self._seq += 1
            inc = "" if self._writer_incarnation is None else str(self._writer_incarnation)
            await self._run_save(self._save_args(batch, inc, self._seq))

    async def bump_incarnation(self) -> int:
        try:
            value = int(await self._client.hincrby(self.state_key, "incarnation", 1))
        except ResponseError as exc:  # the stored field is not an integer
            raise CorruptStorageError(self.state_key, "incarnation", str(exc)) from exc
        except RedisError as exc:
            raise StorageUnavailableError(f"incarnation bump of {self.key_prefix!r} failed: {exc}") from exc
        async with self._lock:
            self._writer_incarnation = value
            self._seq = 0
        return value

    # -- encoding ---------------------------------------------------------------------------------

    def _save_args(self, batch: WriteBatch, inc: str, seq: int) -> list[bytes | str]:
        hard = b"" if batch.hard_state is None else _record(batch.hard_state)
        snap = batch.snapshot
        args: list[bytes | str] = [
            inc,
            str(seq),
            hard,
            b"" if snap is None else _record(snap),
            "" if snap is None else _decimal(snap.index, "snapshot index"),
            "1" if batch.log_replaced else "0",
            str(len(batch.entries)),
            str(len(batch.dedup_marks)),
            str(len(batch.input_positions)),
        ]
        previous = -1
        for entry in batch.entries:
            index = _decimal(entry.index, "entry index")
            if entry.index <= previous:
                raise LocalError(f"entries must ascend by index: {entry.index} after {previous}")
            previous = entry.index
            args.append(index)
            args.append(_record(entry))
        for sender, (mark_inc, mark_seq) in batch.dedup_marks.items():
            args += [_name(sender, "sender"), _decimal(mark_inc, "mark"), _decimal(mark_seq, "mark")]
        for channel, position in batch.input_positions.items():
            args += [_name(channel, "channel"), _decimal(position, "input position")]
        return args

    async def _run_save(self, args: list[bytes | str]) -> bool:
        """Run the save script; False if Redis had applied this very save already (a retried attempt)."""
        try:
            applied = await self._evalsha(args)
        except ResponseError as exc:
            message = str(exc)
            if message.startswith("DSCORE_CORRUPT"):
                _, key, field = [*message.split(" ", 2), "", ""][:3]
                raise CorruptStorageError(key, field, "malformed value, save refused") from None
            if message.startswith("DSCORE_FENCED"):
                raise FencedError(f"{self.key_prefix!r}: {message.removeprefix('DSCORE_FENCED ')}") from None
            if message.startswith("DSCORE_WIPED"):
                raise StorageWipedError(
                    f"{self.key_prefix!r}: {message.removeprefix('DSCORE_WIPED ')}"
                ) from None
            raise StorageUnavailableError(f"save to {self.key_prefix!r} failed: {message}") from exc
        except RedisError as exc:
            raise StorageUnavailableError(f"save to {self.key_prefix!r} failed: {exc}") from exc
        self.saves += 1
        return bool(applied)

    async def _evalsha(self, args: list[bytes | str]) -> Any:
        """The save script's EVALSHA, packed here and sent on a connection of its own (`SaveLink`).

        What the pool did for a save is done here: a connection the server closed is replaced and the
        same save sent once more (a save is idempotent and fenced, see the module doc); a server that
        lost the script (restarted, SCRIPT FLUSH) is given it again. Saves are serialized by `save`'s
        lock: one at a time on the connection. A save cancelled while its answer is on the way ends the
        connection, so that answer is never read as the next save's (tested in test_redis_storage)."""
        packed = _pack_command(("EVALSHA", self._save_script.sha, "4", *self._keys, *args))

        async def attempt() -> Any:
            link = await self._link()
            try:
                return await link.call(packed)
            except RedisConnectionError:
                # The server closed it since the last save (a restart, CLIENT KILL, an idle timeout),
                # where the pool would have handed out a fresh one: send the same save once more on one.
                return await (await self._link()).call(packed)

        try:
            return await attempt()
        except NoScriptError:
            await self._client.script_load(_SAVE_LUA)
            return await attempt()

    async def _link(self) -> SaveLink:
        """The open save connection, or a new one from the client's pool in place of a closed one."""
        link = self._save_link
        if link is not None and link.is_open:
            return link
        self._save_link = None
        if link is not None:
            await self._let_go(link)
        connection = await self._client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            _raise_swallowed_cancellation()
            link = SaveLink.take_over(connection)
        except BaseException:
            await self._client.connection_pool.release(connection)
            raise
        self._save_link = link
        return link

    async def _let_go(self, link: SaveLink) -> None:
        """Close `link` and give its connection back to the pool, disconnected (the pool reconnects it)."""
        link.close()
        await link.connection.disconnect()
        await self._client.connection_pool.release(link.connection)

    def _decode(
        self,
        state: Mapping[bytes, bytes],
        log: Iterable[tuple[bytes, float]],
        marks: Mapping[bytes, bytes],
        positions: Mapping[bytes, bytes],
    ) -> StoredState:
        key = self.state_key
        layout = state.get(b"layout")
        if layout is not None and layout != str(LAYOUT_VERSION).encode():
            raise CorruptStorageError(key, "layout", f"layout {layout!r}, this build reads {LAYOUT_VERSION}")
        hard_state = None
        if b"hard" in state:
            hard_state = _decode_record(state[b"hard"], key, "hard")
        snapshot = None
        if b"snapshot" in state or b"snapshot_index" in state:
            snapshot = _decode_record(state.get(b"snapshot", b""), key, "snapshot")
            if not isinstance(snapshot, Snapshot):
                raise CorruptStorageError(key, "snapshot", f"not a Snapshot: {type(snapshot).__name__}")
            if snapshot.index != _parse_int(state.get(b"snapshot_index"), key, "snapshot_index"):
                raise CorruptStorageError(key, "snapshot_index", "does not match the snapshot's index")
        incarnation = 0
        if b"incarnation" in state:
            incarnation = _parse_int(state[b"incarnation"], key, "incarnation")
        entries: list[LogEntry] = []
        for member, score in log:
            where = f"member scored {int(score)}"
            entry = _decode_record(member, self.log_key, where)
            if not isinstance(entry, LogEntry):
                raise CorruptStorageError(self.log_key, where, f"not a LogEntry: {type(entry).__name__}")
            if entry.index != score:
                raise CorruptStorageError(self.log_key, where, f"holds the entry of index {entry.index}")
            entries.append(entry)
        dedup: dict[NodeId, DedupMark] = {}
        for raw_sender, raw_mark in marks.items():
            sender = _field_name(raw_sender, self.marks_key)
            match = _MARK.fullmatch(raw_mark)
            if match is None:
                raise CorruptStorageError(self.marks_key, sender, f"not incarnation:seq: {raw_mark!r}")
            dedup[sender] = (int(match[1]), int(match[2]))
        stored_positions: dict[str, int] = {}
        for raw_channel, raw_position in positions.items():
            channel = _field_name(raw_channel, self.positions_key)
            stored_positions[channel] = _parse_int(raw_position, self.positions_key, channel)
        return StoredState(
            durable=DurableState(hard_state, snapshot, tuple(entries)),
            incarnation=incarnation,
            dedup_marks=MappingProxyType(dedup),
            input_positions=MappingProxyType(stored_positions),
        )


def _raise_swallowed_cancellation() -> None:
    """Raise the cancellation that Python 3.11's `asyncio.wait_for` may have swallowed.

    redis-py bounds its connect and set-up with `asyncio.wait_for`. Before Python 3.12 that returns
    normally when its task is cancelled in the same loop turn as the awaited step completes (CPython
    gh-86296): the cancellation is lost and the task's `cancelling()` count stays above zero. A node's
    loop task that `stop()` cancelled then went on running (seen: a leader that never exited after
    SIGTERM). A task with a cancellation outstanding gets it here, as it would have at its next await."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _pack_command(parts: Iterable[bytes | str]) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8)."""
    out = []
    count = 0
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
        count += 1
    return b"*%d\r\n%b" % (count, b"".join(out))


def _record(value: object) -> bytes:
    return frame(encode_value(value))


def _decode_record(data: bytes, key: str, field: str) -> Any:
    try:
        return decode_value(unframe(data, max_bytes=max(len(data), 1)))
    except DecodeError as exc:
        raise CorruptStorageError(key, field, str(exc)) from None


def _decimal(value: object, what: str) -> str:
    if type(value) is not int or not 0 <= value <= MAX_EXACT_INT:
        raise LocalError(f"{what} must be an int in [0, 2**53): {value!r}")
    return str(value)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise LocalError(f"a {what} must be a non-empty str: {value!r}")
    return value


def _parse_int(raw: bytes | None, key: str, field: str) -> int:
    if raw is None or _DECIMAL.fullmatch(raw) is None:
        raise CorruptStorageError(key, field, f"not a non-negative decimal integer: {raw!r}")
    return int(raw)


def _field_name(raw: bytes, key: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise CorruptStorageError(key, repr(raw), "field name is not UTF-8") from None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
