"""dscore's Prometheus rules, as code: writes deploy/prometheus/dscore-rules.yaml.

    .venv/bin/python deploy/prometheus/generate.py                       # the committed file
    .venv/bin/python deploy/prometheus/generate.py --job-regex 'prod-dscore-.*' \\
        --runbook-base https://git.example/dscore/blob/main/docs/runbook.md --out my-rules.yaml

Every selector is `job=~"<job regex>"` (default `.*dscore.*`: it matches a ServiceMonitor's job, the
service name, and a PodMonitor's, `<namespace>/<monitor name>`). Alerts keep every label of the series
they fire on (`pod`, `instance`, `namespace`, `node`) unless they aggregate on purpose, and then they
keep `namespace`, `job` and `protocol` (one cluster): a ServiceMonitor's job is the Helm release's name,
so two releases of one name in two namespaces share a job, and only the namespace tells them apart.
Outside Kubernetes the series have no `namespace`, and grouping by it changes nothing.
`tests/deploy/test_prometheus_rules.py` fails when the committed file differs from what this script
writes, and runs `promtool check rules` and `promtool test rules` (deploy/prometheus/tests/).

Why each `for:` is what it is is written next to it, and repeated in docs/runbook.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Which answers count as served and which are the client's doing: the gateway's own table.
from dscore_gateway.outcomes import CLIENT_CODES, SERVED_CODES

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "dscore-rules.yaml"
DEFAULT_JOB_REGEX = ".*dscore.*"
#: relative to the repository; deployments pass a URL that their Alertmanager users can open
DEFAULT_RUNBOOK_BASE = "docs/runbook.md"
DEFAULT_CONSUMER_LAG_THRESHOLD = 10_000
DEFAULT_SLOW_PERSIST_P99_S = 0.1


@dataclass(frozen=True)
class Settings:
    job_regex: str = DEFAULT_JOB_REGEX
    runbook_base: str = DEFAULT_RUNBOOK_BASE
    consumer_lag_threshold: int = DEFAULT_CONSUMER_LAG_THRESHOLD
    slow_persist_p99_s: float = DEFAULT_SLOW_PERSIST_P99_S


class _Literal(str):
    """A string written as a YAML literal block (multi-line PromQL stays readable)."""


def _literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="|")


yaml.SafeDumper.add_representer(_Literal, _literal)


def _expr(text: str) -> str:
    text = text.strip()
    return _Literal(text + "\n") if "\n" in text else text


#: what tells one cluster from another (see the docstring: `namespace` for two releases of one name)
CLUSTER = "namespace, job, protocol"
#: the same for a gateway, whose metrics have no protocol
GATEWAY = "namespace, job"


def has_leader_of(selector: str) -> str:
    """1 while some node of a cluster (namespace, job, protocol) leads; 0 while none does, and also while
    every node of a cluster seen in the last hour is gone (no samples at all would otherwise read as "no
    data"). `selector` is the inside of the braces; deploy/grafana/generate.py uses this too."""
    return f"""
max by ({CLUSTER}) (dscore_node_is_leader{{{selector}}})
or on ({CLUSTER})
0 * max by ({CLUSTER}) (max_over_time(dscore_node_is_leader{{{selector}}}[1h]))
"""


def has_leader(s: Settings) -> str:
    return has_leader_of(f'job=~"{s.job_regex}"')


def served_ratio(selector: str, window: str, aggregate: str) -> str:
    """The share of the gateway's requests served among those that count, over `window`, aggregated by
    `aggregate` ("sum by (...)", or "sum"). The served series appear with the first request served (the
    gateway's counters are not zero-initialised), so a gateway that answered only failures has no served
    series: the numerator falls back to 0 wherever the denominator has data, and the ratio reads 0, not
    "no data". deploy/grafana/generate.py uses this too."""
    served = f'{selector}, outcome=~"{"|".join(SERVED_CODES)}"'
    counted = f'{selector}, outcome!~"{"|".join(CLIENT_CODES)}"'
    total = f"{aggregate} (rate(dscore_gateway_requests_total{{{counted}}}[{window}]))"
    return f"""
(
  {aggregate} (rate(dscore_gateway_requests_total{{{served}}}[{window}]))
  or
  0 * {total}
)
/
{total}
"""


def recording_rules(s: Settings) -> list[dict[str, Any]]:
    job = f'job=~"{s.job_regex}"'
    rules: list[dict[str, Any]] = []
    for window in ("5m", "1h"):
        rules.append(
            {
                "record": f"job:dscore_gateway_availability:ratio_rate{window}",
                "expr": _expr(served_ratio(job, window, f"sum by ({GATEWAY})")),
            }
        )
    rules.append({"record": "job_protocol:dscore_has_leader:max", "expr": _expr(has_leader(s))})
    for window in ("5m", "1h"):
        rules.append(
            {
                "record": f"job_protocol:dscore_leader_availability:ratio_avg{window}",
                "expr": f"avg_over_time(job_protocol:dscore_has_leader:max[{window}])",
            }
        )
    for name, quantile in (("p50", "0.5"), ("p99", "0.99")):
        rules.append(
            {
                "record": f"job:dscore_failover_seconds:{name}_1h",
                "expr": f"histogram_quantile({quantile}, sum by ({GATEWAY}, le) "
                f"(rate(dscore_failover_seconds_bucket{{{job}}}[1h])))",
            }
        )
    return rules


#: DscoreProposalsFailing also wants this many failed entries in its 15 minutes. It matters only below 200
#: proposals in 15 minutes (about 13 a minute): above, 5% is more than 10 anyway. At such rates one
#: failover fails the one or two entries in flight when the lead was lost (every command that arrives
#: before a poll goes into one entry), so 10 takes several failovers (DscoreFrequentLeaderChanges fires at
#: 4 leader changes) or proposals that keep failing; a cluster with one write a minute alerts only when
#: most of its writes fail.
PROPOSALS_FAILED_MIN = 10
#: a cluster in an annotation: "dscore-node (raft)", "dscore-node (raft) in namespace a"
IN_CLUSTER = (
    "{{ $labels.job }} ({{ $labels.protocol }}){{ with $labels.namespace }} in namespace {{ . }}{{ end }}"
)


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str


def alerts(s: Settings) -> list[Alert]:
    job = f'job=~"{s.job_regex}"'
    return [
        Alert(
            "DscoreNoLeader",
            # The expression itself, not its recording rule: rule groups are evaluated independently, so
            # an alert reading another group's output would see it one evaluation late, or not.
            f"(\n{has_leader(s).strip()}\n) == 0",
            # An election takes well under a second at the default timing (100-200 ms timeouts); a minute
            # without a leader is an outage, not an election. etcd's mixin waits 1m too.
            "1m",
            "critical",
            f"dscore cluster {IN_CLUSTER} has no leader.",
            f"No node of {IN_CLUSTER} has reported leading for a minute: "
            "the cluster accepts no writes and no linearizable reads.",
        ),
        Alert(
            "DscoreInsufficientMembers",
            # The quorum of n voters: PBFT's is n - f with f = floor((n - 1) / 3) (PbftNode: 5 of 7, 3 of
            # 4), the f of an unset DSCORE_PBFT__FAULTS_TOLERATED (a smaller f set there needs more nodes:
            # the alert fires late); the other protocols' is a majority, floor(n / 2) + 1.
            f"""
count by ({CLUSTER}) (dscore_node_up{{{job}}} == 1)
< on ({CLUSTER})
(
  max by ({CLUSTER}) (dscore_node_voters{{{job}, protocol="pbft"}})
  - floor((max by ({CLUSTER}) (dscore_node_voters{{{job}, protocol="pbft"}}) - 1) / 3)
  or
  floor(max by ({CLUSTER}) (dscore_node_voters{{{job}, protocol!="pbft"}}) / 2) + 1
)
""",
            # A quorum is gone: no leader can be elected. A rolling restart takes one node at a time and
            # never gets here; 1m rides out a scrape that missed several pods at once.
            "1m",
            "critical",
            f"dscore cluster {IN_CLUSTER} has lost its quorum.",
            f"Fewer running nodes than a quorum of the configured voters in {IN_CLUSTER} (a majority; "
            "PBFT: n - f): the cluster cannot commit.",
        ),
        Alert(
            "DscoreNodeDown",
            # `up == 0` only of targets that exported node metrics in the last day: a gateway's or the
            # chaos service's target matches the job regex too (`<release>-gateway`) but is no node. The
            # target is the same instance (its address), or on Kubernetes the same pod name (a StatefulSet
            # pod recreated on another IP that crash-loops before its first scrape). A day, not an hour:
            # the alert must not resolve while the node stays down; after a day of a down target it does.
            f"""
(
  up{{{job}}} == 0
  and on (namespace, job, instance) max_over_time(dscore_node_up{{{job}}}[1d])
)
or
(
  up{{{job}}} == 0
  and on (namespace, job, pod) max_over_time(dscore_node_up{{{job}, pod!=""}}[1d])
)
or
dscore_node_up{{{job}}} == 0
""",
            # A kill -9 and a supervisor's restart take seconds, a pod's rolling update well under a
            # minute: 2m means the node did not come back by itself.
            "2m",
            "warning",
            "dscore node {{ if $labels.node }}{{ $labels.node }}{{ else }}{{ $labels.instance }}{{ end }} "
            "is down.",
            "{{ $labels.job }}: a node (or its scrape target {{ $labels.instance }}) has been down for 2 "
            "minutes. The cluster tolerates a minority of nodes down; one more failure may cost the quorum.",
        ),
        Alert(
            "DscoreFrequentLeaderChanges",
            f"max by ({CLUSTER}) (increase(dscore_leader_changes_total{{{job}}}[15m])) >= 4",
            # The 15m window is the smoothing; 1m more skips the one evaluation in which increase()
            # extrapolates wildly from a counter that just appeared or reset.
            "1m",
            "warning",
            f"dscore cluster {IN_CLUSTER} changes leader often.",
            "A node of {{ $labels.job }} has seen {{ $value | humanize }} new leaders in 15 minutes "
            "(threshold 4): every change makes clients wait for an election.",
        ),
        Alert(
            "DscoreProposalsFailing",
            # Also at least PROPOSALS_FAILED_MIN failed entries (why 10: see the constant): a quiet
            # cluster's ratio means little (at one write a minute, the one entry a failover fails is 1 of
            # 16 in 15 minutes, 6%). PBFT counts no proposals (its replicas answer the clients; the
            # counters stay 0), so this stays silent for it.
            f"""
(
  sum by ({CLUSTER}) (rate(dscore_proposals_failed_total{{{job}}}[15m]))
  /
  (
    sum by ({CLUSTER}) (rate(dscore_proposals_committed_total{{{job}}}[15m]))
    + sum by ({CLUSTER}) (rate(dscore_proposals_failed_total{{{job}}}[15m]))
  )
  > 0.05
)
and
sum by ({CLUSTER}) (increase(dscore_proposals_failed_total{{{job}}}[15m])) >= {PROPOSALS_FAILED_MIN}
""",
            # One failover fails the proposals in flight (a fraction of a second of traffic): spread over
            # 15m that stays far below 5%. 10m more means proposals keep failing, not one failover.
            "10m",
            "warning",
            f"dscore cluster {IN_CLUSTER} fails proposals.",
            "{{ $value | humanizePercentage }} of the log entries proposed in {{ $labels.job }} over 15 "
            f"minutes did not commit (threshold 5%, and at least {PROPOSALS_FAILED_MIN} entries).",
        ),
        Alert(
            "DscoreUnauthenticatedMessages",
            f'increase(dscore_messages_rejected_total{{{job}, reason="unauthenticated"}}[5m]) > 0',
            # No benign source sends unauthenticated frames: each is a wrong key or a forgery. At once.
            "0m",
            "critical",
            "dscore node {{ $labels.node }} receives unauthenticated messages.",
            "{{ $labels.node }} ({{ $labels.job }}) dropped frames whose MAC does not verify with the "
            "cluster key ({{ $value | humanize }} in 5 minutes): a node with the wrong key, or a forgery.",
        ),
        Alert(
            "DscoreCorruptMessages",
            f"sum without (reason) (increase(dscore_messages_rejected_total{{{job}, "
            f'reason=~"checksum|malformed|version|unknown_kind|too_large"}}[10m])) > 0',
            # Kafka and the codec's CRC leave no background rate of corrupt records: one is worth a look.
            "0m",
            "warning",
            "dscore node {{ $labels.node }} receives corrupt or unreadable messages.",
            "{{ $labels.node }} ({{ $labels.job }}) dropped frames that fail the checksum, do not decode, "
            "or come from another wire version ({{ $value | humanize }} in 10 minutes).",
        ),
        Alert(
            "DscoreSettingsMismatch",
            # 5m, not 1m: increase() needs two samples in its window, and a 1m window holds two only with
            # scrapes every 20-30 s or faster (Prometheus' default interval is 1m): with slower scrapes some
            # evaluations get nothing and the `for` starts over. A 5m window holds several at any usual one.
            f'increase(dscore_messages_rejected_total{{{job}, reason="settings_mismatch"}}[5m]) > 0',
            # Peers retry every tick, so a real mismatch shows in every 5m window; the expression stays
            # true 5m after the last refusal, so 8m lets a rollout that changes cluster-wide settings take
            # 3m to finish restarting its nodes.
            "8m",
            "critical",
            "dscore node {{ $labels.node }} refuses peers with other cluster-wide settings.",
            "{{ $labels.node }} ({{ $labels.job }}) keeps refusing messages from peers whose cluster-wide "
            "settings differ from its own; the node logs which settings differ.",
        ),
        Alert(
            "DscoreConsumerLagHigh",
            f"dscore_consumer_lag{{{job}}} > {s.consumer_lag_threshold}",
            # A restarted node reads again everything after its stored positions; 5m lets it catch up.
            "5m",
            "warning",
            "dscore node {{ $labels.node }} lags behind its inbox.",
            "{{ $labels.node }} ({{ $labels.job }}) has {{ $value | humanize }} records in its inbox not "
            f"read yet (threshold {s.consumer_lag_threshold}) for 5 minutes.",
        ),
        Alert(
            "DscoreKafkaClientRestarts",
            # One replacement is the watchdog doing its job after a broker restart or a frozen broker;
            # 3 in 15m means the broker or the network keeps stalling this node's clients (and each
            # replaced producer loses what it held). `>= 3`, not `> 2`: increase() extrapolates to the
            # window's ends, so 2 restarts read slightly above 2 when scrapes and evaluations don't align.
            f"increase(dscore_transport_client_restarts_total{{{job}}}[15m]) >= 3",
            # The 15m window is the smoothing; 1m more skips the one evaluation in which increase()
            # extrapolates wildly from the few samples of a node that just started.
            "1m",
            "warning",
            "dscore node {{ $labels.node }} keeps replacing its Kafka {{ $labels.kind }}.",
            '{{ $labels.node }} ({{ $labels.job }}) replaced its Kafka {{ $labels.kind }} {{ printf "%.0f" '
            "$value }} times in 15 minutes (threshold 3): the client stalled or failed each time; the "
            "node logs each replacement.",
        ),
        Alert(
            "DscoreSlowPersist",
            f"histogram_quantile(0.99, sum by ({CLUSTER}, node, le) "
            f"(rate(dscore_persist_duration_seconds_bucket{{{job}}}[5m]))) > {s.slow_persist_p99_s}",
            # A slow disk or a busy Redis shows for minutes, a compaction burst does not: 10m, like
            # etcd's slow fsync alert.
            "10m",
            "warning",
            "dscore node {{ $labels.node }} persists slowly.",
            "The 99th percentile of {{ $labels.node }}'s writes to its storage is {{ $value | humanize }}s "
            f"(threshold {s.slow_persist_p99_s}s): every commit waits for it.",
        ),
        Alert(
            "DscoreCommittedEntryConflict",
            f'increase(dscore_protocol_events_total{{{job}, reason="conflict_with_committed"}}[10m]) > 0',
            # Only a broken commit rule (a safety bug) can cause it: at once.
            "0m",
            "critical",
            "dscore node {{ $labels.node }} was asked to overwrite a committed entry.",
            "A leader of {{ $labels.job }} asked {{ $labels.node }} to overwrite an entry it knows is "
            "committed. The follower refused, but this is a consensus safety bug.",
        ),
    ]


def rules(s: Settings) -> dict[str, Any]:
    anchor_base = s.runbook_base
    alert_rules = [
        {
            "alert": a.name,
            "expr": _expr(a.expr),
            "for": a.for_,
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": a.summary,
                "description": a.description,
                "runbook_url": f"{anchor_base}#{a.name.lower()}",
            },
        }
        for a in alerts(s)
    ]
    return {
        "groups": [
            {"name": "dscore-recording", "rules": recording_rules(s)},
            {"name": "dscore-alerts", "rules": alert_rules},
        ]
    }


HEADER = (
    "# Generated by deploy/prometheus/generate.py: edit that, then run it (a test compares the two).\n"
    '# Selector: job=~"{job}". Runbook: {runbook}.\n'
)


def render(s: Settings) -> str:
    body = yaml.safe_dump(rules(s), sort_keys=False, default_flow_style=False, width=1000, allow_unicode=True)
    return HEADER.format(job=s.job_regex, runbook=s.runbook_base) + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--job-regex", default=DEFAULT_JOB_REGEX, help="regex of the scrape jobs (default %(default)s)"
    )
    parser.add_argument("--runbook-base", default=DEFAULT_RUNBOOK_BASE, help="URL of docs/runbook.md")
    parser.add_argument("--consumer-lag-threshold", type=int, default=DEFAULT_CONSUMER_LAG_THRESHOLD)
    parser.add_argument("--slow-persist-p99-s", type=float, default=DEFAULT_SLOW_PERSIST_P99_S)
    parser.add_argument("--out", type=Path, default=RULES_FILE, help="file to write ('-': stdout)")
    args = parser.parse_args(argv)
    if '"' in args.job_regex or "\\" in args.job_regex:
        parser.error("--job-regex must not contain quotes or backslashes")
    text = render(
        Settings(args.job_regex, args.runbook_base, args.consumer_lag_threshold, args.slow_persist_p99_s)
    )
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
