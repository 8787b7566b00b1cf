"""Byte transports between nodes' inboxes: the `Transport` protocol and the in-memory network."""

from dscore.transport.base import Delivery, OutboundFrame, Transport
from dscore.transport.memory import MemoryNetwork, MemoryTransport

__all__ = ["Delivery", "MemoryNetwork", "MemoryTransport", "OutboundFrame", "Transport"]
