"""deploy/grafana: the committed JSON is what the generator writes, every dashboard has the agreed
variables, and a real Prometheus (Debian's, started on a free port with an empty TSDB) parses every panel
query, every annotation query and every variable query, with the template variables substituted."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from deploy_helpers import REPO, load_script, metric_names, raw_selectors
from metrics_doubles import metrics_table, recording_rules_in_table
from prometheus_tools import PrometheusServer, QueryError

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
generate = load_script(GRAFANA / "generate.py", "dscore_dashboards_generate")

#: what Grafana would put in for each variable: the "All" value of the query variables, and intervals
SUBSTITUTIONS = {"job": ".*", "protocol": ".*", "node": ".*", "__rate_interval": "1m", "__interval": "1m"}
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
        assert list(variables) == ["datasource", "job", "protocol", "node"]
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("job", "protocol", "node"):
            assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
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
