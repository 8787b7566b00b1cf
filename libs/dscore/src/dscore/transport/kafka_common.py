"""What both Kafka transports share: where to resume reading, the read mark that tells redeliveries, and
the bound on remembered destinations.

Redeliveries. The stored positions are the only resume point, so a node that crashed re-reads every
record after its last save, including records it had read but whose effects were not durable yet. To
count those, each commit of Kafka's offsets (a hint, see `dscore.transport.kafka`) carries the highest
offset the endpoint has handed to its runtime as the commit's metadata (`read_mark`); the next start
reads it back (`dscore.transport.kafka_layout.committed_read_mark`) and every record delivered at or
below it is counted in `KafkaTransportStats.redelivered`. The count is a lower bound: records read after
the last commit (at most `commit_interval_s` of them) are redelivered without being counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.transport.kafka_config import StartWithoutPosition

log = logging.getLogger("dscore.transport.kafka")

#: destinations whose topic name and metadata an endpoint remembers (a bound: endpoints come and go)
MAX_REMEMBERED_DESTINATIONS = 4_096


#: the commit metadata's prefix; anything else in the metadata (another tool's commit) is ignored
READ_MARK_PREFIX = "dscore-read="


def read_mark(highest_read: int) -> str:
    """The commit metadata that records `highest_read` (the highest offset handed to the runtime)."""
    return f"{READ_MARK_PREFIX}{highest_read}"


def parse_read_mark(metadata: str | None) -> int | None:
    """The highest offset read before, from a commit's metadata; None when absent or not ours. Never
    raises: the metadata is a hint anybody with access to the group may have written."""
    if not metadata or not metadata.startswith(READ_MARK_PREFIX):
        return None
    # librdkafka (confluent-kafka 2.x) commits the metadata with its C string's terminating NUL
    metadata = metadata.removesuffix("\x00")
    digits = metadata[len(READ_MARK_PREFIX) :]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        return None
    return int(digits)


def resume_offset(
    stored: int | None, begin: int, end: int, without_position: StartWithoutPosition
) -> tuple[int, int]:
    """The offset to read first and how many unread records retention deleted, given the stored position
    (None: none stored) and the inbox's first retained and next offsets. Shared by both clients."""
    if stored is None:
        return (begin if without_position is StartWithoutPosition.EARLIEST else end), 0
    following = stored + 1
    if following < begin:
        return begin, begin - following
    if following > end:
        # The log is shorter than what this endpoint already consumed: the topic was deleted and created
        # again (or the broker lost data). Everything in it is unread.
        return begin, 0
    return following, 0


def check_resume_after(channel: str, resume_after: Mapping[str, int], endpoint: NodeId) -> int | None:
    """This inbox's stored position (or None); other channels are logged and ignored."""
    foreign = sorted(c for c in resume_after if c != channel)
    if foreign:
        log.warning("%s: ignoring stored positions of channels it does not read: %s", endpoint, foreign)
    stored = resume_after.get(channel)
    if stored is not None and (type(stored) is not int or stored < -1):
        raise ConfigError(f"stored position of {channel} must be an offset >= -1, got {stored!r}")
    return stored
