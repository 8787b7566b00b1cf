"""The HTML report of a real `dscore demo` run, opened in headless Chromium.

One short demo (5 s of workload, the real embedded cluster with its faults) gives the data; the page is
written as `dscore demo --html` writes it and opened from disk. Checked after layout, in the browser: no
script error, console error or blocked request (the page may fetch nothing), every chart laid out with
its data drawn (points of the lines, leader spans, availability windows, fault markers, failover bands,
all with a size on screen and the page's styles applied), and the verdict. A second page plants one
forged read into the same run's history: the checker must find it, and the page must list the operations
involved. A full-page screenshot of each is kept (DSCORE_BROWSER_SCREENSHOTS=DIR copies them there).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cdp_pipe import Browser, Page

from dscore.check import History, Verdict, check_history, read_edn_history
from dscore.check.history import OpType
from dscore.demo import DemoOptions, run_scenario
from dscore.report import ReportData, summarize, write_report

FORGED_VALUE = "never written"
VIEWPORT_WIDTH = 1280

#: per chart, after layout: its size on screen, and how much of each kind of mark is drawn and visible
CHART_STATS = """
(() => {
  const visible = (el) => { const b = el.getBBox(); return b.width > 0 && b.height > 0; };
  // a line has no area: it is drawn when it has a length
  const drawn = (el) => { const b = el.getBBox(); return b.width > 0 || b.height > 0; };
  const all = (svg, sel) => Array.from(svg.querySelectorAll(sel));
  const points = (svg, sel) => all(svg, sel).filter(drawn).reduce((n, p) => n + p.points.numberOfItems, 0);
  const out = {};
  for (const svg of document.querySelectorAll('svg[data-chart]')) {
    const box = svg.getBoundingClientRect();
    const ok = svg.querySelector('polyline.series-ok');
    out[svg.dataset.chart] = {
      width: box.width,
      height: box.height,
      title: svg.querySelector('title').textContent,
      okPoints: points(svg, 'polyline.series-ok'),
      okStroke: ok ? getComputedStyle(ok).stroke : null,
      p50Points: points(svg, 'polyline.series-p50') + all(svg, 'circle.series-p50').length,
      p99Points: points(svg, 'polyline.series-p99') + all(svg, 'circle.series-p99').length,
      faults: all(svg, 'line.fault').filter((l) => l.getBBox().height > 0).length,
      failoverBands: all(svg, 'rect.failover').filter(visible).length,
      leaderSpans: all(svg, 'rect.span-leader').filter(visible).map((r) => r.textContent),
      windows: all(svg, 'rect.window').filter(visible).length,
      downWindows: all(svg, 'rect.window.down').length,
    };
  }
  return out;
})()
"""


@dataclass(frozen=True)
class Pages:
    data: ReportData
    report: Path
    violation: Path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Pages:
    root = tmp_path_factory.mktemp("demo-report")
    history_path = root / "history.edn"
    demo = run_scenario(DemoOptions(seed=3, duration_s=5.0, live=False, history_path=history_path))
    assert demo.data is not None and demo.check.verdict is Verdict.LINEARIZABLE
    report = write_report(demo.data, root / "dscore-demo-report.html")
    # The same run with one read forged to a value nobody wrote: a real violation for the checker to find.
    ops = list(read_edn_history(history_path).ops)
    reads = [i for i, op in enumerate(ops) if op.type is OpType.OK and op.f == "get" and op.value]
    forged = reads[len(reads) // 2]
    ops[forged] = replace(ops[forged], value=FORGED_VALUE)
    check = check_history(History(tuple(ops)), model="kv", timeout_s=60)
    assert check.verdict is Verdict.NOT_LINEARIZABLE
    violation = write_report(replace(demo.data, check=check), root / "violation.html")
    return Pages(demo.data, report, violation)


def open_page(browser: Browser, path: Path) -> Page:
    page = browser.open(path.as_uri())
    page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": VIEWPORT_WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    return page


def keep_screenshot(page: Page, path: Path) -> Path:
    shot = page.screenshot(path, VIEWPORT_WIDTH)
    keep = os.environ.get("DSCORE_BROWSER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return shot


def assert_clean(page: Page, path: Path) -> None:
    assert page.errors() == []
    assert page.requested_urls() == [path.as_uri()]  # the page itself, nothing else
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT_WIDTH  # no sideways scroll


def test_the_report_renders_with_the_runs_data(browser: Browser, pages: Pages, tmp_path: Path) -> None:
    page = open_page(browser, pages.report)
    assert_clean(page, pages.report)
    summary = summarize(pages.data)
    stats: dict[str, Any] = page.evaluate(CHART_STATS)
    assert set(stats) == {"throughput", "latency", "leaders", "availability"}
    for name, chart in stats.items():
        assert chart["width"] > 600 and chart["height"] > 80, name
        assert chart["faults"] == len(pages.data.faults) == 4, name  # kill, restart, partition, heal
        assert chart["failoverBands"] == len(summary.failovers) == 2, name
    throughput, latency = stats["throughput"], stats["latency"]
    assert throughput["okPoints"] == summary.total_windows  # one point per 100 ms window
    assert throughput["okStroke"] == "rgb(0, 114, 178)"  # the page's styles applied
    up = summary.available_windows
    assert latency["p50Points"] == latency["p99Points"] == up  # one per window with a success
    leaders = stats["leaders"]["leaderSpans"]
    led = {title.split()[0] for title in leaders}
    assert len(led) >= 2, leaders  # the killed leader had a successor
    assert {f.new_leader for f in summary.failovers} <= led
    assert stats["availability"]["windows"] == summary.total_windows
    assert stats["availability"]["downWindows"] == summary.total_windows - up
    availability = f"{summary.availability:.1%}"
    assert availability in stats["availability"]["title"]
    verdict = page.evaluate("document.querySelector('[data-verdict]').innerText")
    assert verdict.startswith("Linearizable.")
    cards = page.evaluate("Array.from(document.querySelectorAll('.card .value')).map((c) => c.innerText)")
    assert availability in cards and "linearizable" in cards
    shot = keep_screenshot(page, tmp_path / "demo-report.png")
    # a blank or unstyled page compresses to a few kB; this one has four charts
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 30_000


def test_a_violation_shows_the_operations_involved(browser: Browser, pages: Pages, tmp_path: Path) -> None:
    page = open_page(browser, pages.violation)
    assert_clean(page, pages.violation)
    verdict = page.evaluate("document.querySelector('[data-verdict]').innerText")
    assert verdict.startswith("Not linearizable.")
    stuck = page.evaluate(
        "Array.from(document.querySelectorAll('table.violation tr.stuck')).map(r => r.innerText)"
    )
    assert stuck and any(FORGED_VALUE in row for row in stuck)
    linearized = page.evaluate("document.querySelectorAll('table.violation tr.linearized').length")
    assert linearized > 0
    table_width = page.evaluate("document.querySelector('table.violation').getBoundingClientRect().width")
    assert table_width > 600
    keep_screenshot(page, tmp_path / "violation.png")
