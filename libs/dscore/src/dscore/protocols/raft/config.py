"""Raft's settings: `RaftConfig` (every duration in ticks) and how reads are confirmed (`ReadOnlyOption`).

A bad setting raises `ConfigError` when the config is built, never later inside the core.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dscore.core.errors import ConfigError

__all__ = ["RaftConfig", "ReadOnlyOption"]


class ReadOnlyOption(enum.Enum):
    #: confirm leadership with a heartbeat round per batch of reads (dissertation 6.4)
    READ_INDEX = "read_index"
    #: serve at once while the leader's check-quorum lease holds (dissertation 6.4.1); see `readonly`
    LEASE = "lease"


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Raft's knobs. Every duration is in ticks."""

    #: base election timeout; each wait is drawn from [election_timeout_ticks, 2*election_timeout_ticks)
    election_timeout_ticks: int = 10
    #: a leader broadcasts a heartbeat every `heartbeat_ticks` (must be < election_timeout_ticks)
    heartbeat_ticks: int = 1
    #: appends in flight per follower in REPLICATE state
    max_inflight_msgs: int = 256
    #: entries per AppendEntries
    max_entries_per_msg: int = 512
    #: payload bytes per AppendEntries (at least one entry is always sent)
    max_bytes_per_msg: int = 1 << 20
    #: bytes of snapshot data per InstallSnapshot chunk
    snapshot_chunk_bytes: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.READ_INDEX
    #: lease length for `ReadOnlyOption.LEASE`; None means `election_timeout_ticks - 2`
    lease_ticks: int | None = None
    #: largest snapshot a follower accepts from a leader: the bound of its InstallSnapshot receive
    #: buffer (a transfer that announces more is refused and counted; see `snapshot`)
    max_snapshot_bytes: int = 1 << 30
    #: a leader whose commit index moved sends each up-to-date follower an append with no entries just to
    #: say so (the paper's and etcd's behaviour). Off, followers learn it from the next append with
    #: entries or the next heartbeat (which carries it too): their applied state (stale reads, their
    #: snapshots) lags by at most one heartbeat interval, and clients see nothing, as the leader answers
    #: them. Safety does not depend on it either way. On Kafka each such append and its response are two
    #: records per follower per commit, ~40% of what a loaded cluster moved (bench/etcd), so the node
    #: service turns it off (`dscore.settings.RaftSettings`).
    commit_only_appends: bool = True

    def __post_init__(self) -> None:
        _check_int("election_timeout_ticks", self.election_timeout_ticks, 2)
        _check_int("heartbeat_ticks", self.heartbeat_ticks, 1)
        if self.heartbeat_ticks >= self.election_timeout_ticks:
            raise ConfigError(
                f"heartbeat_ticks ({self.heartbeat_ticks}) must be smaller than election_timeout_ticks "
                f"({self.election_timeout_ticks})"
            )
        _check_int("max_inflight_msgs", self.max_inflight_msgs, 1)
        _check_int("max_entries_per_msg", self.max_entries_per_msg, 1)
        _check_int("max_bytes_per_msg", self.max_bytes_per_msg, 1)
        _check_int("snapshot_chunk_bytes", self.snapshot_chunk_bytes, 1)
        _check_int("max_snapshot_bytes", self.max_snapshot_bytes, 1)
        for name in ("pre_vote", "check_quorum", "commit_only_appends"):
            if type(getattr(self, name)) is not bool:
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.read_only_option, ReadOnlyOption):
            raise ConfigError(f"read_only_option must be a ReadOnlyOption, got {self.read_only_option!r}")
        if self.lease_ticks is not None:
            _check_int("lease_ticks", self.lease_ticks, 1)
            if self.lease_ticks >= self.election_timeout_ticks:
                raise ConfigError(
                    f"lease_ticks ({self.lease_ticks}) must be smaller than election_timeout_ticks "
                    f"({self.election_timeout_ticks})"
                )
        if self.read_only_option is ReadOnlyOption.LEASE:
            if not self.check_quorum:
                raise ConfigError("read_only_option=LEASE needs check_quorum=True (leader stickiness)")
            if self.effective_lease_ticks < 1:
                raise ConfigError(
                    f"election_timeout_ticks={self.election_timeout_ticks} leaves no room for a lease; "
                    "raise it or set lease_ticks"
                )

    @property
    def effective_lease_ticks(self) -> int:
        return self.lease_ticks if self.lease_ticks is not None else self.election_timeout_ticks - 2
