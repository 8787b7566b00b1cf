"""Node settings, read from the environment (`DSCORE_` prefix, `__` between nested names).

    DSCORE_NODE_ID=n1 DSCORE_PEERS=n2,n3 DSCORE_TICK_INTERVAL_S=0.01 DSCORE_QUEUES__INBOX_MAX_MESSAGES=20000
    DSCORE_RAFT__ELECTION_TIMEOUT_TICKS=20 DSCORE_RAFT__READ_ONLY_OPTION=lease

`load_settings()` turns every validation failure into one `ConfigError` that names the environment
variable, the bad value and what is expected, so a wrong setting stops a node at start with a clear
message instead of misbehaving later.

Why the defaults (measured with `dscore bench raft`; see the README):

- `tick_interval_s = 0.01`: with Raft's default election timeout of 10-20 ticks a follower suspects a dead
  leader after 100-200 ms, which puts the median failover (leader lost -> first commit under the next one)
  well under 400 ms, while heartbeats every few ticks keep a loaded process far from a spurious election.
  Missed ticks after a stall are replayed at most `max_catchup_ticks` at a time for the same reason.
- `snapshot_every_entries = 10_000`: bounds the in-memory log (and a restarted node's replay) to tens of
  thousands of entries while keeping snapshot cost (the whole map and its sessions) off the hot path.
- `max_pending_proposals = 10_000` / `max_pending_reads = 10_000`: well above the 1000-5000 operations
  in flight the benchmark drives, far below what would exhaust memory; beyond it clients get a clear
  `OverloadedError` at once instead of queueing latency.
- `gc_gen0_threshold = 50_000`: CPython's 700 makes a loaded node spend about a fifth of its CPU in the
  young-generation collector; see `dscore.runtime.gc_tuning` (the node's main applies it, not the library).
- `queues.inbox_max_messages = 10_000`: a node that falls behind sheds the newest messages (counted) and
  Raft retransmits; without a bound a slow node would grow its inbox without limit.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dscore.core.codec import DEFAULT_MAX_ENVELOPE_BYTES
from dscore.core.errors import ConfigError
from dscore.protocols.raft import RaftConfig, ReadOnlyOption
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.gc_tuning import DEFAULT_GC_GEN0_THRESHOLD
from dscore.runtime.node import RuntimeConfig
from dscore.statemachine.kv import KvStateMachine

ENV_PREFIX = "DSCORE_"
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class QueueSettings(BaseModel):
    """Bounds of the queues a node's messages pass through."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: frames waiting in a node's inbox (memory transport); the newest is dropped when full
    inbox_max_messages: int = Field(default=10_000, ge=1, le=10_000_000)
    #: messages received and not yet stepped; the reader stops receiving when full
    inbound_buffer_messages: int = Field(default=16_384, ge=1, le=10_000_000)
    #: messages stepped per loop iteration before the core is drained
    inbound_batch_messages: int = Field(default=4_096, ge=1, le=1_000_000)


_RAFT_DEFAULTS = RaftConfig()


class RaftSettings(BaseModel):
    """Raft's knobs (`dscore.protocols.raft.RaftConfig`), every duration in ticks:
    `DSCORE_RAFT__ELECTION_TIMEOUT_TICKS=20`, `DSCORE_RAFT__READ_ONLY_OPTION=lease`, ..."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: base election timeout; each wait is drawn from [this, 2 * this)
    election_timeout_ticks: int = Field(default=_RAFT_DEFAULTS.election_timeout_ticks, ge=2, le=100_000)
    #: a leader's heartbeat period (smaller than the election timeout)
    heartbeat_ticks: int = Field(default=_RAFT_DEFAULTS.heartbeat_ticks, ge=1, le=100_000)
    #: appends in flight per follower
    max_inflight_msgs: int = Field(default=_RAFT_DEFAULTS.max_inflight_msgs, ge=1, le=1_000_000)
    #: entries per AppendEntries
    max_entries_per_msg: int = Field(default=_RAFT_DEFAULTS.max_entries_per_msg, ge=1, le=1_000_000)
    #: payload bytes per AppendEntries (one entry is always sent)
    max_bytes_per_msg: int = Field(default=_RAFT_DEFAULTS.max_bytes_per_msg, ge=1)
    #: snapshot bytes per InstallSnapshot chunk
    snapshot_chunk_bytes: int = Field(default=_RAFT_DEFAULTS.snapshot_chunk_bytes, ge=1)
    pre_vote: bool = _RAFT_DEFAULTS.pre_vote
    check_quorum: bool = _RAFT_DEFAULTS.check_quorum
    #: `read_index` (a heartbeat round confirms each batch of reads) or `lease` (see raft.py for the
    #: clock-drift bound a lease assumes)
    read_only_option: ReadOnlyOption = _RAFT_DEFAULTS.read_only_option
    #: lease length in ticks for `lease` reads (default: election timeout - 2)
    lease_ticks: int | None = Field(default=_RAFT_DEFAULTS.lease_ticks, ge=1)

    @model_validator(mode="after")
    def _check_with_raft(self) -> RaftSettings:
        self.raft_config()  # Raft's own cross-field rules (heartbeat < election timeout, lease, ...)
        return self

    def raft_config(self) -> RaftConfig:
        try:
            return RaftConfig(**self.model_dump())
        except ConfigError as error:
            raise ValueError(str(error)) from None


class NodeSettings(BaseSettings):
    """Everything one node needs to know at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    #: this node's id (letters, digits, `_.-`; unique in the cluster)
    node_id: str = "n1"
    #: the other members of the cluster (comma-separated in the environment); empty for a single node
    peers: Annotated[tuple[str, ...], NoDecode] = ()
    #: seconds per protocol tick; protocol timeouts are counted in ticks
    tick_interval_s: float = Field(default=0.01, gt=0, le=1.0)
    #: overdue ticks replayed at once after a stall (the rest are skipped)
    max_catchup_ticks: int = Field(default=2, ge=1, le=100)
    #: applied entries between state-machine snapshots (log compaction)
    snapshot_every_entries: int = Field(default=10_000, ge=1)
    #: client commands in flight per node before new ones are refused
    max_pending_proposals: int = Field(default=10_000, ge=1, le=10_000_000)
    #: linearizable reads in flight per node before new ones are refused
    max_pending_reads: int = Field(default=10_000, ge=1, le=10_000_000)
    #: client sessions kept by the state machine (least recently used evicted)
    max_sessions: int = Field(default=KvStateMachine.DEFAULT_MAX_SESSIONS, ge=1)
    #: largest envelope accepted or sent, in bytes
    max_envelope_bytes: int = Field(default=DEFAULT_MAX_ENVELOPE_BYTES, ge=1024, le=512 * 1024 * 1024)
    #: young-generation GC threshold of the node's process (0 keeps CPython's 700); see runtime/gc_tuning
    gc_gen0_threshold: int = Field(default=DEFAULT_GC_GEN0_THRESHOLD, ge=0, le=10_000_000)
    #: seeds every random choice (election timeouts, demo workloads), so one seed replays a run
    seed: int = 0
    queues: QueueSettings = Field(default_factory=QueueSettings)
    raft: RaftSettings = Field(default_factory=RaftSettings)

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, value: str) -> str:
        if not _NODE_ID.match(value):
            raise ValueError("must be 1-63 characters: letters, digits, '_', '.', '-' (not first)")
        return value

    @field_validator("peers")
    @classmethod
    def _check_peers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for peer in value:
            if not _NODE_ID.match(peer):
                raise ValueError(f"peer id {peer!r} must be letters, digits, '_', '.', '-'")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate peer ids in {','.join(value)}")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> NodeSettings:
        if self.node_id in self.peers:
            raise ValueError(f"peers must list the OTHER members; it contains node_id {self.node_id!r}")
        if self.queues.inbound_batch_messages > self.queues.inbound_buffer_messages:
            raise ValueError("queues.inbound_batch_messages must not exceed queues.inbound_buffer_messages")
        return self

    @property
    def members(self) -> tuple[str, ...]:
        """Every member of the cluster, this node included, in a stable order."""
        return tuple(sorted((self.node_id, *self.peers)))

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(
            tick_interval_s=self.tick_interval_s,
            max_catchup_ticks=self.max_catchup_ticks,
            max_inbound_batch=self.queues.inbound_batch_messages,
            max_inbound_buffer=self.queues.inbound_buffer_messages,
            max_sessions=self.max_sessions,
            executor=ExecutorConfig(
                snapshot_every_entries=self.snapshot_every_entries,
                max_pending_proposals=self.max_pending_proposals,
                max_pending_reads=self.max_pending_reads,
                max_envelope_bytes=self.max_envelope_bytes,
            ),
        )


def _env_name(location: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in location)


def load_settings(**overrides: Any) -> NodeSettings:
    """Read `NodeSettings` from the environment (keyword arguments win); raise `ConfigError` naming
    every bad setting."""
    try:
        return NodeSettings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = _env_name(item["loc"]) if item["loc"] else "settings"
            value = item.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            problems.append(f"{where}: {item['msg']}{shown}")
        raise ConfigError("invalid dscore settings:\n  " + "\n  ".join(problems)) from None
