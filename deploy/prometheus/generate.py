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
#: the share of the gateway's counted requests (served or failed; the client's doing left out) that must be
#: served over the SLO period: 99.9% leaves an error budget of 0.1% (43 minutes of total failure in 30 days)
DEFAULT_AVAILABILITY_SLO = 0.999


@dataclass(frozen=True)
class Settings:
    job_regex: str = DEFAULT_JOB_REGEX
    runbook_base: str = DEFAULT_RUNBOOK_BASE
    consumer_lag_threshold: int = DEFAULT_CONSUMER_LAG_THRESHOLD
    slow_persist_p99_s: float = DEFAULT_SLOW_PERSIST_P99_S
    availability_slo: float = DEFAULT_AVAILABILITY_SLO


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


@dataclass(frozen=True)
class BurnRate:
    """One pair of the multi-window, multi-burn-rate alerts (Google's SRE workbook, chapter 5, "Alerting on
    SLOs", table 5-8): it fires while the error ratio over both `long` and `short` exceeds `factor` times the
    error budget (1 - SLO). `factor` = the share of a 30-day budget spent in `long` x 720 h / `long`: at that
    error ratio `long` spends `budget_share` of the month's budget. The long window keeps short blips out
    (precision); the short one makes the alert stop a few minutes after the errors stop (reset time)."""

    factor: float
    long: str
    short: str
    #: the share of a 30-day error budget that `long` spends at `factor` (for the annotations and docs)
    budget_share: str


#: the SLO period the factors assume (the workbook's): 30 days
SLO_PERIOD_H = 30 * 24
#: Page: 2% of the 30-day budget in 1 h, 0.02 x 720 h / 1 h = 14.4 (a 99.9% SLO: more than 1.44% of the
#: requests failing, over the last hour and the last 5 minutes). At 14.4x the whole budget is gone in
#: 30 d / 14.4 = 50 h; a total outage trips it after 1.44% of an hour, 52 s.
BURN_FAST = BurnRate(14.4, "1h", "5m", "2%")
#: Warning: 5% of the budget in 6 h, 0.05 x 720 h / 6 h = 6 (a 99.9% SLO: more than 0.6% failing, over the
#: last 6 hours and the last 30 minutes). At 6x the budget lasts 5 days: a working day's notice is enough.
#: It catches the slow leaks the fast pair misses (a steady 1% of failed requests never reaches 1.44%).
#: The workbook's third pair (10% in 3 days at 1x, windows 3d/6h, a ticket) is left out: a 3-day rate()
#: over the raw per-pod, per-outcome counters is a costly rule, and the 1x burn it catches shows on the
#: "Availability and failover" dashboard long before it matters.
BURN_SLOW = BurnRate(6, "6h", "30m", "5%")
#: every window an availability ratio is recorded over: the dashboards' 5m and 1h, and the burn-rate pairs'
AVAILABILITY_WINDOWS = ("5m", "30m", "1h", "6h")


def availability_rule(window: str) -> str:
    return f"job:dscore_gateway_availability:ratio_rate{window}"


def burn_threshold(s: Settings, burn: BurnRate) -> float:
    """The error ratio above which `burn` fires: `factor` x (1 - SLO), rounded to drop float noise
    (14.4 x (1 - 0.999) is 0.014400000000000013)."""
    return round(burn.factor * (1 - s.availability_slo), 10)


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.6g}%"


def recording_rules(s: Settings) -> list[dict[str, Any]]:
    job = f'job=~"{s.job_regex}"'
    rules: list[dict[str, Any]] = []
    for window in AVAILABILITY_WINDOWS:
        rules.append(
            {
                "record": availability_rule(window),
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
#: a gateway in an annotation: "dscore-gateway", "dscore-gateway in namespace a"
GATEWAY_IN = "{{ $labels.job }}{{ with $labels.namespace }} in namespace {{ . }}{{ end }}"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str


def burn_rate_expr(s: Settings, burn: BurnRate) -> str:
    """Both windows' error ratio (1 - availability) above the pair's threshold, per gateway (`namespace`,
    `job`); the value is the long window's error ratio. Without counted requests the availability rules
    give nothing (no series) or NaN (0 / 0: series, but no request in the window), and NaN > x is false:
    an idle gateway never fires, one that answers only failures reads availability 0 and does.

    It reads the recording rules, not the raw counters: a 6-hour rate() of every per-pod, per-outcome
    series on every evaluation is what recording rules are for. Rule groups are evaluated independently, so
    the alert may see the rules' value of one evaluation before: against windows of 5 minutes to 6 hours
    that changes nothing (DscoreNoLeader, whose `for:` is 1m, is another matter)."""
    threshold = burn_threshold(s, burn)
    return f"""
1 - {availability_rule(burn.long)} > {threshold}
and on ({GATEWAY})
1 - {availability_rule(burn.short)} > {threshold}
"""


def burn_rate_description(s: Settings, burn: BurnRate, last_long: str, last_short: str, span: str) -> str:
    threshold = burn_threshold(s, burn)
    budget = round(1 - s.availability_slo, 10)
    return (
        f"{{{{ $value | humanizePercentage }}}} of the counted requests to {GATEWAY_IN} failed over the last "
        f"{last_long}, and more than {_percent(threshold)} over the last {last_short} (threshold "
        f"{_percent(threshold)}: {burn.factor:g} times the {_percent(budget)} error budget of the "
        f"{_percent(s.availability_slo)} availability SLO; at that rate {burn.budget_share} of the 30-day "
        f"budget goes in {span}, and all of it in {SLO_PERIOD_H / burn.factor / 24:.2g} days)."
    )


def alerts(s: Settings) -> list[Alert]:
    job = f'job=~"{s.job_regex}"'
    return [
        Alert(
            "DscoreAvailabilityBudgetBurnFast",
            burn_rate_expr(s, BURN_FAST),
            # No `for:`, as in the workbook: the 5m window is the confirmation a `for:` would give (the
            # failures go on now), and a `for:` would only delay the page. A single failover of a few
            # seconds can lift the 5m window above 1.44% but not the hour (5 s of failures are 0.14% of
            # it): the 1h window is what keeps blips out.
            "0m",
            "critical",
            f"dscore gateway {GATEWAY_IN} spends its availability error budget fast.",
            burn_rate_description(s, BURN_FAST, "hour", "5 minutes", "an hour"),
        ),
        Alert(
            "DscoreAvailabilityBudgetBurnSlow",
            burn_rate_expr(s, BURN_SLOW),
            # No `for:` either: the 30m window confirms that the failures go on.
            "0m",
            "warning",
            f"dscore gateway {GATEWAY_IN} spends its availability error budget steadily.",
            burn_rate_description(s, BURN_SLOW, "6 hours", "30 minutes", "6 hours"),
        ),
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
    parser.add_argument(
        "--availability-slo",
        type=float,
        default=DEFAULT_AVAILABILITY_SLO,
        help="the gateway's availability objective, a fraction (default %(default)s: 99.9%%)",
    )
    parser.add_argument("--out", type=Path, default=RULES_FILE, help="file to write ('-': stdout)")
    args = parser.parse_args(argv)
    if '"' in args.job_regex or "\\" in args.job_regex:
        parser.error("--job-regex must not contain quotes or backslashes")
    # The fast pair's threshold must stay below 1 (an error ratio cannot exceed it): the SLO above
    # 1 - 1 / 14.4, 93.06%. Nothing below 90% is an availability objective anyway.
    if not 0 < BURN_FAST.factor * (1 - args.availability_slo) < 1:
        parser.error(
            f"--availability-slo must be a fraction above {1 - 1 / BURN_FAST.factor:.4f} and below 1 "
            "(0.999 for 99.9%)"
        )
    text = render(
        Settings(
            args.job_regex,
            args.runbook_base,
            args.consumer_lag_threshold,
            args.slow_persist_p99_s,
            args.availability_slo,
        )
    )
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
