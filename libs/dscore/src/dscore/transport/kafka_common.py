"""What both Kafka transports share: where to resume reading, and the bound on remembered destinations."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.transport.kafka_config import StartWithoutPosition

log = logging.getLogger("dscore.transport.kafka")

#: destinations whose topic name and metadata an endpoint remembers (a bound: endpoints come and go)
MAX_REMEMBERED_DESTINATIONS = 4_096


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
