"""`dscore-node`: one replica per process, on Kafka (transport) and Redis (storage).

Start-up, in order (any failure is one log line naming the cause, and exit status 1; a bad setting is
exit status 2, before anything is contacted):

1. read the settings (`dscore_node.settings`); log what the node runs with (never a secret);
2. check that its Redis fsyncs every write (`appendfsync always`), unless
   `DSCORE_REDIS__ALLOW_UNSAFE_DURABILITY=true`: Raft's safety rests on a vote or a log entry being on
   disk before the message that announces it leaves, and Redis with `everysec` acknowledges writes a
   power cut can still take back;
3. create the inbox topics: a founding node (`DSCORE_INITIAL_CLUSTER_STATE=new`) creates every member's,
   so its first messages to a peer that is still starting are not dropped; a joining node its own only;
4. listen on HTTP (`/metrics`, `/healthz`, `/readyz`, `/debug/state`);
5. run the runtime under `dscore.runtime.process.serve`: SIGTERM / SIGINT stop it cleanly (a leader
   hands leadership over first) with exit status 0; a failure of the runtime (a `FencedError` or
   `StorageUnavailableError` from a save, a bug) is logged and exits 1, for the supervisor to restart
   the process from what Redis holds. SIGKILL loses nothing durable: every save is acknowledged by Redis
   before what it announces is sent.

A node whose Redis lost its state (wiped, or restored from an old copy) starts on a new storage epoch; its
first message to its peers says so (`StorageHello`), they refuse it (everything it sends is dropped as
`stale_storage`, so no vote of its new life counts) and tell it (`IncarnationNotice`), and it exits with
status 3 (`EXIT_STORAGE_WENT_BACK`) and one error line naming `StorageWentBackError`. A node whose Redis
loses its state while it runs finds out at its next save, which the script refuses (`StorageWipedError`),
and exits with status 3 as well. Restarting it changes nothing: restore its Redis, or remove it from the
cluster and add it back under a new id.

Metrics: `dscore.metrics` defines them all; the runtime is the `NodeSource` of a `NodeCollector` (and
pushes persist and commit latencies into its handle), the fault wrapper feeds a
`TransportFaultCollector`, and prometheus-client's process, platform and GC collectors add CPU and memory.

Transport faults (`DSCORE_FAULTS__ENABLED`, on by default): the Kafka transport is wrapped in
`dscore.transport.faults.FaultyTransport`, which reads the control topic `dscore.<cluster>.control` and
obeys commands with a valid HMAC under the cluster key (omission, delay, partition between named nodes;
services/chaos publishes them). A cluster without a key never reads the topic. Inside it sits the
`/admin/consume/stop` gate (`ConsumeGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import logging
import os
import random
import signal
import sys

import uvloop

from dscore.core.errors import ConfigError
from dscore.runtime.cluster import RaftCoreFactory
from dscore.runtime.errors import StorageWentBackError
from dscore.runtime.gc_tuning import tune_gc
from dscore.runtime.node import NodeRuntime
from dscore.runtime.process import EXIT_FAILED, serve
from dscore.runtime.protocols import core_factory, stack_protocol
from dscore.storage.redis import RedisStorage, StorageError, StorageWipedError
from dscore.transport.base import Transport
from dscore.transport.faults import FaultyTransport
from dscore.transport.faults_kafka import KafkaControlSource
from dscore.transport.kafka import open_kafka_transport
from dscore.transport.kafka_layout import KafkaUnavailableError, ensure_topics
from dscore_node.http import build_app, start_http
from dscore_node.instruments import ConsumeGate
from dscore_node.logs import configure_logging, redact_url
from dscore_node.metrics import LeadershipLog, build_registry
from dscore_node.settings import ServiceSettings, load_service_settings

log = logging.getLogger("dscore_node")

#: exit status for settings that cannot work (the supervisor should not just restart it)
EXIT_BAD_SETTINGS = 2
#: exit status of a node whose storage went back in time (wiped or restored): restarting cannot help
EXIT_STORAGE_WENT_BACK = 3
#: the longest a failed node waits for its Kafka clients to close before it exits
_CLOSE_TIMEOUT_S = 10.0


def describe(settings: ServiceSettings) -> str:
    """What the node runs with, for its first log line: no secret (the key only as set / not set)."""
    redis_url = settings.redis.url.get_secret_value() if settings.redis.url is not None else "-"
    prefix = settings.redis.prefix_for(settings.cluster_id, settings.node_id)
    return (
        f"node {settings.node_id} of cluster {settings.cluster_id} ({settings.protocol}, "
        f"{settings.initial_cluster_state}): peers {','.join(settings.peers) or '-'}; "
        f"kafka {settings.kafka.bootstrap_servers} ({settings.kafka.client.value}); "
        f"redis {redact_url(redis_url)} prefix {prefix}; "
        f"auth {'on' if settings.auth_key is not None else 'OFF (DSCORE_INSECURE_NO_AUTH)'}; "
        f"transport faults {'obeyed' if faults_enabled(settings) else 'off'}; "
        f"tick {settings.tick_interval_s}s; cluster settings fingerprint "
        f"{settings.cluster_settings().fingerprint():016x}"
    )


def faults_enabled(settings: ServiceSettings) -> bool:
    """Obey the control topic: asked for, and commands can be authenticated (a cluster key is set)."""
    return settings.faults.enabled and settings.auth_key is not None


def dump_tasks() -> None:
    """Log each pending asyncio task with the stack it waits at."""
    tasks = asyncio.all_tasks()
    lines = [f"{len(tasks)} asyncio tasks:"]
    for task in tasks:
        stream = io.StringIO()
        task.print_stack(limit=12, file=stream)
        lines.append(stream.getvalue().rstrip())
    log.warning("%s", "\n".join(lines))


async def run(settings: ServiceSettings) -> int:
    """Run one node until SIGTERM (0) or a failure (1); see the module docstring."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # `kill -USR2 <pid>`: every asyncio task's stack to the log (SIGUSR1 shows only the threads, and a
    # node stuck on an await has an idle event loop there)
    loop.add_signal_handler(signal.SIGUSR2, dump_tasks)
    log.info("starting %s", describe(settings))
    protocol = stack_protocol(settings.protocol)
    # Every protocol through the same registry, executor, transport and storage; PBFT's pair keys come
    # from the cluster key (derived, never logged).
    make_core = core_factory(
        settings.protocol,
        auth_key=settings.auth_key_bytes(),
        raft=settings.raft.raft_config(),
        paxos=settings.paxos.paxos_config(),
        pbft=settings.pbft.pbft_config(),
    )
    assert settings.redis.url is not None
    kafka_config = settings.kafka.transport_config(
        settings.cluster_id, max_record_bytes=settings.max_envelope_bytes
    )
    storage = RedisStorage.from_url(
        settings.redis.url.get_secret_value(),
        settings.redis.prefix_for(settings.cluster_id, settings.node_id),
        socket_timeout_s=settings.redis.socket_timeout_s,
        connect_timeout_s=settings.redis.connect_timeout_s,
    )
    kafka = open_kafka_transport(kafka_config, settings.node_id)
    faulty: FaultyTransport | None = None
    inner: Transport = kafka
    if faults_enabled(settings):
        faulty = FaultyTransport(
            kafka,
            settings.node_id,
            # omissions draw from their own stream: a seed replays which frames a fault drops
            rng=random.Random(f"{settings.seed}/faults/{settings.node_id}"),
            control=KafkaControlSource(kafka_config, settings.node_id),
            auth_key=settings.auth_key_bytes(),
        )
        inner = faulty
    elif settings.faults.enabled:
        log.warning("transport faults off: commands cannot be authenticated without DSCORE_AUTH_KEY")
    transport = ConsumeGate(inner)
    runner = None
    try:
        durability = await storage.durability(allow_unsafe=settings.redis.allow_unsafe_durability)
        if not durability.fsyncs_every_write:
            log.warning(
                "UNSAFE durability allowed by DSCORE_REDIS__ALLOW_UNSAFE_DURABILITY: %s",
                durability.describe(),
            )
        joining = settings.initial_cluster_state == "existing"
        inboxes = (
            settings.members if settings.kafka.create_peer_inboxes and not joining else (settings.node_id,)
        )
        created = await ensure_topics(kafka_config, inboxes)
        if created:
            log.info("created inbox topics %s", ", ".join(created))
        if joining:
            assert isinstance(make_core, RaftCoreFactory)  # the settings refuse `existing` for the others
            make_core = make_core.joining()
        registry, nodes, faults = build_registry()
        leadership = LeadershipLog()
        runtime = NodeRuntime(
            settings.node_id,
            settings.members,
            make_core,
            transport,
            storage,
            config=settings.runtime_config(),
            seed=settings.seed,
            on_change=leadership.observe,
            known_peers=settings.peers if joining else (),
            auth_key=settings.auth_key_bytes(),
            cluster_settings=settings.cluster_settings().description(),
        )
        runtime.metrics = nodes.add_node(
            settings.node_id, runtime, protocol=protocol.name, roles=protocol.roles
        )
        if faulty is not None:
            faults.add_node(settings.node_id, faulty)
        app = build_app(
            runtime,
            transport,
            registry,
            admin=settings.http.admin,
            admin_token=settings.http.admin_token,
            faults=faulty,
        )
        runner, port = await start_http(app, settings.http.host, settings.http.port)
        log.info("http listening on %s:%d", settings.http.host, port)
        status = await serve(
            runtime,
            stop=stop,
            handle_signals=False,
            handover_timeout_s=settings.handover_timeout_s,
            restart_cannot_help=(StorageWentBackError, StorageWipedError),
        )
        if isinstance(runtime.failure, (StorageWentBackError, StorageWipedError)):
            name = type(runtime.failure).__name__
            log.error("node %s refuses to run: %s: %s", settings.node_id, name, runtime.failure)
            return EXIT_STORAGE_WENT_BACK
        return status
    except (ConfigError, StorageError, KafkaUnavailableError) as error:
        log.error("node %s cannot run: %s: %s", settings.node_id, type(error).__name__, error)
        return EXIT_FAILED
    finally:
        if runner is not None:
            await runner.cleanup()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await transport.close()
        await storage.close()


def main() -> int:
    # `kill -USR1 <pid>` writes every thread's stack to stderr (the log): a stuck node explains itself
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        settings = load_service_settings()
    except ConfigError as error:
        configure_logging(os.environ.get("DSCORE_NODE_ID", "?"))
        log.error("%s", error)
        return EXIT_BAD_SETTINGS
    configure_logging(settings.node_id, settings.log_level)
    tune_gc(settings.gc_gen0_threshold)
    try:
        # uvloop: the event loop in C (a node wakes for every Kafka batch, Redis reply and tick)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
            return loop_runner.run(run(settings))
    except ConfigError as error:
        log.error("%s", error)
        return EXIT_BAD_SETTINGS
    except Exception:  # a bug at start or shutdown: one line with its traceback, and a restart
        log.exception("node %s failed", settings.node_id)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
