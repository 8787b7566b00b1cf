"""Two Kafka protocol requests over a plain socket (ApiVersions v0, Metadata v4), so the infrastructure
tests can ask the broker itself without a client library. Layouts from Kafka's protocol guide."""

from __future__ import annotations

import socket
import struct

_CLIENT_ID = b"dscore-infra-test"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take(">h")
        if size < 0:
            return None
        text = self.data[self.at : self.at + size].decode()
        self.at += size
        return text


def _request(address: tuple[str, int], api_key: int, version: int, body: bytes) -> _Reader:
    correlation_id = 7
    header = struct.pack(">hhih", api_key, version, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    message = header + body
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(message)) + message)
        size = struct.unpack(">i", _read_exactly(sock, 4))[0]
        reader = _Reader(_read_exactly(sock, size))
    assert reader.take(">i") == correlation_id
    return reader


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def api_versions(address: tuple[str, int]) -> dict[int, tuple[int, int]]:
    """api key -> (min version, max version) the broker serves."""
    reader = _request(address, 18, 0, b"")
    assert reader.take(">h") == 0, "ApiVersions error code"
    versions = {}
    for _ in range(reader.take(">i")):
        key, low, high = reader.take(">h"), reader.take(">h"), reader.take(">h")
        versions[key] = (low, high)
    return versions


def metadata(address: tuple[str, int], topics: list[str]) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Metadata v4 with allow_auto_topic_creation=true: the brokers (host, port) and each topic's error
    code (0 = exists, 3 = UNKNOWN_TOPIC_OR_PARTITION)."""
    body = struct.pack(">i", len(topics))
    for topic in topics:
        body += struct.pack(">h", len(topic)) + topic.encode()
    body += b"\x01"
    reader = _request(address, 3, 4, body)
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        reader.take(">i")  # node id
        host = reader.string()
        port = reader.take(">i")
        reader.string()  # rack
        brokers.append((host or "", port))
    reader.string()  # cluster id
    reader.take(">i")  # controller id
    errors = {}
    for _ in range(reader.take(">i")):
        error = reader.take(">h")
        name = reader.string() or ""
        reader.take(">b")  # is_internal
        for _ in range(reader.take(">i")):
            reader.take(">h"), reader.take(">i"), reader.take(">i")
            for _ in range(2):  # replicas, isr
                for _ in range(reader.take(">i")):
                    reader.take(">i")
        errors[name] = error
    return brokers, errors


def broker_configs(address: tuple[str, int], broker_id: int, names: list[str]) -> dict[str, str | None]:
    """DescribeConfigs v1 of one broker: the effective value of each named setting."""
    body = struct.pack(">ib", 1, 4)  # one resource, of type BROKER
    resource = str(broker_id).encode()
    body += struct.pack(">h", len(resource)) + resource + struct.pack(">i", len(names))
    for name in names:
        body += struct.pack(">h", len(name)) + name.encode()
    body += b"\x00"  # include_synonyms
    reader = _request(address, 32, 1, body)
    reader.take(">i")  # throttle_time_ms
    values: dict[str, str | None] = {}
    for _ in range(reader.take(">i")):
        error = reader.take(">h")
        message = reader.string()
        assert error == 0, f"DescribeConfigs error {error}: {message}"
        reader.take(">b"), reader.string()  # resource type and name
        for _ in range(reader.take(">i")):
            name = reader.string() or ""
            values[name] = reader.string()
            reader.take(">b"), reader.take(">b"), reader.take(">b")  # read_only, source, is_sensitive
            for _ in range(reader.take(">i")):  # synonyms (none asked for)
                reader.string(), reader.string(), reader.take(">b")
    return values
