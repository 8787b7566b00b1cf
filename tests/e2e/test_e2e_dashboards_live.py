"""Every query of every Grafana dashboard returns data from a live stack (issue 9, section 3).

Three `dscore-node` processes (each on its own fixed HTTP port, pid files as `make up` writes them, a
supervisor that restarts a killed one as Kubernetes would), a gateway, the chaos service (`dscore-chaos`,
local-process and transport backends) and a real Prometheus (Debian's, on a free port, scraping every
second, dscore's rules loaded) on a real Kafka broker and one real Redis per node. Clients write through
the gateway while, through the chaos service's HTTP API, the leader's process is SIGKILLed and then the
next leader is partitioned away for 3 s (it steps down); a few garbage records are written to a node's inbox (bad input
every node must count, never apply), and a client's inbox is deleted while its request is in flight
(the leader's answer is a frame lost). Then:

- each dashboard variable's query (`label_values(...)`) returns the jobs, the protocol and the nodes;
- every panel query, with the variables filled in as Grafana fills them (every value the variable's
  query returned, `$__interval` = the step, `$__rate_interval` by Grafana's rule), evaluated as Grafana
  evaluates a panel (a range query over the run), returns at least one non-NaN sample; the exceptions are
  `NO_SAMPLE_IN_A_SHORT_RUN`, each with its reason;
- the fault annotation returns the kill, the partition and its heal, evaluated with its own step;
- every recording rule of deploy/prometheus/dscore-rules.yaml has a series.

A dashboard that queries a metric nobody exports (a typo, a renamed metric, a panel for a component that
does not run) gets an empty result, and the test names the panel and the query.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from jepsen import Workload, e2e_cluster

from dscore.core.client_messages import Op
from dscore.transport.kafka_config import KafkaTransportConfig
from dscore.transport.kafka_layout import KafkaLayout, delete_topics

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "deploy"))
from prometheus_tools import PrometheusServer, find_tools, free_port  # noqa: E402

pytestmark = [pytest.mark.timeout(420)]

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULES = REPO / "deploy" / "prometheus" / "dscore-rules.yaml"
CHAOS_BIN = REPO / ".venv" / "bin" / "dscore-chaos"
#: the chaos service's API bearer token in this test (`DSCORE_CHAOS__API_TOKEN`)
CHAOS_TOKEN = secrets.token_urlsafe(32)
NODES = ("n1", "n2", "n3")
#: Prometheus' scrape and rule-evaluation interval here (Grafana's data source "scrape interval" too)
SCRAPE_S = 1.0
#: the step of a panel's range query, so `$__interval`
STEP_S = 1.0
#: Grafana's `$__rate_interval`: max($__interval + scrape interval, 4 x scrape interval)
RATE_INTERVAL = f"{max(STEP_S + SCRAPE_S, 4 * SCRAPE_S):g}s"
#: the scrape jobs (the rules select job=~".*dscore.*")
JOBS = {"node": "dscore-node", "gateway": "dscore-gateway", "chaos": "dscore-chaos"}
#: how long the queries may take to show what the run did (Prometheus scrapes every second)
DATA_TIMEOUT_S = 90.0

#: (dashboard uid, panel title, query index) -> why the query may legitimately have no sample here.
#: Keep it short: force the situation instead where the stack can be made to show it.
NO_SAMPLE_IN_A_SHORT_RUN: dict[tuple[str, str, int], str] = {
    ("dscore-transport", "Frames lost", 1): (
        "a node drops an outgoing message only when it exceeds the envelope limit (too_large), which "
        "the gateway's request limits keep clients from causing; tests/unit cover the count."
    ),
    **{
        ("dscore-consensus", "Elections and leader changes (per 5m)", index): (
            f"Multi-Paxos's and PBFT's elections ({reason}); this run is Raft's. "
            "tests/unit/metrics/test_protocol_event_reasons.py exports them at zero for their protocols."
        )
        for index, reason in ((2, "phase1_started"), (3, "phase1_won"), (4, "primary_suspected"))
    },
}


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # a panel's title, "annotation <name>"
    index: int
    expr: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.dashboard, self.where, self.index)

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.where} #{self.index}: {self.expr}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries(boards: dict[str, dict[str, Any]]) -> list[Query]:
    return [
        Query(uid, panel["title"], i, target["expr"])
        for uid, board in boards.items()
        for panel in board["panels"]
        for i, target in enumerate(panel.get("targets", []))
    ]


_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def regex_of(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a Prometheus query: `(a|b)`, regex-escaped."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"unknown template variable ${name} in {expr!r}"
        return values[name]

    return _VARIABLE.sub(value, expr)


def has_data(series: list[dict[str, Any]]) -> bool:
    """At least one sample that Grafana would draw (NaN, as from a quantile of nothing, is no data)."""
    return any(not math.isnan(float(v)) for s in series for _, v in s.get("values", []))


def prometheus_config(node_ports: dict[str, int], gateway: str, chaos_port: int) -> str:
    def job(name: str, targets: list[str]) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": targets}]}

    config = {
        "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": f"{SCRAPE_S:g}s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            job(JOBS["node"], [f"127.0.0.1:{p}" for p in node_ports.values()]),
            job(JOBS["gateway"], [gateway]),
            job(JOBS["chaos"], [f"127.0.0.1:{chaos_port}"]),
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def http_json(
    url: str, method: str = "GET", body: dict[str, Any] | None = None, *, token: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=40) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError:
        return 0, None


@pytest.fixture
def chaos_service(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], str]]:
    """Starts `dscore-chaos` with the given settings (once); SIGTERM at the end (it stops its faults)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> str:
        port = free_port()
        with (tmp_path / "chaos.log").open("ab") as log:
            process = subprocess.Popen(
                [str(CHAOS_BIN)],
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("DSCORE_")},
                    **env,
                    "DSCORE_CHAOS__HOST": "127.0.0.1",
                    "DSCORE_CHAOS__PORT": str(port),
                    "DSCORE_CHAOS__API_TOKEN": CHAOS_TOKEN,
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        started.append(process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def test_every_dashboard_query_returns_data_from_a_live_stack_with_a_leader_kill(
    namespace: str,
    kafka_bootstrap: str,
    redis_server_factory: Callable[..., Any],
    chaos_service: Callable[[dict[str, str]], str],
    tmp_path: Path,
) -> None:
    tools = await asyncio.to_thread(find_tools)
    boards = load_dashboards()
    run_dir = tmp_path / "run"
    node_ports = {n: free_port() for n in NODES}
    async with e2e_cluster(
        NODES,
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
        pid_dir=run_dir,
        http_ports=node_ports,
    ) as (cluster, _):
        chaos = chaos_service(
            {
                "DSCORE_CLUSTER_ID": namespace,
                "DSCORE_NODES": ",".join(NODES),
                "DSCORE_AUTH_KEY": cluster.auth_key,
                "DSCORE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
                "DSCORE_CHAOS__PROCESSES__ENABLED": "true",
                "DSCORE_CHAOS__PROCESSES__RUN_DIR": str(run_dir),
                "DSCORE_CHAOS__PROCESSES__NODE_URLS": ",".join(
                    f"node-{n}=http://127.0.0.1:{p}" for n, p in node_ports.items()
                ),
            }
        )
        gateway = cluster.gateway_url().removeprefix("http://").rstrip("/")
        chaos_port = int(chaos.rsplit(":", 1)[1])
        prometheus = PrometheusServer(
            tools, tmp_path / "prometheus", prometheus_config(node_ports, gateway, chaos_port)
        )
        (tmp_path / "prometheus").mkdir()
        await asyncio.to_thread(prometheus.start)
        workload = Workload(cluster, seed=9)
        try:
            started = time.time()

            async def chaos_ready() -> bool:
                status, body = await asyncio.to_thread(http_json, f"{chaos}/healthz")
                return status == 200 and {"process_kill", "partition"} <= set(body["kinds"])

            await cluster.wait_for(chaos_ready, 60.0, "the chaos service answers /healthz")

            async def all_targets_up() -> bool:
                up = await asyncio.to_thread(prometheus.query, "up == 1")
                return len(up) == len(NODES) + 2

            await cluster.wait_for(all_targets_up, 60.0, "Prometheus scrapes 3 nodes, the gateway and chaos")
            await cluster.wait_ready()
            await workload.start()
            await workload.wait_ok(20)

            # Bad input: garbage records in a node's inbox (counted as rejected, never applied).
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                for i in range(3):
                    await producer.send_and_wait(
                        KafkaLayout(namespace).inbox_topic(NODES[0]), f"not a dscore frame {i}".encode()
                    )
            finally:
                await producer.stop()

            # A client that goes away with a request in flight: its inbox topic is deleted, so the
            # leader's answer has nowhere to go (a frame lost: unknown_destination).
            leader = await cluster.leader()
            ghost = cluster.client_endpoint("ghost")
            await ghost.start()
            try:
                config = KafkaTransportConfig(bootstrap_servers=kafka_bootstrap, cluster_id=namespace)
                await delete_topics(config, ["ghost"])

                async def answer_lost() -> bool:
                    await ghost.call(leader, Op.GET, "k0", timeout_s=1.0)
                    samples = await cluster.metrics(leader)
                    return any(
                        value > 0
                        for name, value in samples.items()
                        if name.startswith("dscore_transport_send_failures_total{")
                        and 'reason="unknown_destination"' in name
                    )

                await cluster.wait_for(answer_lost, 60.0, f"{leader} could not deliver an answer to ghost")

                async def loss_scraped() -> bool:
                    # the leader is killed next, and its counters with it: Prometheus must have seen
                    # the loss first, or the "Frames lost" panel has nothing to show
                    lost = 'dscore_transport_send_failures_total{reason="unknown_destination"} > 0'
                    return bool(await asyncio.to_thread(prometheus.query, lost))

                await cluster.wait_for(loss_scraped, 30.0, "Prometheus scraped the lost answer")
            finally:
                await ghost.close()

            # The failover drill, through the chaos service's HTTP API: SIGKILL the leader's process.
            status, fault = await asyncio.to_thread(
                http_json,
                f"{chaos}/v1/faults",
                "POST",
                {"kind": "process_kill", "target": "leader"},
                token=CHAOS_TOKEN,
            )
            assert status == 201, fault
            [injection] = fault["injections"]
            assert injection["outcome"] == "injected", injection
            assert injection["target"] == f"node-{leader}", (injection, leader)
            workload.nemesis(f"chaos: {injection['detail']}")
            await cluster.leader(other_than=leader)
            await workload.wait_ok(10, not_node=leader, writes_only=True)
            await cluster.wait_ready(timeout_s=90)  # the supervisor restarted the killed process

            # A transport fault: the new leader cut off from the others for 3 s (over the control
            # topic). It loses its quorum and steps down (a protocol event), the others elect another
            # leader, and the heal brings it back.
            second = await cluster.leader()
            status, partition = await asyncio.to_thread(
                http_json,
                f"{chaos}/v1/faults",
                "POST",
                {"kind": "partition", "target": "leader", "params": {"duration_s": 3}},
                token=CHAOS_TOKEN,
            )
            assert status == 201 and partition["injections"][0]["outcome"] == "injected", partition
            assert second in str(partition["injections"][0]["target"]), (partition, second)
            workload.nemesis(f"chaos: {partition['injections'][0]['detail']}")

            async def partition_over() -> bool:
                _, view = await asyncio.to_thread(
                    http_json, f"{chaos}/v1/faults/{partition['id']}", token=CHAOS_TOKEN
                )
                return view is not None and view["state"] == "finished"

            await cluster.wait_for(partition_over, 30.0, "the partition ended")
            await cluster.wait_ready(timeout_s=60)
            await workload.wait_ok(10, writes_only=True)

            # The template variables, from their own queries.
            variables = {v["name"]: v for v in boards["dscore-availability"]["templating"]["list"]}
            values: dict[str, str] = {"__interval": f"{STEP_S:g}s", "__rate_interval": RATE_INTERVAL}
            # Outside Kubernetes no series has a namespace: the variable's query finds none, and Grafana
            # uses its "All" value, which matches the empty label.
            namespace = variables["namespace"]
            match = _LABEL_VALUES.match(namespace["query"])
            assert match and namespace["includeAll"] and namespace["allValue"] == ".*", namespace
            assert not await asyncio.to_thread(
                prometheus.label_values, match.group(2), match.group(1), started, time.time()
            )
            values["namespace"] = namespace["allValue"]
            found: dict[str, list[str]] = {}
            for name in ("job", "protocol", "node"):
                match = _LABEL_VALUES.match(variables[name]["query"])
                assert match, variables[name]
                selector = substitute(match.group(1), values)
                found[name] = await asyncio.to_thread(
                    prometheus.label_values, match.group(2), selector, started, time.time()
                )
                assert found[name], f"variable {name}: {variables[name]['query']} returned nothing"
                values[name] = regex_of(found[name])
            assert set(JOBS.values()) <= set(found["job"]), found
            assert found["protocol"] == ["raft"] and found["node"] == list(NODES), found
            for board in boards.values():  # the same variables on every dashboard
                assert [v.get("query") for v in board["templating"]["list"]] == [
                    v.get("query") for v in variables.values()
                ]

            # Every panel query returns data, evaluated over the run as Grafana evaluates a panel.
            pending = {q.key: q for q in panel_queries(boards) if q.key not in NO_SAMPLE_IN_A_SHORT_RUN}

            async def every_query_has_data() -> bool:
                for key, query in list(pending.items()):
                    series = await asyncio.to_thread(
                        prometheus.query_range, substitute(query.expr, values), started, time.time(), STEP_S
                    )
                    if has_data(series):
                        del pending[key]
                return not pending

            try:
                await cluster.wait_for(every_query_has_data, DATA_TIMEOUT_S, "every panel query has data")
            except TimeoutError:
                pytest.fail("panel queries without data:\n  " + "\n  ".join(map(str, pending.values())))
            # ... but not whatever is asked: a metric nobody exports has none (this check can fail).
            nobody = 'sum(rate(dscore_nobody_exports_this_total{job=~"$job"}[$__rate_interval]))'
            assert not has_data(
                prometheus.query_range(substitute(nobody, values), started, time.time(), STEP_S)
            )
            # The exceptions are still queries Prometheus accepts.
            for key in NO_SAMPLE_IN_A_SHORT_RUN:
                [query] = [q for q in panel_queries(boards) if q.key == key]
                prometheus.query_range(substitute(query.expr, values), started, time.time(), STEP_S)

            # The faults as annotations, each evaluated with its own step. Waited for: the heal is counted
            # when the partition ends, and Prometheus may not have scraped the chaos service since.
            annotations = [
                (uid, annotation)
                for uid, board in boards.items()
                for annotation in board.get("annotations", {}).get("list", [])
                if "expr" in annotation
            ]
            assert annotations
            kinds_seen: dict[str, set[str]] = {}

            async def every_annotation_shows_the_faults() -> bool:
                for uid, annotation in annotations:
                    step_s = {"1m": 60.0}[annotation["step"]]
                    # points every step back from now, the first at or before the run's start (a range
                    # query's points are start + k x step: from `started`, the run would be one point)
                    end = time.time()
                    start = end - math.ceil((end - started) / step_s) * step_s
                    series = await asyncio.to_thread(
                        prometheus.query_range, substitute(annotation["expr"], values), start, end, step_s
                    )
                    kinds = {s["metric"].get("kind") for s in series if has_data([s])}
                    kinds_seen[f"{uid}: {annotation['name']}"] = kinds
                    if not {"kill", "partition", "heal"} <= kinds:
                        return False
                return True

            try:
                await cluster.wait_for(every_annotation_shows_the_faults, DATA_TIMEOUT_S, "annotations")
            except TimeoutError:
                pytest.fail(f"annotations without kill, partition and heal: {kinds_seen}")

            # Every recording rule has a series.
            rules = [
                rule["record"]
                for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"]
                if "record" in rule
            ]
            assert rules
            missing = [r for r in rules if not prometheus.query(r)]
            assert not missing, f"recording rules without a series: {missing}"
        finally:
            await workload.stop()
            await asyncio.to_thread(prometheus.stop)
        # The only exit nobody asked for is the SIGKILL the chaos service sent.
        assert [(e.node_id, e.returncode) for e in cluster.failures()] == [(leader, -signal.SIGKILL)]
