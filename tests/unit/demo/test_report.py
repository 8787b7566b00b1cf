"""`dscore.report`: who-led-when spans, per-window figures, and the HTML page drawn from a `ReportData`.

The page is checked here as text (structure, numbers, escaping, determinism); tests/browser/ checks that a
real browser renders the page of a real demo run.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from dscore.check import HistoryRecorder, Verdict, check_history
from dscore.core.errors import LocalError
from dscore.report import (
    FaultEvent,
    ReportData,
    RoleSpan,
    RoleTracker,
    render_html,
    summarize,
    window_series,
    write_report,
)
from dscore.report.charts import LEFT, RIGHT, WIDTH
from dscore.runtime.client import Completion, OpOutcome

# -- who led when ---------------------------------------------------------------------------------------


def test_role_tracker_closes_a_span_when_role_or_term_changes() -> None:
    tracker = RoleTracker()
    tracker.observe(0.0, {"n1": ("leader", 1), "n2": ("follower", 1)})
    tracker.observe(0.5, {"n1": ("leader", 1), "n2": ("follower", 1)})  # nothing changed
    tracker.observe(1.0, {"n1": ("down", None), "n2": ("candidate", 2)})
    tracker.observe(1.2, {"n1": ("down", None), "n2": ("leader", 2)})
    tracker.observe(1.5, {"n2": ("leader", 2)})  # n1 no longer observed: its span ends here
    spans = tracker.finish(2.0)
    assert spans == (
        RoleSpan("n1", "leader", 0.0, 1.0, 1),
        RoleSpan("n2", "follower", 0.0, 1.0, 1),
        RoleSpan("n1", "down", 1.0, 1.5, None),
        RoleSpan("n2", "candidate", 1.0, 1.2, 2),
        RoleSpan("n2", "leader", 1.2, 2.0, 2),
    )


def test_role_tracker_refuses_time_going_back_and_keeps_a_bound() -> None:
    tracker = RoleTracker(max_spans=2)
    tracker.observe(1.0, {"n1": ("leader", 1)})
    with pytest.raises(LocalError):
        tracker.observe(0.5, {"n1": ("leader", 1)})
    for step in range(2, 6):
        tracker.observe(float(step), {"n1": ("leader", step)})
    assert len(tracker.finish(10.0)) == 2 and tracker.dropped == 3


# -- figures per window ---------------------------------------------------------------------------------


def ok(t: float, latency_ms: float, node: str = "n1", f: str = "put") -> Completion:
    return Completion(t, latency_ms / 1000, OpOutcome.OK, f, node)


def test_window_series_counts_and_percentiles() -> None:
    completions = [
        ok(0.01, 1.0),
        ok(0.02, 3.0),
        ok(0.05, 2.0),
        Completion(0.06, 0.001, OpOutcome.FAIL, "cas", "n1", "CAS_MISMATCH"),
        Completion(0.15, 0.25, OpOutcome.FAIL, "get", None, "timeout"),
        Completion(0.16, 2.0, OpOutcome.UNKNOWN, "put", None, "timeout"),
        ok(0.25, 10.0),
        ok(0.30, 99.0),  # == duration: outside [0, duration)
    ]
    windows = window_series(completions, 0.3)
    assert [(w.ok, w.cas_mismatches, w.failed_other, w.unknown) for w in windows] == [
        (3, 1, 0, 0),
        (0, 0, 1, 1),
        (1, 0, 0, 0),
    ]
    assert windows[0].p50_ms == pytest.approx(2.0) and windows[0].p99_ms == pytest.approx(3.0)
    assert math.isnan(windows[1].p50_ms) and not windows[1].up
    assert windows[0].ok_per_s == pytest.approx(30.0) and windows[1].not_ok_per_s == pytest.approx(20.0)
    # a last partial window counts its rate over its own width
    assert window_series([ok(0.21, 1.0)], 0.25)[2].ok_per_s == pytest.approx(1 / 0.05)


# -- a report with everything in it ---------------------------------------------------------------------


def violation() -> object:
    """A real checker result for a stale read: put x, append y, then a read of x."""
    recorder = HistoryRecorder()
    recorder.ok(recorder.invoke(0, "put", "k1", "x"))
    recorder.ok(recorder.invoke(1, "append", "k1", "y;"))
    recorder.ok(recorder.invoke(2, "get", "k1"), "x")
    result = check_history(recorder.history(), model="kv")
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    return result


def sample_data(check: object | None = None) -> ReportData:
    """2 s of a 3-node run: n1 leads, is killed at 0.5 s, n2 leads from 0.7 s (first write at 0.75 s)."""
    completions = []
    for i in range(200):
        t = i * 0.01
        if 0.5 <= t < 0.75:
            continue  # no success while the cluster has no leader
        completions.append(ok(t, 1.0 + (i % 7), "n1" if t < 0.5 else "n2", "put" if i % 2 else "get"))
    completions.append(Completion(0.6, 0.25, OpOutcome.UNKNOWN, "put", None, "timeout"))
    completions.sort(key=lambda c: c.time_s)
    recorder = HistoryRecorder()
    recorder.ok(recorder.invoke(0, "put", "k1", "x"))
    linearizable = check_history(recorder.history(), model="kv")
    return ReportData(
        title="demo: 3-node Raft, seed 1",
        stack="embedded",
        protocol="raft",
        nodes=("n1", "n2", "n3"),
        seed=1,
        clients=2,
        keys=1,
        duration_s=2.0,
        completions=tuple(completions),
        faults=(
            FaultEvent(0.5, "kill_leader", "kill -9 leader n1", "n1"),
            FaultEvent(1.2, "restart", "restart n1 from its storage <&>"),
        ),
        roles=(
            RoleSpan("n1", "leader", 0.0, 0.5, 1),
            RoleSpan("n1", "down", 0.5, 1.2, None),
            RoleSpan("n2", "pre_candidate", 0.62, 0.65, 1),
            RoleSpan("n2", "candidate", 0.65, 0.7, 2),
            RoleSpan("n2", "leader", 0.7, 2.0, 2),
        ),
        check=linearizable if check is None else check,  # type: ignore[arg-type]
        converged=True,
        cpu_s=0.5,
        settings=(("tick_interval_s", "0.01"),),
    )


def svg_of(page: str, chart: str) -> str:
    match = re.search(rf'<svg [^>]*data-chart="{chart}".*?</svg>', page, re.S)
    assert match, f"no {chart} chart"
    return match.group(0)


def test_summary_uses_the_demo_definitions() -> None:
    summary = summarize(sample_data())
    assert summary.total_windows == 20 and summary.available_windows == 18  # 0.5-0.7 s had no success
    assert summary.availability == pytest.approx(0.9)
    assert summary.unknown == 1 and summary.ok == 175
    (failover,) = summary.failovers
    assert failover.new_leader == "n2" and failover.seconds == pytest.approx(0.25)  # first write by n2
    assert summary.cpu_us_per_op == pytest.approx(0.5 / 175 * 1e6)


def test_page_charts_carry_the_data() -> None:
    data = sample_data()
    page = render_html(data)
    windows = window_series(data.completions, data.duration_s)
    x = lambda t: LEFT + t / data.duration_s * (WIDTH - RIGHT - LEFT)  # noqa: E731

    throughput = svg_of(page, "throughput")
    (points,) = re.findall(r'<polyline class="series series-ok" points="([^"]*)"', throughput)
    assert len(points.split()) == len(windows) == 20
    band = re.search(r'<rect class="failover" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', throughput)
    assert band and float(band.group(1)) == pytest.approx(x(0.5), abs=0.1)
    assert float(band.group(2)) == pytest.approx(x(0.75) - x(0.5), abs=0.2)
    assert "250 ms" in throughput  # the failover's label
    assert throughput.count('class="bar-error"') == 1  # the one unknown outcome

    for chart in ("throughput", "latency", "leaders", "availability"):
        svg = svg_of(page, chart)
        assert svg.count('<line class="fault"') == 2
        assert f'aria-labelledby="{chart}-title {chart}-desc"' in svg and "<title id=" in svg

    latency = svg_of(page, "latency")
    # the gap without successes splits each series in two
    assert latency.count('<polyline class="series series-p50"') == 2
    assert "latency (ms, log scale)" in latency

    leaders = svg_of(page, "leaders")
    assert leaders.count('class="span span-leader"') == 2 and leaders.count('class="span span-down"') == 1
    assert leaders.count('class="span span-candidate"') == 2
    assert ">term 2<" in leaders

    availability = svg_of(page, "availability")
    assert availability.count('class="window up"') == 18 and availability.count('class="window down"') == 2

    assert "90.0%" in page and 'data-verdict="LINEARIZABLE"' in page
    assert "time since the workload started (s)" in page


def test_page_is_self_contained_and_escapes_text() -> None:
    page = render_html(sample_data())
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * 4  # SVG namespaces only
    assert "default-src 'none'" in page  # and the browser may fetch nothing
    assert "restart n1 from its storage &lt;&amp;&gt;" in page and "<&>" not in page


def test_a_violation_lists_the_operations_involved() -> None:
    page = render_html(sample_data(violation()))
    assert 'data-verdict="NOT_LINEARIZABLE"' in page and "not linearizable" in page
    table = re.search(r'<table class="violation">.*?</table>', page, re.S)
    assert table
    rows = re.findall(r'<tr class="(linearized|stuck)">(.*?)</tr>', table.group(0), re.S)
    assert [kind for kind, _ in rows] == ["linearized", "linearized", "stuck"]
    assert "read &quot;x&quot;, but the key held &quot;xy;&quot;" in rows[-1][1]
    assert "&quot;xy;&quot;" in rows[1][1]  # state after the append


def test_long_values_are_cut_in_the_violation_table() -> None:
    long_value = "a" * 300 + "MIDDLE" + "z" * 300
    recorder = HistoryRecorder()
    recorder.ok(recorder.invoke(0, "put", "k1", long_value))
    recorder.ok(recorder.invoke(1, "get", "k1"), "stale")
    page = render_html(sample_data(check_history(recorder.history(), model="kv")))
    table = re.search(r'<table class="violation">.*?</table>', page, re.S)
    assert table and "MIDDLE" not in re.sub(r'title="[^"]*"', "", table.group(0))
    assert f'title="&quot;{long_value}&quot;"' in table.group(0)
    assert "&quot;aaaa" in table.group(0) and "zzzz&quot;" in table.group(0) and "…" in table.group(0)


def test_the_page_is_deterministic_across_processes(tmp_path: Path) -> None:
    data = sample_data(violation())
    page = render_html(data)
    assert render_html(pickle.loads(pickle.dumps(data))) == page
    assert render_html(replace(data, cpu_s=0.6)) != page  # the digest below is of something that varies
    data_path = tmp_path / "data.pickle"
    data_path.write_bytes(pickle.dumps(data))
    script = (
        "import hashlib, pickle, sys; from dscore.report import render_html; "
        "data = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "print(hashlib.sha256(render_html(data).encode()).hexdigest())"
    )
    expected = hashlib.sha256(page.encode()).hexdigest()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script, str(data_path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == expected


def test_write_report_writes_the_page(tmp_path: Path) -> None:
    data = sample_data()
    written = write_report(data, tmp_path / "r.html")
    assert written.is_absolute() and written.read_text(encoding="utf-8") == render_html(data)
