"""deploy/prometheus: the committed rules are what the generator writes; promtool checks them and runs
their unit tests; every alert has a firing and a quiet test, the etcd mixin's annotations and more, a
runbook section, and selectors that follow the configured job regex; every name they read is documented."""

from __future__ import annotations

import re

import pytest
import yaml
from deploy_helpers import REPO, load_script, metric_names, raw_selectors, runbook_anchors
from metrics_doubles import metrics_table, recording_rules_in_table
from prometheus_tools import PromTools, promtool

RULES_DIR = REPO / "deploy" / "prometheus"
RULES = RULES_DIR / "dscore-rules.yaml"
RULE_TESTS = RULES_DIR / "tests" / "dscore-rules.test.yaml"
generate = load_script(RULES_DIR / "generate.py", "dscore_rules_generate")


def committed() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(RULES.read_text())
    return loaded


def all_rules() -> list[dict[str, object]]:
    return [rule for group in committed()["groups"] for rule in group["rules"]]  # type: ignore[attr-defined]


def alert_rules() -> list[dict[str, object]]:
    return [r for r in all_rules() if "alert" in r]


def test_committed_rules_are_what_the_generator_writes() -> None:
    assert RULES.read_text() == generate.render(generate.Settings()), (
        "deploy/prometheus/dscore-rules.yaml is stale: run .venv/bin/python deploy/prometheus/generate.py"
    )


def test_promtool_check_rules(prom_tools: PromTools) -> None:
    result = promtool(prom_tools, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(prom_tools: PromTools) -> None:
    result = promtool(prom_tools, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_broken_rule(prom_tools: PromTools, tmp_path: object) -> None:
    # The unit tests can fail: DscoreNoLeader without its `for:` fires while it should still be pending.
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "tests").mkdir()
    broken = RULES.read_text().replace(
        ") == 0\n    for: 1m\n    labels:\n      severity: critical",
        ") == 0\n    for: 0m\n    labels:\n      severity: critical",
    )
    assert broken != RULES.read_text()
    (root / "dscore-rules.yaml").write_text(broken)
    (root / "tests" / "dscore-rules.test.yaml").write_text(RULE_TESTS.read_text())
    result = promtool(prom_tools, "test", "rules", str(root / "tests" / "dscore-rules.test.yaml"))
    assert result.returncode != 0
    assert "DscoreNoLeader" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {str(r["alert"]) for r in alert_rules()}
    assert names - firing == set(), f"alerts never tested firing: {sorted(names - firing)}"
    assert names - quiet == set(), f"alerts never tested quiet: {sorted(names - quiet)}"
    assert (firing | quiet) - names == set(), "tests name alerts that do not exist"


def test_the_required_alerts_exist() -> None:
    names = {str(r["alert"]) for r in alert_rules()}
    required = {
        "DscoreNoLeader",
        "DscoreFrequentLeaderChanges",
        "DscoreProposalsFailing",
        "DscoreUnauthenticatedMessages",
        "DscoreCorruptMessages",
        "DscoreConsumerLagHigh",
        "DscoreNodeDown",
    }
    assert required <= names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_alert_has_severity_annotations_for_and_a_runbook_section(rule: dict[str, object]) -> None:
    labels = rule["labels"]
    annotations = rule["annotations"]
    assert isinstance(labels, dict) and isinstance(annotations, dict)
    assert labels.get("severity") in {"critical", "warning"}
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: no {key}"
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{rule['alert']}: no for:"
    base, _, anchor = str(annotations["runbook_url"]).partition("#")
    assert base == "docs/runbook.md"
    assert anchor == str(rule["alert"]).lower()
    assert anchor in runbook_anchors(), f"docs/runbook.md has no section '## {rule['alert']}'"


def test_every_runbook_section_belongs_to_an_alert() -> None:
    names = {str(r["alert"]).lower() for r in alert_rules()}
    assert runbook_anchors() == names


def test_rules_read_only_documented_metrics() -> None:
    documented = set(metrics_table()) | recording_rules_in_table() | {"up"}
    recorded = {str(r["record"]) for r in all_rules() if "record" in r}
    assert recorded == recording_rules_in_table(), "docs/metrics.md lists other recording rules"
    for rule in all_rules():
        unknown = metric_names(str(rule["expr"])) - documented
        assert not unknown, f"{rule.get('alert') or rule.get('record')} reads undocumented {sorted(unknown)}"


def test_every_aggregation_keeps_the_namespace() -> None:
    # A ServiceMonitor's job is the Helm release's name: two releases of one name in two namespaces share
    # a job, and an aggregation by job alone merges their clusters (no leader in one, a leader in the
    # other: no alert). Outside Kubernetes the label is absent and grouping by it changes nothing.
    checked = 0
    for rule in all_rules():
        for labels in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", str(rule["expr"])):
            names = {name.strip() for name in labels.split(",")}
            assert "namespace" in names, f"{rule.get('alert') or rule.get('record')}: by/on ({labels})"
            checked += 1
    assert checked > 20


def test_every_selector_follows_the_job_regex() -> None:
    text = generate.render(generate.Settings(job_regex="prod-dscore-[a-z]+"))
    assert ".*dscore.*" not in text
    rendered = yaml.safe_load(text)
    checked = 0
    for group in rendered["groups"]:
        for rule in group["rules"]:
            for metric, selector in raw_selectors(rule["expr"]):
                assert 'job=~"prod-dscore-[a-z]+"' in selector, f"{metric} without the job selector: {rule}"
                checked += 1
    assert checked > 20
    with pytest.raises(SystemExit):
        generate.main(["--job-regex", 'a"b', "--out", "-"])
