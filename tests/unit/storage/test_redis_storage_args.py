"""RedisStorage checks what it is given before any I/O: the client here points at a port nobody serves,
so a check that ran too late would show up as StorageUnavailableError instead."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dscore.core.errors import LocalError
from dscore.protocols.contract import EntryKind, LogEntry, Snapshot
from dscore.storage.base import WriteBatch
from dscore.storage.redis import RedisDurability, RedisStorage


@pytest.fixture
async def storage() -> AsyncIterator[RedisStorage]:
    storage = RedisStorage.from_url("redis://127.0.0.1:1/0", "dscore:n1", connect_timeout_s=0.1)
    yield storage
    await storage.close()


def entry(index: int) -> LogEntry:
    return LogEntry(index, 1, EntryKind.NORMAL, b"")


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b", "a b", "a\nb"])
def test_key_prefixes_that_would_break_the_hash_tag_are_refused(prefix: str) -> None:
    with pytest.raises(LocalError, match="prefix"):
        RedisStorage.from_url("redis://127.0.0.1:1/0", prefix)


def test_every_key_of_a_node_shares_one_hash_tag(storage: RedisStorage) -> None:
    assert storage.keys == (
        "{dscore:n1}:state",
        "{dscore:n1}:log",
        "{dscore:n1}:marks",
        "{dscore:n1}:positions",
    )


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (WriteBatch(entries=(entry(2), entry(2))), "ascend"),
        (WriteBatch(entries=(entry(3), entry(2))), "ascend"),
        (WriteBatch(entries=(entry(-1),)), "entry index"),
        (WriteBatch(entries=(entry(2**53),)), "entry index"),
        (WriteBatch(snapshot=Snapshot(-1, 1, b"")), "snapshot index"),
        (WriteBatch(input_positions={"in/0": -1}), "input position"),
        (WriteBatch(input_positions={"in/0": True}), "input position"),  # a bool is not a position
        (WriteBatch(dedup_marks={"n2": (1, -5)}), "mark"),
        (WriteBatch(dedup_marks={"": (1, 5)}), "sender"),
        (WriteBatch(input_positions={"": 5}), "channel"),
    ],
)
async def test_a_malformed_batch_is_refused_before_any_io(
    storage: RedisStorage, batch: WriteBatch, message: str
) -> None:
    with pytest.raises(LocalError, match=message):
        await storage.save(batch)
    assert storage.saves == 0


async def test_an_empty_batch_needs_no_server(storage: RedisStorage) -> None:
    await storage.save(WriteBatch())
    assert storage.saves == 0


@pytest.mark.parametrize(
    ("appendonly", "appendfsync", "safe", "words"),
    [
        ("yes", "always", True, "every acknowledged write is on disk"),
        ("yes", "everysec", False, "last second"),
        ("yes", "no", False, "power cut"),
        ("no", "always", False, "no append-only file"),
        ("", "", False, "unknown"),
    ],
)
def test_durability_is_described_in_words(appendonly: str, appendfsync: str, safe: bool, words: str) -> None:
    durability = RedisDurability(appendonly, appendfsync)
    assert durability.fsyncs_every_write is safe and words in durability.describe()
