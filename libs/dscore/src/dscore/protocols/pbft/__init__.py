"""PBFT (Castro and Liskov, OSDI '99 / TOCS 2002) as a sans-I/O protocol core; see `node`."""

from dscore.protocols.pbft.auth import PairKeys, pair_key
from dscore.protocols.pbft.config import PbftConfig
from dscore.protocols.pbft.node import PbftNode, PbftRole

__all__ = ["PairKeys", "PbftConfig", "PbftNode", "PbftRole", "pair_key"]
