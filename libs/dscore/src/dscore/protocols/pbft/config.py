"""PBFT's settings, all in ticks and sequence numbers (no clock)."""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PbftConfig:
    #: K: a checkpoint every this many sequence numbers (Castro and Liskov, section 4.3)
    checkpoint_interval: int = 8
    #: L = log_size_checkpoints * K: the high water mark is h + L (section 4.3)
    log_size_checkpoints: int = 2
    #: a backup waiting this long for a request it knows of to execute suspects the primary (section 4.4)
    view_change_timeout_ticks: int = 30
    #: how often a replica tells its peers how far it got, so lost messages are made good (status)
    status_every_ticks: int = 10
    #: a replica in a view change resends its VIEW-CHANGE this often until the new view is installed
    view_change_resend_ticks: int = 15
    #: requests a primary queues beyond its high water mark, and forwarded requests a backup watches
    max_queued_requests: int = 1_024
    #: committed entries sent to a lagging peer per status message
    max_catch_up_entries: int = 16
    #: f, the Byzantine replicas tolerated; None: the most n allows, (n - 1) // 3. Quorums are n - f
    #: (2f + 1 when n = 3f + 1). Setting f = n / 3 (n = 3f) is the unsafe configuration the simulator
    #: shows breaking.
    faults_tolerated: int | None = None
    #: overrides the quorum size (only to plant the "quorums of 2f" bug in tests); None: n - f
    quorum_override: int | None = None
    #: the view change carries and checks prepared certificates; False plants the bug where it drops
    #: them (tests only)
    view_change_keeps_prepared: bool = True

    def __post_init__(self) -> None:
        for name in (
            "checkpoint_interval",
            "log_size_checkpoints",
            "view_change_timeout_ticks",
            "status_every_ticks",
            "view_change_resend_ticks",
            "max_queued_requests",
            "max_catch_up_entries",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"PbftConfig.{name} must be a positive integer, got {value!r}")
        if self.log_size_checkpoints < 2:
            raise ConfigError(
                "PbftConfig.log_size_checkpoints must be at least 2 (the window spans a checkpoint)"
            )
        if self.faults_tolerated is not None and self.faults_tolerated < 0:
            raise ConfigError("PbftConfig.faults_tolerated must be >= 0")

    @property
    def log_size(self) -> int:
        return self.checkpoint_interval * self.log_size_checkpoints
