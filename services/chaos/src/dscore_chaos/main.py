"""`dscore-chaos`: the fault injector's HTTP service (uvicorn).

    dscore-chaos        # settings from DSCORE_* (see dscore_chaos.settings)

It refuses to start (exit 2) without `DSCORE_CHAOS__API_TOKEN`, the fault API's bearer token, unless
`DSCORE_CHAOS__INSECURE_NO_AUTH=true`.

Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT: every fault is stopped first, so a paused
process is resumed and a transport fault gets its stop command), 2 for bad settings (the message names
the environment variable) or no Kubernetes credentials, 1 if a backend cannot start (Kafka unreachable).
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sys
from collections.abc import Sequence

import uvicorn
from prometheus_client import CollectorRegistry

from dscore.core.errors import ConfigError
from dscore.transport.faults_kafka import KafkaControlPublisher
from dscore.transport.kafka_config import KafkaTransportConfig
from dscore_chaos.annotations import GrafanaAnnotator
from dscore_chaos.app import create_app
from dscore_chaos.backends.base import Backend, LeaderSource
from dscore_chaos.backends.processes import ProcessBackend
from dscore_chaos.backends.transport import TransportBackend
from dscore_chaos.clock import Clock, SystemClock
from dscore_chaos.metrics import ServiceMetrics
from dscore_chaos.service import ChaosService
from dscore_chaos.settings import ChaosSettings, load_chaos_settings
from dscore_chaos.targets import AnnotationLeaderFinder, HttpLeaderFinder, LeaderFinder

log = logging.getLogger("dscore_chaos")


def build_service(
    settings: ChaosSettings, *, clock: Clock | None = None, registry: CollectorRegistry | None = None
) -> ChaosService:
    """The service with every backend its settings enable (not started)."""
    clock = clock or SystemClock()
    options = settings.chaos
    seed = options.seed
    backends: list[Backend] = []
    leader: LeaderSource | None = None
    if options.kubernetes.enabled:
        # imported only when used: the Kubernetes client is the slowest import of the service
        from dscore_chaos.backends.kubernetes import KubernetesBackend, api_client

        k8s = options.kubernetes
        finder: LeaderFinder = (
            HttpLeaderFinder(timeout_s=k8s.request_timeout_s)
            if k8s.leader_lookup == "http"
            else AnnotationLeaderFinder(k8s.leader_annotation)
        )
        kubernetes = KubernetesBackend(
            api_client(k8s),
            namespace=settings.kubernetes_namespace(),
            options=k8s,
            finder=finder,
            rng=random.Random(f"{seed}:kubernetes"),
        )
        backends.append(kubernetes)
        leader = kubernetes
    if options.processes.enabled:
        processes = ProcessBackend(
            options.processes,
            rng=random.Random(f"{seed}:processes"),
            finder=HttpLeaderFinder(timeout_s=options.processes.request_timeout_s),
        )
        backends.append(processes)
        leader = leader or processes
    if settings.kafka.bootstrap_servers is not None:
        config = KafkaTransportConfig(
            bootstrap_servers=settings.kafka.bootstrap_servers, cluster_id=settings.cluster_id
        )
        backends.append(
            TransportBackend(
                KafkaControlPublisher(config, key=settings.auth_key_bytes()),
                nodes=settings.nodes,
                rng=random.Random(f"{seed}:transport"),
                clock=clock,
                leader=leader,
            )
        )
    registry = registry or CollectorRegistry()
    service: ChaosService | None = None
    metrics = ServiceMetrics(registry, active=lambda: service.active_count() if service is not None else 0)
    annotator = None
    grafana = options.grafana
    if grafana.url is not None and grafana.token is not None:
        annotator = GrafanaAnnotator(
            grafana.url,
            grafana.token.get_secret_value(),
            dashboard_uid=grafana.dashboard_uid,
            timeout_s=grafana.request_timeout_s,
            on_failure=metrics.annotations_failed.inc,
        )
    service = ChaosService(
        backends,
        clock=clock,
        metrics=metrics,
        annotator=annotator,
        max_active_faults=options.max_active_faults,
        max_finished_faults=options.max_finished_faults,
        max_duration_s=options.max_duration_s,
    )
    return service


async def serve(settings: ChaosSettings) -> int:
    service = build_service(settings)
    if not service.kinds:
        log.warning(
            "no backend enabled: set DSCORE_KAFKA__BOOTSTRAP_SERVERS, DSCORE_CHAOS__KUBERNETES__ENABLED "
            "or DSCORE_CHAOS__PROCESSES__ENABLED"
        )
    options = settings.chaos
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, api_token=options.api_token),
            host=options.host,
            port=options.port,
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
        )
    )
    if options.api_token is None:
        log.warning(
            "the fault API is served WITHOUT authentication (DSCORE_CHAOS__INSECURE_NO_AUTH=true): anyone "
            "who reaches %s:%d can inject faults",
            options.host,
            options.port,
        )
    log.info(
        "chaos service for cluster %s: kinds %s; http %s:%d, API auth %s",
        settings.cluster_id,
        ", ".join(k.value for k in service.kinds) or "none",
        options.host,
        options.port,
        "bearer token" if options.api_token is not None else "OFF",
    )
    await server.serve()
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # no arguments: everything is a setting
    try:
        settings = load_chaos_settings()
    except ConfigError as error:
        print(f"dscore-chaos: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.chaos.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # uvicorn re-raises the stop signal once it has shut down; with these handlers the process ends with
    # exit code 0 after the faults were stopped, instead of being killed by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
    try:
        return asyncio.run(serve(settings))
    except ConfigError as error:
        print(f"dscore-chaos: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
