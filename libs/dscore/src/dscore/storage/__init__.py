"""Stable storage behind one atomic write per `Ready`: the `Storage` protocol and its in-memory form."""

from dscore.storage.base import DedupMark, Storage, StoredState, WriteBatch
from dscore.storage.memory import MemoryStorage

__all__ = ["DedupMark", "MemoryStorage", "Storage", "StoredState", "WriteBatch"]
