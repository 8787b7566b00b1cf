"""`NoopCore`: a protocol core that never does anything (what a driver costs on its own)."""

from __future__ import annotations

import enum

from dscore.core.envelope import Envelope
from dscore.core.errors import NotLeaderError
from dscore.core.ids import NodeId
from dscore.protocols.contract import EMPTY_READY, Ready


class NoopRole(enum.Enum):
    PEER = "peer"


class NoopCore:
    """A core that never does anything: what the simulator costs on its own."""

    def __init__(self, node_id: NodeId) -> None:
        self._node_id = node_id

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def leader_id(self) -> NodeId | None:
        return None

    @property
    def role(self) -> NoopRole:
        return NoopRole.PEER

    def step(self, envelope: Envelope) -> None:
        return None

    def tick(self) -> None:
        return None

    def propose(self, data: bytes) -> int:
        raise NotLeaderError("noop has no log")

    def read_index(self, request_id: int) -> None:
        raise NotLeaderError("noop has no state machine")

    def has_ready(self) -> bool:
        return False

    def ready(self) -> Ready:
        return EMPTY_READY

    def advance(self, ready: Ready) -> None:
        return None
