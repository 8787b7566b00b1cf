"""deploy/grafana: the committed JSON is what the generator writes, every dashboard has the agreed
variables, and a real Prometheus (Debian's, started on a free port with an empty TSDB) parses every panel
query, every annotation query and every variable query, with the template variables substituted; the
availability panels' queries, recorded as rules, pass promtool unit tests of their own."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import REPO, load_script, metric_names, raw_selectors
from metrics_doubles import metrics_table, recording_rules_in_table
from prometheus_tools import PrometheusServer, PromTools, QueryError, promtool

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
generate = load_script(GRAFANA / "generate.py", "dscore_dashboards_generate")

#: what Grafana would put in for each variable: the "All" value of the query variables, and intervals
SUBSTITUTIONS = {
    "namespace": ".*",
    "job": ".*",
    "protocol": ".*",
    "node": ".*",
    "__rate_interval": "1m",
    "__interval": "1m",
}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
#: Grafana's label_values(QUERY, LABEL) variable function, around a PromQL selector
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\)$")


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in SUBSTITUTIONS, f"unknown template variable ${name} in {expr!r}"
        return SUBSTITUTIONS[name]

    return _VARIABLE.sub(value, expr)


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every panel target."""
    out = []
    for uid, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((uid, panel["title"], target["expr"]))
    return out


def other_queries() -> list[tuple[str, str, str]]:
    """(dashboard, what, expr) of every annotation and variable query."""
    out = []
    for uid, board in dashboards().items():
        for annotation in board.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                out.append((uid, f"annotation {annotation['name']}", annotation["expr"]))
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                match = _LABEL_VALUES.match(variable["query"])
                assert match, f"{uid}: variable {variable['name']} is not label_values(...)"
                out.append((uid, f"variable {variable['name']}", match.group(1)))
    return out


def test_committed_json_is_what_the_generator_writes() -> None:
    assert set(dashboards()) == set(generate.DASHBOARDS), "a dashboard file without a generator, or missing"
    for uid in generate.DASHBOARDS:
        committed = (DASHBOARDS / f"{uid}.json").read_text()
        assert committed == generate.render(uid), (
            f"deploy/grafana/dashboards/{uid}.json is stale: run .venv/bin/python deploy/grafana/generate.py"
        )


def test_the_three_dashboards_and_their_variables() -> None:
    boards = dashboards()
    assert {b["title"] for b in boards.values()} == {
        "dscore / Availability and failover",
        "dscore / Consensus health",
        "dscore / Transport and storage",
    }
    for uid, board in boards.items():
        assert board["uid"] == uid
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert list(variables) == ["datasource", "namespace", "job", "protocol", "node"]
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("namespace", "job", "protocol", "node"):
            assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
        # the later variables offer only what the namespace holds
        for name in ("job", "protocol", "node"):
            assert 'namespace=~"$namespace"' in variables[name]["query"], name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["title"] and panel.get("description"), f"{uid}: a panel without title or description"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], f"{uid}/{panel['title']}: no query"


def test_faults_are_annotations_on_the_availability_dashboard() -> None:
    annotations = dashboards()["dscore-availability"]["annotations"]["list"]
    faults = [a for a in annotations if "dscore_chaos_faults_injected_total" in a.get("expr", "")]
    assert len(faults) == 1 and faults[0]["enable"] and faults[0]["titleFormat"]


def test_no_panel_repeats_another_panels_queries() -> None:
    # The etcd mixin's "Raft proposals" panel repeats its leader-elections query; not here.
    for uid, board in dashboards().items():
        seen: dict[tuple[str, ...], str] = {}
        for panel in board["panels"]:
            key = tuple(sorted(t["expr"] for t in panel["targets"]))
            assert key not in seen, f"{uid}: '{panel['title']}' repeats the queries of '{seen[key]}'"
            seen[key] = panel["title"]


def test_queries_read_only_documented_metrics_and_select_the_job() -> None:
    documented = set(metrics_table()) | recording_rules_in_table()
    for uid, where, expr in panel_queries() + other_queries():
        unknown = metric_names(expr) - documented
        assert not unknown, f"{uid}/{where} reads undocumented {sorted(unknown)}"
        for metric, selector in raw_selectors(expr):
            assert 'job=~"$job"' in selector, f"{uid}/{where}: {metric} without the job selector"
            if not where.startswith("variable"):
                assert 'namespace=~"$namespace"' in selector, f"{uid}/{where}: {metric} without $namespace"


_GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


def test_what_groups_by_job_groups_by_namespace_too() -> None:
    # Two Helm releases of one name in two namespaces share a job: grouping by job alone merges them.
    checked = 0
    for uid, where, expr in panel_queries() + other_queries():
        for labels in _GROUPING.findall(expr):
            names = {name.strip() for name in labels.split(",")}
            if "job" in names:
                assert "namespace" in names, f"{uid}/{where}: by/on ({labels}) without namespace"
                checked += 1
    assert checked >= 3


def _panel(uid: str, title: str) -> dict[str, Any]:
    [panel] = [p for p in dashboards()[uid]["panels"] if p["title"] == title]
    return panel


def test_time_with_a_leader_and_requests_served_are_the_rules_expressions() -> None:
    rules = generate.RULES
    has_leader = " ".join(
        rules.has_leader_of('namespace=~"$namespace", job=~"$job", protocol=~"$protocol"').split()
    )
    stat = _panel("dscore-availability", "Time with a leader (1h)")["targets"][0]["expr"]
    curves = [t["expr"] for t in _panel("dscore-availability", "Availability")["targets"]]
    assert stat == f"avg(avg_over_time(({has_leader})[1h:15s]))"
    assert curves[1] == f"avg_over_time(({has_leader})[5m:15s])"
    served = _panel("dscore-availability", "Requests served (1h)")["targets"][0]["expr"]
    assert served == generate._one_line(
        rules.served_ratio('namespace=~"$namespace", job=~"$job"', "1h", "sum")
    )
    assert curves[0] == generate._one_line(
        rules.served_ratio('namespace=~"$namespace", job=~"$job"', "5m", "sum")
    )


def test_elections_panel_shows_what_paxos_and_pbft_count() -> None:
    exprs = [
        t["expr"] for t in _panel("dscore-consensus", "Elections and leader changes (per 5m)")["targets"]
    ]
    for reason in ("phase1_started", "phase1_won", "primary_suspected"):
        assert any(f'reason="{reason}"' in e for e in exprs), reason


#: what the availability panels show; `avg` panels are recorded as one series without labels
AVAILABILITY_PANELS = {
    "panel:requests_served_1h": ("Requests served (1h)", 0),
    "panel:time_with_a_leader_1h": ("Time with a leader (1h)", 0),
    "panel:requests_served_5m": ("Availability", 0),
    "panel:time_with_a_leader_5m": ("Availability", 1),
}

#: promtool unit tests of the availability panels' queries, recorded as rules (promtool test rules)
AVAILABILITY_PANEL_TESTS = """
evaluation_interval: 1m
tests:
  - name: a gateway that answered only failures served 0%, not "no data"
    interval: 1m
    input_series:
      - series: 'dscore_gateway_requests_total{job="dscore-gateway", operation="put", outcome="no_leader"}'
        values: '0+10x70'
    promql_expr_test:
      - expr: panel:requests_served_1h
        eval_time: 65m
        exp_samples:
          - labels: 'panel:requests_served_1h'
            value: 0
      - expr: panel:requests_served_5m
        eval_time: 10m
        exp_samples:
          - labels: 'panel:requests_served_5m'
            value: 0

  - name: a cluster gone for good had no leader since, not 100%
    interval: 1m
    input_series:
      # a leader until minute 10, then every node gone (stale from minute 11)
      - series: 'dscore_node_is_leader{namespace="a", job="dscore", protocol="raft", node="n1"}'
        values: '1x10 stale'
      - series: 'dscore_node_is_leader{namespace="a", job="dscore", protocol="raft", node="n2"}'
        values: '0x10 stale'
    promql_expr_test:
      # the 1h stat at 40m: 44 points with a leader (0 to 10m45s, the last sample read until the stale
      # marker) of the 161 every 15 s from 0 to 40m
      - expr: panel:time_with_a_leader_1h
        eval_time: 40m
        exp_samples:
          - labels: 'panel:time_with_a_leader_1h'
            value: 0.27329192546583825  # 44 / 161
      - expr: panel:time_with_a_leader_5m
        eval_time: 30m
        exp_samples:
          - labels: 'panel:time_with_a_leader_5m{namespace="a", job="dscore", protocol="raft"}'
            value: 0

  - name: two releases of one name in two namespaces, one with a leader and one without
    interval: 1m
    input_series:
      - series: 'dscore_node_is_leader{namespace="a", job="dscore", protocol="raft", node="n1"}'
        values: '1x20'
      - series: 'dscore_node_is_leader{namespace="b", job="dscore", protocol="raft", node="n1"}'
        values: '0x20'
    promql_expr_test:
      - expr: panel:time_with_a_leader_5m
        eval_time: 15m
        exp_samples:
          - labels: 'panel:time_with_a_leader_5m{namespace="a", job="dscore", protocol="raft"}'
            value: 1
          - labels: 'panel:time_with_a_leader_5m{namespace="b", job="dscore", protocol="raft"}'
            value: 0
"""


def availability_panel_rules(boards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The availability panels' queries (the variables at "All") as recording rules."""
    panels = {p["title"]: p for p in boards["dscore-availability"]["panels"]}
    rules = [
        {"record": record, "expr": substitute(panels[title]["targets"][index]["expr"])}
        for record, (title, index) in AVAILABILITY_PANELS.items()
    ]
    return {"groups": [{"name": "panels", "rules": rules}]}


def run_availability_panel_tests(
    tools: PromTools, boards: dict[str, dict[str, Any]], root: Path
) -> subprocess.CompletedProcess[str]:
    (root / "panels.yaml").write_text(yaml.safe_dump(availability_panel_rules(boards), sort_keys=False))
    tests = yaml.safe_load(AVAILABILITY_PANEL_TESTS)
    tests["rule_files"] = ["panels.yaml"]
    (root / "panels.test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    return promtool(tools, "test", "rules", str(root / "panels.test.yaml"))


def test_availability_panels_read_0_when_nothing_is_served_or_led(
    prom_tools: PromTools, tmp_path: Path
) -> None:
    # The requests served fall back to 0 while the gateway has no served series yet, and the time with a
    # leader counts a cluster that is gone as leaderless (not as no data, which the stat read as 100%).
    result = run_availability_panel_tests(prom_tools, dashboards(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("uid", "where", "expr"), panel_queries() + other_queries())
def test_prometheus_parses_the_query(
    prometheus_server: PrometheusServer, uid: str, where: str, expr: str
) -> None:
    try:
        prometheus_server.query(substitute(expr))
    except QueryError as error:
        pytest.fail(f"{uid}/{where}: Prometheus refuses {expr!r}: {error}")


def test_the_parse_check_can_fail(prometheus_server: PrometheusServer) -> None:
    with pytest.raises(QueryError, match="bad_data"):
        prometheus_server.query(
            substitute('sum by (node) (rate(dscore_readies_total{job=~"$job"}[$__rate_interval])')
        )
    with pytest.raises(AssertionError, match="unknown template variable"):
        substitute("rate(dscore_readies_total[$__range_typo])")
