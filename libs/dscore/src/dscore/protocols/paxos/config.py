"""Multi-Paxos settings: `PaxosConfig` (every duration in ticks). A bad setting raises `ConfigError` when
the config is built, never later inside the core."""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.errors import ConfigError

__all__ = ["PaxosConfig"]


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class PaxosConfig:
    #: a follower that heard nothing from the leader for a wait drawn from [timeout, 2*timeout) starts
    #: phase 1; a proposer preempted by a higher ballot backs off for a wait drawn from the same range
    election_timeout_ticks: int = 10
    #: the leader sends a heartbeat (its commit index, a read round) every `heartbeat_ticks`
    heartbeat_ticks: int = 1
    #: phase 2 pipeline: the leader has accepts in flight for at most this many slots above its commit
    #: index; later proposals get a slot at once and wait for the window to slide
    window_slots: int = 64
    #: an acceptor takes accepts for at most this many slots above its own chosen prefix (bounds what it
    #: keeps open and reports in phase 1); must be >= window_slots
    max_open_slots: int = 256
    #: entries per Accept or Learn message
    max_entries_per_msg: int = 64
    #: unanswered accepts and catch-up requests are sent again after this many ticks
    retry_ticks: int = 3

    def __post_init__(self) -> None:
        _check_int("election_timeout_ticks", self.election_timeout_ticks, 2)
        _check_int("heartbeat_ticks", self.heartbeat_ticks, 1)
        if self.heartbeat_ticks >= self.election_timeout_ticks:
            raise ConfigError(
                f"heartbeat_ticks ({self.heartbeat_ticks}) must be smaller than election_timeout_ticks "
                f"({self.election_timeout_ticks})"
            )
        _check_int("window_slots", self.window_slots, 1)
        _check_int("max_open_slots", self.max_open_slots, 1)
        if self.max_open_slots < self.window_slots:
            raise ConfigError(
                f"max_open_slots ({self.max_open_slots}) must be >= window_slots ({self.window_slots})"
            )
        _check_int("max_entries_per_msg", self.max_entries_per_msg, 1)
        _check_int("retry_ticks", self.retry_ticks, 1)
