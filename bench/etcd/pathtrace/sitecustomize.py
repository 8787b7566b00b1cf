"""Timestamps along a write's path inside the node and gateway processes, for `bench/etcd/path_trace.py`.

Python imports `sitecustomize` at start-up from `PYTHONPATH`. This one does nothing unless
`PATHTRACE_OUT` names a folder and the process is a `dscore-node` or a `dscore-gateway`. Then it wraps
a few methods of the process as they are imported. Each wrapper records (wall clock, event) in memory
only, and the list is written to `PATHTRACE_OUT/<role><pid>.txt` when the process exits (a SIGTERM
stop). The clock is the wall clock, `time.time()`: on one machine the processes' events line up.

Events:
- `th_poll ts=<ms>`: the consumer thread got a record from librdkafka; `ts` is the producer's
  timestamp.
- `loop_arrived n=<records>`: the event loop took the batch.
- `feed_start` / `feed_end`: the runtime fed the executor.
- `poll_work`: the executor returned work.
- `save_start` / `save_end`: around `RedisStorage.save`.
- `send n=<frames> -><destinations>`: a send to the transport.

A tool for measuring, not part of dscore: it patches private methods. When one of them is renamed,
`path_trace.py` reports that no write could be followed.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_OUT = os.environ.get("PATHTRACE_OUT")
_ROLES = ("dscore-node", "dscore-gateway")
_events: list[tuple[float, str]] = []


def _record(what: str) -> None:
    _events.append((time.time(), what))


def _dump(path: str, name: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(f"{t:.6f} {name} {what}\n" for t, what in _events)


def _patch() -> None:
    """Wrap the methods (imported here: they exist once the Kafka transport is imported)."""
    from dscore.replica import executor as executor_module
    from dscore.runtime import node as node_module
    from dscore.storage import redis as redis_module
    from dscore.transport import kafka_confluent

    consumer_class = kafka_confluent.Consumer

    class TracedConsumer:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._consumer = consumer_class(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._consumer, name)

        def poll(self, *args: Any) -> Any:
            message = self._consumer.poll(*args)
            if message is not None and message.error() is None:
                _record(f"th_poll ts={message.timestamp()[1]}")
            return message

    kafka_confluent.Consumer = TracedConsumer  # type: ignore[misc]
    transport = kafka_confluent.ConfluentKafkaTransport
    arrived, send = transport._arrived, transport.send

    def traced_arrived(self: Any, batch: list[Any]) -> None:
        _record(f"loop_arrived n={len(batch)}")
        arrived(self, batch)

    async def traced_send(self: Any, frames: Sequence[Any]) -> None:
        _record(f"send n={len(frames)} ->{','.join(str(f.destination) for f in frames)}")
        await send(self, frames)

    transport._arrived = traced_arrived  # type: ignore[method-assign]
    transport.send = traced_send  # type: ignore[method-assign]

    save = redis_module.RedisStorage.save

    async def traced_save(self: Any, batch: Any) -> None:
        _record("save_start")
        await save(self, batch)
        _record("save_end")

    redis_module.RedisStorage.save = traced_save  # type: ignore[method-assign]

    feed = node_module.NodeRuntime._feed

    def traced_feed(self: Any, executor: Any) -> None:
        _record("feed_start")
        feed(self, executor)
        _record("feed_end")

    node_module.NodeRuntime._feed = traced_feed  # type: ignore[method-assign]

    poll = executor_module.Executor.poll

    def traced_poll(self: Any) -> Any:
        work = poll(self)
        if work is not None:
            _record("poll_work")
        return work

    executor_module.Executor.poll = traced_poll  # type: ignore[method-assign]


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches right after `dscore.transport.kafka_confluent` is first imported, then steps aside."""

    target = "dscore.transport.kafka_confluent"

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            try:
                _patch()
            except Exception as error:  # the trace is lost, the process runs on
                _record(f"patch_failed {error!r}")

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _OUT and sys.argv and os.path.basename(sys.argv[0]) in _ROLES:
    _name = os.path.basename(sys.argv[0]).removeprefix("dscore-") + str(os.getpid())
    atexit.register(_dump, os.path.join(_OUT, f"{_name}.txt"), _name)
    sys.meta_path.insert(0, _PatchOnImport())
