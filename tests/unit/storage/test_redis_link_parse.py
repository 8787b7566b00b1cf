"""The save connection's reply parser (`dscore.storage.redis_link._parse`): each reply type a save can
get, replies split across reads, and the errors redis-py would raise for the same reply."""

from __future__ import annotations

import pytest
from redis.exceptions import BusyLoadingError, NoScriptError, ResponseError

from dscore.storage.redis_link import _parse, _Unexpected


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b":1\r\n", 1), (b":0\r\n", 0), (b"+OK\r\n", b"OK"), (b"_\r\n", None), (b"$-1\r\n", None),
     (b"$5\r\nhello\r\n", b"hello"), (b"$0\r\n\r\n", b"")],
)  # fmt: skip
def test_each_result_type_is_read_whole(raw: bytes, value: object) -> None:
    assert _parse(bytearray(raw + b":7\r\n")) == (value, len(raw))


@pytest.mark.parametrize(
    ("raw", "kind", "text"),
    [
        (b"-DSCORE_FENCED save 1:2 is older than 1:3\r\n", ResponseError, "DSCORE_FENCED save 1:2 is older"),
        (b"-NOSCRIPT No matching script. Please use EVAL.\r\n", NoScriptError, "No matching script"),
        (b"-LOADING Redis is loading the dataset in memory\r\n", BusyLoadingError, "Redis is loading"),
        (b"!21\r\nSYNTAX invalid syntax\r\n", ResponseError, "invalid syntax"),
    ],
)
def test_an_error_reply_is_the_exception_redis_py_raises_for_it(
    raw: bytes, kind: type[Exception], text: str
) -> None:
    parsed = _parse(bytearray(raw))
    assert parsed is not None
    error, used = parsed
    assert type(error) is kind and text in str(error) and used == len(raw)


@pytest.mark.parametrize("raw", [b"", b":1", b":1\r", b"$5\r\nhel", b"$5\r\nhello\r", b"!3\r\nab"])
def test_a_reply_not_all_there_is_not_read(raw: bytes) -> None:
    assert _parse(bytearray(raw)) is None


@pytest.mark.parametrize("raw", [b"*2\r\n:1\r\n:2\r\n", b">2\r\n", b":x\r\n", b"$abc\r\n", b"%1\r\n"])
def test_a_reply_a_save_never_gets_is_unexpected(raw: bytes) -> None:
    parsed = _parse(bytearray(raw))
    assert parsed is not None and isinstance(parsed[0], _Unexpected)
