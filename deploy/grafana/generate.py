"""dscore's Grafana dashboards, as code (Grafana's own SDK, grafana-foundation-sdk): writes
deploy/grafana/dashboards/*.json.

    .venv/bin/python deploy/grafana/generate.py            # rewrite the committed JSON
    .venv/bin/python deploy/grafana/generate.py --check    # exit 1 if the committed JSON is stale

Three dashboards, each with the variables datasource, namespace, job, protocol and node (namespace: a
Helm release's job is its name, so two releases of one name in two namespaces share a job; outside
Kubernetes there is no namespace label, and its "All" matches that too):

- "dscore / Availability and failover": availability over time (requests served, time with a leader),
  each failover's duration, which node led when, gateway traffic and latency; injected faults as
  annotations.
- "dscore / Consensus health": terms, elections and leader changes, commit latency, proposals, indexes,
  rejected messages and protocol events, per protocol and node.
- "dscore / Transport and storage": consumer lag, hop latency, messages by kind, duplicates dropped,
  transport failures, Kafka clients replaced, persist latency, writes, what transport faults did at the
  nodes.

Panels query raw metrics (not the recording rules), so a dashboard works on a Prometheus without
dscore's rules too; the time with a leader and the requests served are the rules' own expressions
(`has_leader_of`, `served_ratio` of deploy/prometheus/generate.py), with the dashboard's selectors.
`tests/deploy/test_grafana_dashboards.py` fails when the committed JSON differs from what this script
writes, and has a real Prometheus parse every panel's query.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

# Which answers count as served: the gateway's own table (deploy/prometheus/generate.py reads it too).
from dscore_gateway.outcomes import SERVED_CODES

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"


def _rules_generator() -> ModuleType:
    """deploy/prometheus/generate.py (a script, not a package), for the PromQL the panels share with the
    recording rules."""
    name = "dscore_prometheus_rules_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE.parent / "prometheus" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


RULES = _rules_generator()

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: every node metric's selector; the gateway's and the chaos injector's have only a namespace and a job
NODE = 'namespace=~"$namespace", job=~"$job", protocol=~"$protocol", node=~"$node"'
JOB = 'namespace=~"$namespace", job=~"$job"'
#: the transport-fault metrics of a node carry its node id but no protocol label
FAULTY = 'namespace=~"$namespace", job=~"$job", node=~"$node"'
TAGS = ["dscore"]


@dataclass
class Q:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""


@dataclass
class P:
    """One panel: its kind ("timeseries", "stat", "state"), title, description, unit, width and height."""

    kind: str
    title: str
    description: str
    queries: list[Q]
    unit: str = "short"
    width: int = 12
    height: int = 8
    options: dict[str, Any] = field(default_factory=dict)


def _query(q: Q, ref: str) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(q.expr).ref_id(ref).datasource(DATASOURCE)
    if q.legend:
        query = query.legend_format(q.legend)
    return query


def _panel(p: P) -> Any:
    builder: Any
    if p.kind == "timeseries":
        builder = timeseries.Panel().fill_opacity(10).line_interpolation(common.LineInterpolation.LINEAR)
        if p.options.get("points"):
            builder = builder.draw_style(common.GraphDrawStyle.POINTS).point_size(8)
    elif p.kind == "stat":
        builder = stat.Panel().graph_mode(common.BigValueGraphMode.AREA)
    elif p.kind == "state":
        builder = (
            statetimeline.Panel()
            .show_value(common.VisibilityMode.NEVER)
            .merge_values(True)
            .mappings(
                [
                    model.ValueMap(
                        {
                            "0": model.ValueMappingResult(text="follower", color="transparent", index=0),
                            "1": model.ValueMappingResult(text="leader", color="green", index=1),
                        }
                    )
                ]
            )
        )
    else:
        raise ValueError(f"unknown panel kind {p.kind!r}")
    builder = (
        builder.title(p.title)
        .description(p.description)
        .datasource(DATASOURCE)
        .unit(p.unit)
        .span(p.width)
        .height(p.height)
    )
    if "min" in p.options:
        builder = builder.min(p.options["min"])
    if "max" in p.options:
        builder = builder.max(p.options["max"])
    for i, q in enumerate(p.queries):
        builder = builder.with_target(_query(q, chr(ord("A") + i)))
    return builder


def _query_variable(
    name: str, label: str, query: str, description: str | None = None, sort: Any = None
) -> Any:
    """A multi-value variable filled by `query`, with "All" meaning every value (`.*`)."""
    variable = dash.QueryVariable(name).label(label)
    if description is not None:
        variable = variable.description(description)
    return (
        variable.datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(sort or model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _variables() -> list[Any]:
    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        _query_variable(
            "namespace",
            "Namespace",
            'label_values({__name__=~"dscore_.+"}, namespace)',
            "Kubernetes namespaces with dscore metrics: two Helm releases of one name in two namespaces "
            "share a job (none outside Kubernetes: All)",
        ),
        _query_variable(
            "job",
            "Job",
            'label_values({__name__=~"dscore_.+", namespace=~"$namespace"}, job)',
            "Scrape jobs that export dscore metrics (nodes, gateways, chaos injector)",
        ),
        _query_variable(
            "protocol",
            "Protocol",
            'label_values(dscore_node_up{namespace=~"$namespace", job=~"$job"}, protocol)',
        ),
        _query_variable(
            "node",
            "Node",
            'label_values(dscore_node_up{namespace=~"$namespace", job=~"$job", protocol=~"$protocol"}, node)',
            sort=model.VariableSort.NATURAL_ASC,
        ),
    ]


#: (name, expr, title format, tag keys) of each annotation; the SDK's builder has no field for Prometheus'
#: step, title format and tags, so `_build` adds them to the JSON it produces. Grafana evaluates the
#: annotation every step (1m); the window is the step plus a scrape interval (15 s), so a fault whose two
#: scrapes (counter before, counter after) straddle a step boundary still lies inside one window. With a
#: window of exactly the step, such a fault showed in neither (a 15 s scrape missed one fault in four);
#: the price is an occasional second marker a minute later.
ANNOTATIONS: dict[str, list[tuple[str, str, str, str]]] = {
    "dscore-availability": [
        (
            "Injected faults",
            f"sum by (kind) (increase(dscore_chaos_faults_injected_total{{{JOB}}}[1m15s])) > 0",
            "fault: {{kind}}",
            "kind",
        )
    ],
}


def _one_line(expr: str) -> str:
    """A multi-line expression of the rules as one line: "( a or b ) / c" becomes "(a or b) / c"."""
    return " ".join(expr.split()).replace("( ", "(").replace(" )", ")")


def availability() -> list[P]:
    def ratio(window: str) -> str:
        # the rules' expression: 0, not "no data", while the gateway served nothing (no served series yet)
        return _one_line(RULES.served_ratio(JOB, window, "sum"))

    # the rules' has_leader(): 0, not "no data", while every node of a cluster seen in the last hour is gone
    has_leader = _one_line(RULES.has_leader_of(f'{JOB}, protocol=~"$protocol"'))
    failover_q = "histogram_quantile({q}, sum by (le) (rate(dscore_failover_seconds_bucket{{{job}}}[1h])))"
    percent = {"min": 0, "max": 1}
    return [
        P(
            "stat",
            "Requests served (1h)",
            f"Share of the gateway's requests served ({', '.join(SERVED_CODES)}) among those that count "
            "(all but the client's doing: 4xx answers other than cas_mismatch and not_found), "
            "over the last hour.",
            [Q(ratio("1h"))],
            "percentunit",
            6,
            5,
            percent,
        ),
        P(
            "stat",
            "Time with a leader (1h)",
            "Share of the last hour in which some node of the cluster reported leading.",
            [Q(f"avg(avg_over_time(({has_leader})[1h:15s]))")],
            "percentunit",
            6,
            5,
            percent,
        ),
        P(
            "stat",
            "Failover p50 (1h)",
            "Median failover time over the last hour, as the gateway measures it: from its last success "
            "before the leader it followed was lost to the first leader-only request served after that "
            "(so with sparse traffic it includes the idle time before the loss; the gateway's probe "
            "bounds it).",
            [Q(failover_q.format(q="0.5", job=JOB))],
            "s",
            6,
            5,
        ),
        P(
            "stat",
            "Failover p99 (1h)",
            "99th percentile failover time over the last hour.",
            [Q(failover_q.format(q="0.99", job=JOB))],
            "s",
            6,
            5,
        ),
        P(
            "timeseries",
            "Availability",
            "Requests served (gateway) and time with a leader (nodes), each over a sliding 5 minutes. "
            "Injected faults are drawn as annotations.",
            [
                Q(ratio("5m"), "requests served"),
                Q(
                    f"avg_over_time(({has_leader})[5m:15s])",
                    "time with a leader: {{job}} {{protocol}} {{namespace}}",
                ),
            ],
            "percentunit",
            24,
            8,
            percent,
        ),
        P(
            "timeseries",
            "Each failover's duration",
            "The mean failover time in each interval that had one: with failovers rarer than the "
            "interval, each point is one failover.",
            [
                Q(
                    "sum by (namespace, job) "
                    f"(increase(dscore_failover_seconds_sum{{{JOB}}}[$__rate_interval]))"
                    " / sum by (namespace, job) "
                    f"(increase(dscore_failover_seconds_count{{{JOB}}}[$__rate_interval])) > 0",
                    "failover {{job}} {{namespace}}",
                )
            ],
            "s",
            12,
            8,
            {"points": True, "min": 0},
        ),
        P(
            "state",
            "Which node led when",
            "Leader per node over time (dscore_node_is_leader).",
            [Q(f"max by (node) (dscore_node_is_leader{{{NODE}}})", "{{node}}")],
            "short",
            12,
            8,
        ),
        P(
            "timeseries",
            "Gateway requests by outcome",
            "Requests the gateway answered per second, by outcome.",
            [
                Q(
                    f"sum by (outcome) (rate(dscore_gateway_requests_total{{{JOB}}}[$__rate_interval]))",
                    "{{outcome}}",
                )
            ],
            "reqps",
        ),
        P(
            "timeseries",
            "Gateway latency",
            "Time to answer a request at the 50th and 99th percentile, by operation.",
            [
                Q(
                    "histogram_quantile(0.5, sum by (operation, le) "
                    f"(rate(dscore_gateway_request_duration_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "p50 {{operation}}",
                ),
                Q(
                    "histogram_quantile(0.99, sum by (operation, le) "
                    f"(rate(dscore_gateway_request_duration_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                    "p99 {{operation}}",
                ),
            ],
            "s",
        ),
        P(
            "timeseries",
            "Nodes the gateway found silent",
            "Times a gateway found a node silent (asked, and no answer to anything for its silence_s) and "
            "sent the requests waiting on it elsewhere: a dead leader shows here at each failover; a node "
            "that shows here without a leader change stalled for less than an election.",
            [
                Q(
                    "sum by (node) "
                    f"(increase(dscore_gateway_node_silences_total{{{JOB}}}[$__rate_interval]))",
                    "{{node}}",
                )
            ],
            "short",
            24,
            8,
            {"points": True, "min": 0},
        ),
    ]


def _quantiles(metric: str, by: str, legend: str) -> list[Q]:
    return [
        Q(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{NODE}}}[$__rate_interval])))",
            f"p{name} {legend}",
        )
        for q, name in (("0.5", "50"), ("0.99", "99"))
    ]


def consensus() -> list[P]:
    return [
        P(
            "timeseries",
            "Term",
            "Each node's current term: a rising term means elections.",
            [Q(f"max by (protocol, node) (dscore_node_term{{{NODE}}})", "{{protocol}} {{node}}")],
        ),
        P(
            "timeseries",
            "Elections and leader changes (per 5m)",
            "Elections started and won, and the most new leaders any node saw, in each 5 minutes. Raft "
            "counts elections (dscore_elections_*); Multi-Paxos counts its phase 1 (a proposer's bid to "
            "lead) and PBFT the backups' suspicions of the primary (each starts a view change) as "
            "protocol events instead.",
            [
                Q(
                    f"sum by (protocol) (increase(dscore_elections_started_total{{{NODE}}}[5m]))",
                    "started {{protocol}}",
                ),
                Q(
                    f"sum by (protocol) (increase(dscore_elections_won_total{{{NODE}}}[5m]))",
                    "won {{protocol}}",
                ),
                Q(
                    "sum by (protocol) "
                    f'(increase(dscore_protocol_events_total{{{NODE}, reason="phase1_started"}}[5m]))',
                    "phase 1 started {{protocol}}",
                ),
                Q(
                    "sum by (protocol) "
                    f'(increase(dscore_protocol_events_total{{{NODE}, reason="phase1_won"}}[5m]))',
                    "phase 1 won {{protocol}}",
                ),
                Q(
                    "sum by (protocol) "
                    f'(increase(dscore_protocol_events_total{{{NODE}, reason="primary_suspected"}}[5m]))',
                    "primary suspected {{protocol}}",
                ),
                Q(
                    f"max by (protocol) (increase(dscore_leader_changes_total{{{NODE}}}[5m]))",
                    "leader changes {{protocol}}",
                ),
            ],
        ),
        P(
            "timeseries",
            "Commit latency",
            "From a leader's proposal of an entry to its apply, at the 50th and 99th percentile. None "
            "for PBFT: its replicas answer the clients, and no leader waits on a proposal.",
            _quantiles("dscore_commit_duration_seconds", "protocol, node", "{{protocol}} {{node}}"),
            "s",
        ),
        P(
            "timeseries",
            "Proposals",
            "Entries the leaders proposed that committed, and those that were not seen to commit, by "
            "reason (leader_lost, timeout and snapshot may still have committed; replaced did not). "
            "Always 0 for PBFT: its replicas answer the clients, and no leader waits on a proposal.",
            [
                Q(
                    f"sum by (protocol) (rate(dscore_proposals_committed_total{{{NODE}}}[$__rate_interval]))",
                    "committed {{protocol}}",
                ),
                Q(
                    "sum by (protocol, reason) "
                    f"(rate(dscore_proposals_failed_total{{{NODE}}}[$__rate_interval]))",
                    "failed: {{reason}} {{protocol}}",
                ),
            ],
            "ops",
        ),
        P(
            "timeseries",
            "Commit and applied index",
            "The highest index each node knows committed, and the highest it applied.",
            [
                Q(f"max by (protocol, node) (dscore_node_commit_index{{{NODE}}})", "commit {{node}}"),
                Q(f"max by (protocol, node) (dscore_node_applied_index{{{NODE}}})", "applied {{node}}"),
            ],
        ),
        P(
            "timeseries",
            "Nodes up and voters",
            "Running nodes against the voters in the configuration: below a quorum (a majority; PBFT: "
            "n - f), nothing commits.",
            [
                Q(f"sum by (protocol) (dscore_node_up{{{NODE}}})", "up {{protocol}}"),
                Q(f"max by (protocol) (dscore_node_voters{{{NODE}}})", "voters {{protocol}}"),
            ],
        ),
        P(
            "timeseries",
            "Client requests answered by the nodes",
            "Requests the nodes answered per second, by outcome.",
            [
                Q(
                    f"sum by (outcome) (rate(dscore_node_requests_total{{{NODE}}}[$__rate_interval]))",
                    "{{outcome}}",
                )
            ],
            "reqps",
        ),
        P(
            "timeseries",
            "Applied",
            "Log entries and client commands applied per second (a command is one client operation; an "
            "entry carries a batch).",
            [
                Q(
                    f"sum by (protocol) (rate(dscore_entries_applied_total{{{NODE}}}[$__rate_interval]))",
                    "entries",
                ),
                Q(
                    f"sum by (protocol) (rate(dscore_commands_applied_total{{{NODE}}}[$__rate_interval]))",
                    "commands",
                ),
            ],
            "ops",
        ),
        P(
            "timeseries",
            "Rejected messages",
            "Inbound messages dropped before the core, by reason (never applied).",
            [
                Q(
                    f"sum by (reason) (rate(dscore_messages_rejected_total{{{NODE}}}[$__rate_interval])) > 0",
                    "{{reason}}",
                )
            ],
            "pps",
        ),
        P(
            "timeseries",
            "Protocol events",
            "What the protocol cores count: dropped input (stale_term, invalid, ...), step-downs, snapshots.",
            [
                Q(
                    f"sum by (reason) (rate(dscore_protocol_events_total{{{NODE}}}[$__rate_interval])) > 0",
                    "{{reason}}",
                )
            ],
            "ops",
        ),
    ]


def transport() -> list[P]:
    return [
        P(
            "timeseries",
            "Consumer lag",
            "Records in each node's inbox not read yet (Kafka: log end offset minus position).",
            [Q(f"max by (protocol, node) (dscore_consumer_lag{{{NODE}}})", "{{node}}")],
        ),
        P(
            "timeseries",
            "Hop latency",
            "Time a message spent between the sender's transport and the receiver's.",
            _quantiles("dscore_transport_hop_duration_seconds", "node", "{{node}}"),
            "s",
        ),
        P(
            "timeseries",
            "Messages by kind",
            "Protocol messages stepped into the cores (in) and handed to the transport (out), per second.",
            [
                Q(
                    f"sum by (kind) (rate(dscore_messages_received_total{{{NODE}}}[$__rate_interval]))",
                    "in {{kind}}",
                ),
                Q(
                    f"sum by (kind) (rate(dscore_messages_sent_total{{{NODE}}}[$__rate_interval]))",
                    "out {{kind}}",
                ),
            ],
            "pps",
        ),
        P(
            "timeseries",
            "Duplicates dropped and redeliveries",
            "Dropped: messages thrown away by the per-sender high-water marks (records read again after a "
            "restart, copies a link delivered twice). Redelivered: records the Kafka transport handed to a "
            "restarted node again, having read them before the restart (a lower bound: reads after the "
            "last offset commit are not known).",
            [
                Q(
                    f"sum by (node) (rate(dscore_duplicates_dropped_total{{{NODE}}}[$__rate_interval]))",
                    "dropped {{node}}",
                ),
                Q(
                    f"sum by (node) (rate(dscore_redeliveries_total{{{NODE}}}[$__rate_interval]))",
                    "redelivered {{node}}",
                ),
            ],
            "pps",
        ),
        P(
            "timeseries",
            "Persist latency",
            "One write to the node's storage (Redis), from the call until it is durable.",
            _quantiles("dscore_persist_duration_seconds", "node", "{{node}}"),
            "s",
        ),
        P(
            "timeseries",
            "Storage writes and readies",
            "Atomic writes made durable and Ready batches carried out, per second.",
            [
                Q(
                    f"sum by (node) (rate(dscore_storage_writes_total{{{NODE}}}[$__rate_interval]))",
                    "writes {{node}}",
                ),
                Q(
                    f"sum by (node) (rate(dscore_readies_total{{{NODE}}}[$__rate_interval]))",
                    "readies {{node}}",
                ),
            ],
            "ops",
        ),
        P(
            "timeseries",
            "Transport throughput",
            "Bytes the broker acknowledged (out) and bytes handed to the nodes (in).",
            [
                Q(
                    f"sum by (node) (rate(dscore_transport_sent_bytes_total{{{NODE}}}[$__rate_interval]))",
                    "out {{node}}",
                ),
                Q(
                    "sum by (node) "
                    f"(rate(dscore_transport_received_bytes_total{{{NODE}}}[$__rate_interval]))",
                    "in {{node}}",
                ),
            ],
            "Bps",
        ),
        P(
            "timeseries",
            "Frames lost",
            "Frames the transport will never deliver and messages the node did not send, by reason.",
            [
                Q(
                    "sum by (reason) "
                    f"(rate(dscore_transport_send_failures_total{{{NODE}}}[$__rate_interval])) > 0",
                    "transport: {{reason}}",
                ),
                Q(
                    "sum by (reason) "
                    f"(rate(dscore_messages_send_dropped_total{{{NODE}}}[$__rate_interval])) > 0",
                    "node: {{reason}}",
                ),
            ],
            "pps",
        ),
        P(
            "timeseries",
            "Kafka clients replaced",
            "Producers and consumers the Kafka transport replaced per second, by node and kind: a producer "
            "that failed fatally or held records without delivery reports past its own timeouts, a "
            "consumer that fetched nothing while its inbox held unread records (the node logs each). "
            "DscoreKafkaClientRestarts fires at 3 of one node and kind in 15 minutes.",
            [
                Q(
                    "sum by (node, kind) "
                    f"(rate(dscore_transport_client_restarts_total{{{NODE}}}[$__rate_interval]))",
                    "{{kind}} {{node}}",
                )
            ],
            "ops",
        ),
        P(
            "timeseries",
            "Transport faults at the nodes",
            "What the chaos service's transport faults (omission, delay, partition on the control topic) "
            "did at each node: rules in force, frames the rules dropped (by direction) and held back.",
            [
                Q(f"sum by (node) (dscore_transport_faults_active{{{FAULTY}}})", "rules in force {{node}}"),
                Q(
                    "sum by (reason) "
                    f"(rate(dscore_transport_fault_frames_dropped_total{{{FAULTY}}}[$__rate_interval]))",
                    "dropped: {{reason}}",
                ),
                Q(
                    f"sum(rate(dscore_transport_fault_frames_delayed_total{{{FAULTY}}}[$__rate_interval]))",
                    "delayed",
                ),
            ],
        ),
    ]


DASHBOARDS = {
    "dscore-availability": ("dscore / Availability and failover", availability),
    "dscore-consensus": ("dscore / Consensus health", consensus),
    "dscore-transport": ("dscore / Transport and storage", transport),
}


def _build(uid: str) -> dict[str, Any]:
    title, panels = DASHBOARDS[uid]
    builder = (
        dash.Dashboard(title)
        .uid(uid)
        .tags(TAGS)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .editable()
        .variables(_variables())
        .link(
            dash.DashboardLink("dscore dashboards")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for name, expr, _, _ in ANNOTATIONS.get(uid, []):
        builder = builder.annotation(
            dash.AnnotationQuery().name(name).datasource(DATASOURCE).enable(True).icon_color("red").expr(expr)
        )
    for panel_id, p in enumerate(panels(), start=1):
        builder = builder.with_panel(_panel(p).id(panel_id))
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    extras = {name: (title_format, tags) for name, _, title_format, tags in ANNOTATIONS.get(uid, [])}
    for annotation in data.get("annotations", {}).get("list", []):
        if annotation.get("name") in extras:
            title_format, tag_keys = extras[annotation["name"]]
            annotation.update({"step": "1m", "titleFormat": title_format, "tagKeys": tag_keys})
    return data


def render(uid: str) -> str:
    return json.dumps(_build(uid), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    args = parser.parse_args(argv)
    stale = []
    OUT_DIR.mkdir(exist_ok=True)
    for uid in DASHBOARDS:
        path = OUT_DIR / f"{uid}.json"
        text = render(uid)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run .venv/bin/python deploy/grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
