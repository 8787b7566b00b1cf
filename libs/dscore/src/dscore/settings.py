"""Settings, read from the environment (`DSCORE_` prefix, `__` between nested names).

    DSCORE_NODE_ID=n1 DSCORE_PEERS=n2,n3 DSCORE_CLUSTER_ID=prod DSCORE_TICK_INTERVAL_S=0.01
    DSCORE_RAFT__ELECTION_TIMEOUT_TICKS=20 DSCORE_RAFT__READ_ONLY_OPTION=lease DSCORE_AUTH_KEY=...

Two models. `ClusterSettings` holds what must be equal on every member; `NodeSettings` (what
`load_settings()` returns) holds everything one process reads, the cluster-wide settings included under
the same environment names as before, and `NodeSettings.cluster_settings()` extracts them. A node
stamps `ClusterSettings.fingerprint()` on every envelope and refuses a peer whose envelopes carry
another one, naming the settings that differ (`dscore.core.cluster`). A joining process is described by
its environment alone: its peers (`DSCORE_PEERS`) and `DSCORE_INITIAL_CLUSTER_STATE=existing` (etcd's
flag: join a running cluster, never campaign for a fresh one).

Cluster-wide, and why each must agree:

- `cluster_id`: two clusters sharing a transport (one Kafka, one network) must never accept each
  other's messages; it is part of the fingerprint, so they refuse each other by name.
- `protocol`: a Raft node and a sequencer node do not understand each other's messages.
- `tick_interval_s` and `raft.election_timeout_ticks`: lease reads assume every member's election
  timeout lasts as long in real time and that tick rates drift by at most 12.5% (see
  `dscore.protocols.raft.readonly`); a member with a shorter timeout or faster ticks could elect a leader
  while the old one still serves reads.
- `raft.check_quorum` and `raft.read_only_option`: a lease holds only because every voter ignores
  vote requests while it hears from a leader (stickiness needs check_quorum on the voter) and keeps
  that stickiness across a restart (a voter does so only in lease mode); both are the voter's own
  settings, so one member without them breaks the leader's lease.
- `raft.lease_ticks`: must stay below every voter's election timeout minus the drift; the same on all
  members, or the leader's lease is measured against the wrong timeout.
- `raft.heartbeat_ticks`: liveness; a leader heartbeating slower than a follower's election timeout
  would be deposed over and over.
- `raft.pre_vote`: one member without pre-vote disrupts a healthy leader every time it rejoins after a
  partition, which is what pre-vote exists to prevent; the guarantee is only as strong as the weakest
  member.
- `max_sessions`: session eviction must be decided by the log alone; with different bounds replicas
  evict different sessions, and a retried command would be applied on one and refused on another.
- `max_envelope_bytes`: every member must accept what any member sends; a smaller limit on one member
  makes it drop appends it can never catch up without.
- `paxos.*` (with `protocol=paxos`): timing as Raft's (a faster member would depose a healthy leader), and
  a leader's `window_slots` must fit every acceptor's `max_open_slots`; all of them, for simplicity.
- `pbft.*` (with `protocol=pbft`): the checkpoint interval and log size decide which sequence numbers
  every replica accepts (the water marks), `faults_tolerated` the quorums (n - f) and the f + 1 matching
  replies a client waits for; PBFT needs n >= 3f + 1 members (checked at start, naming the settings), and
  its pair MAC keys are derived from the cluster key (`dscore.runtime.protocols`), so it needs one.

Only the section of the protocol the cluster runs is fingerprinted: Raft's knobs do not matter to a
Paxos cluster, and a stray `DSCORE_RAFT__...` in a shared ConfigMap must not split it.

Node-local, and why: `node_id`, `peers`, `initial_cluster_state` (they describe this process; the
membership itself is Raft's replicated configuration, not a setting); `auth_key` (it must be equal, but
a MAC that verifies proves that, and a description is sent to peers, so a secret can never be in one);
`raft.max_inflight_msgs`, `raft.max_entries_per_msg`, `raft.max_bytes_per_msg`,
`raft.snapshot_chunk_bytes` and `raft.commit_only_appends` (they only shape what a leader sends, any
receiver accepts any batch up to `max_envelope_bytes`, and keeping them local lets them be tuned by a
rolling restart); the queues, the in-flight bounds, `snapshot_every_entries`, `max_catchup_ticks`,
`gc_gen0_threshold` (one process's resources and pace) and `seed` (each node's own random stream);
`kafka.*` and `redis.*` (where this process finds its broker and its own durable state; the cluster id,
not these, keeps clusters apart on a shared broker).

`load_settings()` turns every validation failure into one `ConfigError` that names the environment
variable, the bad value and what is expected, so a wrong setting stops a node at start with a clear
message instead of misbehaving later. Values of secrets, and of settings it does not know (a misspelt
`DSCORE_AUTH_KEY` would otherwise print the key), are never shown.

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

import enum
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dscore.core.cluster import fingerprint_of
from dscore.core.codec import DEFAULT_MAX_ENVELOPE_BYTES, MIN_KEY_BYTES, check_key
from dscore.core.errors import ConfigError
from dscore.protocols.paxos import PaxosConfig
from dscore.protocols.pbft import PbftConfig
from dscore.protocols.raft import RaftConfig, ReadOnlyOption
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.gc_tuning import DEFAULT_GC_GEN0_THRESHOLD
from dscore.runtime.node import RuntimeConfig
from dscore.statemachine.kv import KvStateMachine
from dscore.transport.kafka_config import KafkaClient, KafkaTransportConfig, StartWithoutPosition

ENV_PREFIX = "DSCORE_"
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def split_ids(value: Any) -> Any:
    """A comma-separated list from the environment as a tuple of ids (other values pass through)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def check_ids(value: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Every id well formed (`_NODE_ID`) and none twice; `what` names them in the error ("peer")."""
    for node in value:
        if not _NODE_ID.match(node):
            raise ValueError(f"{what} id {node!r} must be letters, digits, '_', '.', '-'")
    if len(set(value)) != len(value):
        raise ValueError(f"duplicate {what} ids in {','.join(value)}")
    return value


def check_auth_key(value: SecretStr | None) -> SecretStr | None:
    """A cluster key, if set, long enough for HMAC-SHA256 (`MIN_KEY_BYTES`)."""
    if value is not None:
        length = len(value.get_secret_value().encode("utf-8", "surrogatepass"))
        if length < MIN_KEY_BYTES:
            raise ValueError(f"must be at least {MIN_KEY_BYTES} bytes, got {length}")
    return value


#: settings whose values never appear in an error, a repr or a dump (dotted paths; the Redis URL may
#: carry a password)
SECRET_SETTINGS = frozenset({"auth_key", "redis.url", "http.admin_token"})

# Each cluster-wide setting is declared on both models (NodeSettings reads it from the environment,
# ClusterSettings is what must agree); one type per setting keeps their rules the same.
ClusterId = Annotated[str, Field(pattern=_NODE_ID.pattern)]
ProtocolName = Literal["raft", "sequencer", "paxos", "pbft"]
TickIntervalS = Annotated[float, Field(gt=0, le=1.0)]
MaxSessions = Annotated[int, Field(ge=1)]
MaxEnvelopeBytes = Annotated[int, Field(ge=1024, le=512 * 1024 * 1024)]
DEFAULT_CLUSTER_ID = "dscore"
DEFAULT_PROTOCOL: ProtocolName = "raft"
DEFAULT_TICK_INTERVAL_S = 0.01


class QueueSettings(BaseModel):
    """Bounds of the queues a node's messages pass through."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: frames waiting in a node's inbox (memory transport); the newest is dropped when full
    inbox_max_messages: int = Field(default=10_000, ge=1, le=10_000_000)
    #: messages received and not yet stepped; the reader stops receiving when full
    inbound_buffer_messages: int = Field(default=16_384, ge=1, le=10_000_000)
    #: messages stepped per loop iteration before the core is drained
    inbound_batch_messages: int = Field(default=4_096, ge=1, le=1_000_000)


class KafkaSettings(BaseModel):
    """How a node process reaches Kafka (`DSCORE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`, ...): the
    node-local part of `dscore.transport.kafka_config.KafkaTransportConfig` (the cluster id and the record
    bound come from the cluster-wide settings). Unused by the embedded runtime."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: `host:port[,host:port...]`; a node process refuses to start without it
    bootstrap_servers: str | None = None
    #: the client library: `confluent` (librdkafka, default) or `aiokafka`
    client: KafkaClient = KafkaClient.CONFLUENT
    #: replicas of each inbox topic the node creates (1 on a single broker)
    replication_factor: int = Field(default=1, ge=1, le=16)
    #: a founding node (`initial_cluster_state=new`) also creates its peers' inboxes, so its first
    #: messages to them are not dropped while they start; a joining node only creates its own
    create_peer_inboxes: bool = True
    #: the longest one send may take (the rest of its batch is dropped; protocols retry)
    send_timeout_s: float = Field(default=1.0, gt=0, le=600)
    #: a record the broker has not acknowledged after this long is counted as lost
    delivery_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    #: one request to the broker
    request_timeout_s: float = Field(default=5.0, gt=0, le=600)
    #: start gives up (and the process exits non-zero) when the broker does not answer within this
    start_timeout_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} is not host:port")
        return ",".join(s.strip() for s in value.split(","))

    def transport_config(
        self,
        cluster_id: str,
        *,
        max_record_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        client_endpoint: bool = False,
    ) -> KafkaTransportConfig:
        """The transport's config for a node (or, with `client_endpoint`, a client that keeps no storage
        and reads its inbox from the end)."""
        if self.bootstrap_servers is None:
            raise ConfigError(f"{ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS is not set")
        return KafkaTransportConfig(
            bootstrap_servers=self.bootstrap_servers,
            cluster_id=cluster_id,
            client=self.client,
            start_without_position=(
                StartWithoutPosition.LATEST if client_endpoint else StartWithoutPosition.EARLIEST
            ),
            max_record_bytes=max_record_bytes,
            replication_factor=self.replication_factor,
            send_timeout_s=self.send_timeout_s,
            delivery_timeout_s=self.delivery_timeout_s,
            request_timeout_s=self.request_timeout_s,
            start_timeout_s=self.start_timeout_s,
        )


class RedisSettings(BaseModel):
    """Where a node process keeps its durable state (`DSCORE_REDIS__URL=redis://127.0.0.1:6379/0`).
    Unused by the embedded runtime."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: `redis://[[user]:password@]host:port/db`; a secret (it may carry a password); a node process
    #: refuses to start without it
    url: SecretStr | None = None
    #: the node's keys live under `{<prefix>}:...`; default `dscore:<cluster_id>:<node_id>`
    key_prefix: str | None = Field(default=None, pattern=r"^[^{}\s]{1,200}$")
    #: start on a Redis that does not fsync every write (`appendfsync` other than `always`): an
    #: acknowledged vote or entry may then vanish in a power cut, which breaks Raft's safety (a node
    #: could vote twice in a term or lose a committed entry). Only for throwaway clusters.
    allow_unsafe_durability: bool = False
    #: one command's bound; a save that takes longer fails the node (it restarts from what Redis holds)
    socket_timeout_s: float = Field(default=5.0, gt=0, le=600)
    connect_timeout_s: float = Field(default=2.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^(redis|rediss|unix)://", value.get_secret_value()):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    def prefix_for(self, cluster_id: str, node_id: str) -> str:
        return self.key_prefix or f"dscore:{cluster_id}:{node_id}"


_RAFT_DEFAULTS = RaftConfig()


class _RaftAgreedFields(BaseModel):
    """Raft's knobs every member must share (see the module doc for why)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: base election timeout; each wait is drawn from [this, 2 * this)
    election_timeout_ticks: int = Field(default=_RAFT_DEFAULTS.election_timeout_ticks, ge=2, le=100_000)
    #: a leader's heartbeat period (smaller than the election timeout)
    heartbeat_ticks: int = Field(default=_RAFT_DEFAULTS.heartbeat_ticks, ge=1, le=100_000)
    pre_vote: bool = _RAFT_DEFAULTS.pre_vote
    check_quorum: bool = _RAFT_DEFAULTS.check_quorum
    #: `read_index` (a heartbeat round confirms each batch of reads) or `lease` (see
    #: `dscore.protocols.raft.readonly` for the clock-drift bound a lease assumes)
    read_only_option: ReadOnlyOption = _RAFT_DEFAULTS.read_only_option
    #: lease length in ticks for `lease` reads (default: election timeout - 2)
    lease_ticks: int | None = Field(default=_RAFT_DEFAULTS.lease_ticks, ge=1)

    @model_validator(mode="after")
    def _check_with_raft(self) -> _RaftAgreedFields:
        # Raft's own cross-field rules (heartbeat < election timeout, lease, ...)
        try:
            RaftConfig(**self.model_dump())
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return self


class RaftClusterSettings(_RaftAgreedFields):
    """The cluster-wide part of Raft's settings (`ClusterSettings.raft`)."""


class RaftSettings(_RaftAgreedFields):
    """Raft's knobs (`dscore.protocols.raft.RaftConfig`), every duration in ticks:
    `DSCORE_RAFT__ELECTION_TIMEOUT_TICKS=20`, `DSCORE_RAFT__READ_ONLY_OPTION=lease`, ...
    The fields after the shared ones are this node's own (flow control of what it sends as leader)."""

    #: appends in flight per follower
    max_inflight_msgs: int = Field(default=_RAFT_DEFAULTS.max_inflight_msgs, ge=1, le=1_000_000)
    #: entries per AppendEntries
    max_entries_per_msg: int = Field(default=_RAFT_DEFAULTS.max_entries_per_msg, ge=1, le=1_000_000)
    #: payload bytes per AppendEntries (one entry is always sent)
    max_bytes_per_msg: int = Field(default=_RAFT_DEFAULTS.max_bytes_per_msg, ge=1)
    #: snapshot bytes per InstallSnapshot chunk
    snapshot_chunk_bytes: int = Field(default=_RAFT_DEFAULTS.snapshot_chunk_bytes, ge=1)
    #: send followers an append only to carry a new commit index (off here, unlike `RaftConfig`'s
    #: default: each is two Kafka records per follower per commit; followers then learn the commit index
    #: from the next append or heartbeat; see `RaftConfig.commit_only_appends`)
    commit_only_appends: bool = False

    def raft_config(self) -> RaftConfig:
        try:
            return RaftConfig(**self.model_dump())
        except ConfigError as error:
            raise ValueError(str(error)) from None

    def cluster_part(self) -> RaftClusterSettings:
        return RaftClusterSettings(**{name: getattr(self, name) for name in RaftClusterSettings.model_fields})


_PAXOS_DEFAULTS = PaxosConfig()
_PBFT_DEFAULTS = PbftConfig()


class PaxosSettings(BaseModel):
    """Multi-Paxos's knobs (`dscore.protocols.paxos.PaxosConfig`), every duration in ticks, all
    cluster-wide: `DSCORE_PAXOS__ELECTION_TIMEOUT_TICKS=15`, `DSCORE_PAXOS__HEARTBEAT_TICKS=3`, ...
    Used with `DSCORE_PROTOCOL=paxos` (and then part of the fingerprint; ignored otherwise)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: a follower that heard nothing from the leader for [this, 2 * this) ticks starts phase 1
    election_timeout_ticks: int = Field(default=_PAXOS_DEFAULTS.election_timeout_ticks, ge=2, le=100_000)
    #: the leader's heartbeat period (smaller than the election timeout)
    heartbeat_ticks: int = Field(default=_PAXOS_DEFAULTS.heartbeat_ticks, ge=1, le=100_000)
    #: slots the leader has in phase 2 at once above its commit index
    window_slots: int = Field(default=_PAXOS_DEFAULTS.window_slots, ge=1, le=1_000_000)
    #: slots an acceptor takes accepts for above its chosen prefix (>= window_slots)
    max_open_slots: int = Field(default=_PAXOS_DEFAULTS.max_open_slots, ge=1, le=1_000_000)
    #: entries per Accept or Learn message
    max_entries_per_msg: int = Field(default=_PAXOS_DEFAULTS.max_entries_per_msg, ge=1, le=1_000_000)
    #: unanswered accepts and catch-up requests are sent again after this many ticks
    retry_ticks: int = Field(default=_PAXOS_DEFAULTS.retry_ticks, ge=1, le=100_000)

    @model_validator(mode="after")
    def _check_with_paxos(self) -> PaxosSettings:
        self.paxos_config()
        return self

    def paxos_config(self) -> PaxosConfig:
        try:
            return PaxosConfig(**self.model_dump())
        except ConfigError as error:
            raise ValueError(str(error)) from None


class PbftSettings(BaseModel):
    """PBFT's knobs (`dscore.protocols.pbft.PbftConfig`), in ticks and sequence numbers, all cluster-wide:
    `DSCORE_PBFT__VIEW_CHANGE_TIMEOUT_TICKS=30`, `DSCORE_PBFT__FAULTS_TOLERATED=1`, ... Used with
    `DSCORE_PROTOCOL=pbft` (and then part of the fingerprint; ignored otherwise). The test-only knobs of
    `PbftConfig` that plant bugs (`quorum_override`, `view_change_keeps_prepared`) are not settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: K: a checkpoint every this many sequence numbers
    checkpoint_interval: int = Field(default=_PBFT_DEFAULTS.checkpoint_interval, ge=1, le=1_000_000)
    #: L = log_size_checkpoints * K: the high water mark is h + L
    log_size_checkpoints: int = Field(default=_PBFT_DEFAULTS.log_size_checkpoints, ge=2, le=1_000)
    #: a backup waiting this long for a request it knows of suspects the primary (a view change)
    view_change_timeout_ticks: int = Field(default=_PBFT_DEFAULTS.view_change_timeout_ticks, ge=1, le=100_000)
    #: how often a replica tells its peers how far it got
    status_every_ticks: int = Field(default=_PBFT_DEFAULTS.status_every_ticks, ge=1, le=100_000)
    #: a replica in a view change resends its VIEW-CHANGE this often
    view_change_resend_ticks: int = Field(default=_PBFT_DEFAULTS.view_change_resend_ticks, ge=1, le=100_000)
    #: requests a primary queues beyond its high water mark (and a backup watches)
    max_queued_requests: int = Field(default=_PBFT_DEFAULTS.max_queued_requests, ge=1, le=1_000_000)
    #: committed entries sent to a lagging peer per status message
    max_catch_up_entries: int = Field(default=_PBFT_DEFAULTS.max_catch_up_entries, ge=1, le=1_000_000)
    #: f, the Byzantine replicas tolerated; unset: the most the members allow, (n - 1) // 3. Every member
    #: and the gateway must agree (quorums are n - f, clients wait for f + 1 matching replies)
    faults_tolerated: int | None = Field(default=None, ge=0, le=1_000)

    def pbft_config(self) -> PbftConfig:
        return PbftConfig(**self.model_dump())

    def tolerated(self, members: int) -> int:
        """f with `members` replicas: the setting, else (n - 1) // 3."""
        return self.faults_tolerated if self.faults_tolerated is not None else (members - 1) // 3


def check_pbft_members(members: int, pbft: PbftSettings) -> None:
    """PBFT needs n >= 3f + 1 replicas with f >= 1 (or an explicit f = 0); raises `ValueError` naming the
    settings to change."""
    f = pbft.tolerated(members)
    if pbft.faults_tolerated is None and f < 1:
        raise ValueError(
            f"{ENV_PREFIX}PROTOCOL=pbft needs n >= 3f + 1 members with f >= 1, so at least 4; got {members} "
            f"(the node plus {ENV_PREFIX}PEERS)"
        )
    if members < 3 * f + 1:
        raise ValueError(
            f"{ENV_PREFIX}PROTOCOL=pbft needs n >= 3f + 1 members: {ENV_PREFIX}PBFT__FAULTS_TOLERATED={f} "
            f"needs at least {3 * f + 1}, got {members} (the node plus {ENV_PREFIX}PEERS)"
        )


#: the protocol-specific settings section each protocol's fingerprint includes (`ClusterSettings`)
_PROTOCOL_SECTION = {"raft": "raft", "sequencer": "raft", "paxos": "paxos", "pbft": "pbft"}
_SECTIONS = frozenset(_PROTOCOL_SECTION.values())


def _setting_text(value: object) -> str:
    """A setting's value as it appears in a description: stable across builds and platforms."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return "default"
    return str(value)


class ClusterSettings(BaseModel):
    """What must be equal on every member (see the module doc for why each setting is here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: names the cluster; clusters sharing a transport refuse each other
    cluster_id: ClusterId = DEFAULT_CLUSTER_ID
    #: the replication protocol every member runs
    protocol: ProtocolName = DEFAULT_PROTOCOL
    #: seconds per protocol tick; protocol timeouts are counted in ticks
    tick_interval_s: TickIntervalS = DEFAULT_TICK_INTERVAL_S
    #: client sessions kept by the state machine (least recently used evicted)
    max_sessions: MaxSessions = KvStateMachine.DEFAULT_MAX_SESSIONS
    #: largest envelope accepted or sent, in bytes
    max_envelope_bytes: MaxEnvelopeBytes = DEFAULT_MAX_ENVELOPE_BYTES
    raft: RaftClusterSettings = Field(default_factory=RaftClusterSettings)
    paxos: PaxosSettings = Field(default_factory=PaxosSettings)
    pbft: PbftSettings = Field(default_factory=PbftSettings)

    def description(self) -> dict[str, str]:
        """Flat `{dotted name: value}`, what `dscore.core.cluster` fingerprints and peers compare: the
        shared settings and the section of the protocol the cluster runs (`raft.*` for Raft and the
        sequencer, `paxos.*`, `pbft.*`); another protocol's knobs do not matter to it.

        Values are as configured, not derived (an unset `raft.lease_ticks` is `default`), so each
        difference a peer reports names one environment variable to change."""
        out = {
            name: _setting_text(getattr(self, name))
            for name in type(self).model_fields
            if name not in _SECTIONS
        }
        section = _PROTOCOL_SECTION[self.protocol]
        values = getattr(self, section)
        for name in type(values).model_fields:
            out[f"{section}.{name}"] = _setting_text(getattr(values, name))
        return out

    def fingerprint(self) -> int:
        return fingerprint_of(self.description())


class NodeSettings(BaseSettings):
    """Everything one node needs to know at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    # -- cluster-wide (`ClusterSettings`; every member must agree) --
    cluster_id: ClusterId = DEFAULT_CLUSTER_ID
    protocol: ProtocolName = DEFAULT_PROTOCOL
    #: seconds per protocol tick; protocol timeouts are counted in ticks
    tick_interval_s: TickIntervalS = DEFAULT_TICK_INTERVAL_S
    #: client sessions kept by the state machine (least recently used evicted)
    max_sessions: MaxSessions = KvStateMachine.DEFAULT_MAX_SESSIONS
    #: largest envelope accepted or sent, in bytes
    max_envelope_bytes: MaxEnvelopeBytes = DEFAULT_MAX_ENVELOPE_BYTES
    #: Raft's settings; the shared ones (`RaftClusterSettings`) are cluster-wide, the rest this node's
    raft: RaftSettings = Field(default_factory=RaftSettings)
    #: Multi-Paxos's settings (with `protocol=paxos`), all cluster-wide
    paxos: PaxosSettings = Field(default_factory=PaxosSettings)
    #: PBFT's settings (with `protocol=pbft`), all cluster-wide
    pbft: PbftSettings = Field(default_factory=PbftSettings)

    # -- this node's own --
    #: this node's id (letters, digits, `_.-`; unique in the cluster)
    node_id: str = "n1"
    #: the other members of the cluster (comma-separated in the environment); empty for a single node.
    #: A joining node (`initial_cluster_state=existing`) lists the members it joins.
    peers: Annotated[tuple[str, ...], NoDecode] = ()
    #: `new`: a founding member of a new cluster; `existing`: joins a running cluster (never campaigns,
    #: learns its configuration from the leader), as etcd's `--initial-cluster-state`
    initial_cluster_state: Literal["new", "existing"] = "new"
    #: the cluster key that authenticates inter-node frames (HMAC-SHA256), at least 32 bytes of its UTF-8
    #: encoding (e.g. `openssl rand -base64 48`); from a Kubernetes Secret, never in code or logs
    auth_key: SecretStr | None = None
    #: overdue ticks replayed at once after a stall (the rest are skipped)
    max_catchup_ticks: int = Field(default=2, ge=1, le=100)
    #: applied entries between state-machine snapshots (log compaction)
    snapshot_every_entries: int = Field(default=10_000, ge=1)
    #: client commands in flight per node before new ones are refused
    max_pending_proposals: int = Field(default=10_000, ge=1, le=10_000_000)
    #: linearizable reads in flight per node before new ones are refused
    max_pending_reads: int = Field(default=10_000, ge=1, le=10_000_000)
    #: young-generation GC threshold of the node's process (0 keeps CPython's 700); see runtime/gc_tuning
    gc_gen0_threshold: int = Field(default=DEFAULT_GC_GEN0_THRESHOLD, ge=0, le=10_000_000)
    #: seeds every random choice (election timeouts, demo workloads), so one seed replays a run
    seed: int = 0
    queues: QueueSettings = Field(default_factory=QueueSettings)
    #: Kafka, for a node process (`dscore-node`); the embedded runtime does not read it
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    #: Redis, for a node process (`dscore-node`); the embedded runtime does not read it
    redis: RedisSettings = Field(default_factory=RedisSettings)

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, value: Any) -> Any:
        return split_ids(value)

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, value: str) -> str:
        if not _NODE_ID.match(value):
            raise ValueError("must be 1-63 characters: letters, digits, '_', '.', '-' (not first)")
        return value

    @field_validator("peers")
    @classmethod
    def _check_peers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_ids(value, "peer")

    @field_validator("auth_key")
    @classmethod
    def _check_auth_key(cls, value: SecretStr | None) -> SecretStr | None:
        return check_auth_key(value)

    @model_validator(mode="after")
    def _check_consistency(self) -> NodeSettings:
        if self.node_id in self.peers:
            raise ValueError(f"peers must list the OTHER members; it contains node_id {self.node_id!r}")
        if self.initial_cluster_state == "existing" and not self.peers:
            raise ValueError(
                f"{ENV_PREFIX}INITIAL_CLUSTER_STATE=existing needs {ENV_PREFIX}PEERS: the members to join"
            )
        if self.protocol == "pbft":
            check_pbft_members(len(self.members), self.pbft)
        if self.initial_cluster_state == "existing" and self.protocol in ("paxos", "pbft"):
            raise ValueError(
                f"{ENV_PREFIX}INITIAL_CLUSTER_STATE=existing: {ENV_PREFIX}PROTOCOL={self.protocol} runs a "
                "fixed set of members (only raft changes its membership at run time)"
            )
        if self.queues.inbound_batch_messages > self.queues.inbound_buffer_messages:
            raise ValueError("queues.inbound_batch_messages must not exceed queues.inbound_buffer_messages")
        for name in ("max_bytes_per_msg", "snapshot_chunk_bytes"):
            value = getattr(self.raft, name)
            if value >= self.max_envelope_bytes:
                raise ValueError(
                    f"{ENV_PREFIX}RAFT__{name.upper()} ({value}) must be smaller than "
                    f"{ENV_PREFIX}MAX_ENVELOPE_BYTES ({self.max_envelope_bytes}), or they could not be sent"
                )
        return self

    def cluster_settings(self) -> ClusterSettings:
        """The settings every member must agree on, read from this node's environment."""
        shared = {name: getattr(self, name) for name in ClusterSettings.model_fields if name not in _SECTIONS}
        return ClusterSettings(**shared, raft=self.raft.cluster_part(), paxos=self.paxos, pbft=self.pbft)

    def auth_key_bytes(self) -> bytes | None:
        """The cluster key for `dscore.core.codec` (None: frames are not authenticated)."""
        if self.auth_key is None:
            return None
        return check_key(self.auth_key.get_secret_value().encode("utf-8", "surrogatepass"))

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
    return load_settings_as(NodeSettings, **overrides)


SettingsT = TypeVar("SettingsT", bound=NodeSettings)


def _is_secret(location: tuple[int | str, ...]) -> bool:
    path = ".".join(str(part) for part in location)
    return any(path == secret or path.startswith(secret + ".") for secret in SECRET_SETTINGS)


def load_settings_as(settings_class: type[SettingsT], **overrides: Any) -> SettingsT:
    """`load_settings` for a subclass of `NodeSettings` (a service's own settings)."""
    try:
        return settings_class(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = _env_name(item["loc"]) if item["loc"] else "settings"
            value = item.get("input")
            # Never echo a secret, nor a setting we do not know (it may be a misspelt secret).
            hidden = isinstance(value, dict) or item["type"] == "extra_forbidden" or _is_secret(item["loc"])
            shown = "" if hidden else f" (got {value!r})"
            problems.append(f"{where}: {item['msg']}{shown}")
        raise ConfigError("invalid dscore settings:\n  " + "\n  ".join(problems)) from None
