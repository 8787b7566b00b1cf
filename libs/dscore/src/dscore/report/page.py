"""`render_html(data)`: the run report as one self-contained HTML page (inline CSS and SVG, no script,
no network: a Content-Security-Policy forbids every fetch), and `write_report(data, path)`.

The page: a header with the run's shape; cards with the headline figures (availability, throughput with
CPU per op, latency, failovers, the verdict); the charts on one time axis, each beside a text summary;
the faults and failovers as a table; the checker's verdict and, for a violation, the operations involved.
The same `ReportData` always gives the same bytes (no clock, no randomness, fixed number formats).
"""

from __future__ import annotations

import math
from pathlib import Path

from dscore.check.edn import EdnValue, dumps
from dscore.check.history import Operation
from dscore.check.result import KeyResult, Verdict
from dscore.report.charts import (
    Chart,
    Frame,
    availability_chart,
    latency_chart,
    leader_chart,
    millis,
    seconds,
    throughput_chart,
)
from dscore.report.figures import Summary, summarize, window_series
from dscore.report.model import ReportData
from dscore.report.svg import esc

#: linearized ops shown before the stuck ones in a violation's table (the last ones of the prefix)
PREFIX_ROWS = 12
#: characters of a value, and of a reason, shown in a violation's table; and in their tooltips
EDN_SHOWN_CHARS = 80
REASON_SHOWN_CHARS = 240
TITLE_CHARS = 4_000

_CSS = """
:root {
  --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --ok: #047857; --bad: #b91c1c;
  --warn: #b45309;
}
* { box-sizing: border-box; }
body {
  margin: 0; color: var(--ink); background: #f8fafc;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
}
main { max-width: 1400px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { font-size: 26px; margin: 0 0 4px; }
header p { margin: 0; color: var(--muted); }
.cards {
  display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px;
  margin: 20px 0 8px;
}
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
.card .label {
  font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
}
.card .value { font-size: 24px; font-weight: 650; line-height: 1.25; white-space: nowrap; }
.card .note { font-size: 13px; color: var(--muted); }
.card.good .value { color: var(--ok); }
.card.bad .value { color: var(--bad); }
.card.warn .value { color: var(--warn); }
section {
  background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px;
  margin: 16px 0;
}
section h2 { font-size: 18px; margin: 0 0 6px; }
.chart-row {
  display: grid; grid-template-columns: minmax(0, 1fr) 300px; gap: 24px; align-items: start;
}
@media (max-width: 1100px) { .chart-row { grid-template-columns: 1fr; } }
figure { margin: 0; }
svg.chart { width: 100%; height: auto; display: block; font-family: inherit; }
.summary p { margin: 0 0 8px; font-size: 14px; }
ul.legend {
  list-style: none; display: flex; flex-wrap: wrap; gap: 16px; margin: 0 0 4px; padding: 0;
  font-size: 13px; color: var(--muted);
}
ul.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 18px; height: 10px; border-radius: 2px; }
.swatch.line { height: 3px; }
.swatch.hatch {
  background: repeating-linear-gradient(45deg, #6b7280 0 2px, #e5e7eb 2px 5px) !important;
}
.grid { stroke: #eef0f3; stroke-width: 1; } .grid.minor { stroke: #f5f6f8; }
.axis-line { stroke: #9ca3af; stroke-width: 1; }
.tick { font-size: 12px; fill: var(--muted); }
.axis-title { font-size: 12px; fill: #4b5563; }
.area-ok { fill: #0072B2; fill-opacity: .16; stroke: none; }
.series { fill: none; stroke-width: 1.8; stroke-linejoin: round; }
.series-ok { stroke: #0072B2; }
polyline.series-p50 { stroke: #009E73; } polyline.series-p99 { stroke: #D55E00; }
circle.series-p50 { fill: #009E73; } circle.series-p99 { fill: #D55E00; }
.bar-error { fill: #D55E00; fill-opacity: .8; }
.failover { fill: #F5C26B; fill-opacity: .35; }
.failover-label { font-size: 12px; font-weight: 600; fill: #92400e; }
.fault { stroke: #374151; stroke-width: 1.2; stroke-dasharray: 4 3; }
.fault-badge circle { fill: #374151; }
.fault-badge text { font-size: 11px; font-weight: 700; fill: #fff; }
.fault-label { font-size: 12px; fill: #374151; }
.lane { fill: #f3f4f6; } .lane-label { font-size: 13px; font-weight: 700; }
.span-candidate { fill-opacity: .35; }
.span-label { font-size: 11px; fill: #374151; }
.span-label.on-dark { fill: #fff; font-weight: 600; }
.window.up { fill: #009E73; } .window.down { fill: #D55E00; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td {
  text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top;
}
th { font-size: 13px; color: var(--muted); font-weight: 600; white-space: nowrap; }
td.role { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td:not(.num) { overflow-wrap: anywhere; }
td.num { white-space: nowrap; }
code, .edn { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
.verdict { border-radius: 8px; padding: 12px 16px; font-size: 16px; margin: 4px 0 12px; }
.verdict.good { background: #ecfdf5; color: #065f46; border: 1px solid #a7f3d0; }
.verdict.bad { background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; }
.verdict.warn { background: #fffbeb; color: #92400e; border: 1px solid #fde68a; }
tr.stuck td { background: #fef2f2; } tr.elided td { color: var(--muted); font-style: italic; }
details pre {
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px; background: #f9fafb;
  padding: 10px; border-radius: 6px;
}
footer { color: var(--muted); font-size: 13px; margin-top: 24px; }
footer code { font-size: 12px; }
"""


def render_html(data: ReportData) -> str:
    """The report page for `data` (deterministic: the same data gives the same text)."""
    summary = summarize(data)
    frame = Frame(data, summary, window_series(data.completions, data.duration_s))
    charts = (throughput_chart(frame), latency_chart(frame), leader_chart(frame), availability_chart(frame))
    title = f"dscore {esc(data.title)}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        _header(data),
        _cards(data, summary),
        *(_chart_section(chart) for chart in charts),
        _faults_section(data, summary),
        _verdict_section(data),
        _footer(data),
        "</main>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def write_report(data: ReportData, path: Path) -> Path:
    """Write the page to `path` (UTF-8); returns the absolute path."""
    path.write_text(render_html(data), encoding="utf-8")
    return path.resolve()


def _header(data: ReportData) -> str:
    return (
        "<header>"
        f"<h1>dscore {esc(data.title)}</h1>"
        f"<p>{len(data.nodes)}-node {esc(data.protocol.capitalize())} on the {esc(data.stack)} stack, seed "
        f"{data.seed}: {data.clients} clients on {data.keys} keys for {seconds(data.duration_s)}, "
        f"{len(data.faults)} faults injected. Times are seconds since the workload started.</p>"
        "</header>"
    )


def _card(label: str, value: str, note: str, tone: str = "") -> str:
    cls = f"card {tone}".strip()
    return (
        f'<div class="{cls}"><div class="label">{esc(label)}</div><div class="value">{value}</div>'
        f'<div class="note">{note}</div></div>'
    )


def _cards(data: ReportData, summary: Summary) -> str:
    check = data.check
    tone = {Verdict.LINEARIZABLE: "good", Verdict.NOT_LINEARIZABLE: "bad"}.get(check.verdict, "warn")
    gaps = [f.seconds for f in summary.failovers]
    measured = [g * 1000 for g in gaps if g is not None]
    if len(measured) < len(gaps):
        failover_value = "no recovery"
    elif not gaps:
        failover_value = "none"
    elif len(gaps) <= 3:
        failover_value = " / ".join(f"{g:.0f}" for g in measured) + " ms"
    else:
        failover_value = f"max {max(measured):.0f} ms"
    cpu = (
        f"{summary.cpu_us_per_op:.0f} µs CPU per op"
        if summary.cpu_us_per_op is not None
        else "CPU not measured"
    )
    cards = [
        _card(
            "availability",
            f"{summary.availability:.1%}",
            f"{summary.available_windows} of {summary.total_windows} windows of 100 ms up",
            "good" if summary.availability >= 0.9 else "warn",
        ),
        _card("throughput", f"{summary.throughput_ops_s:.0f} ops/s", f"{summary.ok} successful ops; {cpu}"),
        _card(
            "latency p50 / p99",
            f"{millis(summary.latency_ms[50]).removesuffix(' ms')} / {millis(summary.latency_ms[99])}",
            "successful ops, retries included",
        ),
        _card(
            "failover gaps",
            failover_value,
            f"{len(gaps)} leader{'s' if len(gaps) != 1 else ''} removed; fault to first write by the new "
            "leader",
            "" if all(g is not None for g in gaps) else "bad",
        ),
        _card(
            "linearizability",
            esc(check.verdict.value.replace("_", " ").lower()),
            f"{check.ops_checked} ops, {len(check.per_key)} keys, model {esc(check.model)}",
            tone,
        ),
        _card(
            "replicas",
            "converged" if data.converged else "diverged",
            "every replica ended with the same state" if data.converged else "replicas ended different",
            "good" if data.converged and not data.node_failures else "bad",
        ),
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _chart_section(chart: Chart) -> str:
    legend = "".join(
        f'<li><span class="swatch {item.shape}" style="background:{item.colour}"></span>'
        f"{esc(item.label)}</li>"
        for item in chart.legend
    )
    return (
        f'<section id="{chart.key}" aria-labelledby="{chart.key}-heading">'
        f'<h2 id="{chart.key}-heading">{esc(chart.title)}</h2>'
        f'<div class="chart-row"><figure><ul class="legend">{legend}</ul>{chart.svg}</figure>'
        f'<div class="summary">{chart.summary}</div></div>'
        "</section>"
    )


def _faults_section(data: ReportData, summary: Summary) -> str:
    # `summary.failovers` has one entry per fault that removed a leader, in fault order.
    remaining = iter(summary.failovers)
    rows = []
    for number, fault in enumerate(data.faults, 1):
        failover = next(remaining) if fault.removed_leader is not None else None
        if failover is None:
            gap, leader = "", ""
        elif failover.seconds is None:
            gap, leader = "no recovery seen", "-"
        else:
            gap, leader = millis(failover.seconds * 1000), esc(failover.new_leader or "-")
        rows.append(
            f'<tr><td class="num">{number}</td><td class="num">{fault.at_s:.2f}</td>'
            f'<td>{esc(fault.description)}</td><td class="num">{gap}</td><td>{leader}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="5">No fault was injected.</td></tr>')
    return (
        '<section id="faults" aria-labelledby="faults-heading">'
        '<h2 id="faults-heading">Faults and failovers</h2>'
        "<p>A failover gap is the time from a fault that removed the leader to the first successful write "
        "answered by another node: how long clients could not write.</p>"
        '<table><thead><tr><th class="num">#</th><th class="num">t (s)</th><th>fault</th>'
        '<th class="num">failover gap</th><th>new leader</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _cut(text: str, shown_chars: int, cls: str = "") -> str:
    """`text` as HTML; a long one (an append key's state grows with the run) is cut in the middle, and
    shown whole, up to `TITLE_CHARS`, when pointed at."""
    attribute = f' class="{cls}"' if cls else ""
    if len(text) <= shown_chars:
        return f"<span{attribute}>{esc(text)}</span>"
    half = shown_chars // 2
    whole = text if len(text) <= TITLE_CHARS else text[:TITLE_CHARS] + "…"
    return f'<span{attribute} title="{esc(whole)}">{esc(text[:half])}…{esc(text[-half:])}</span>'


def _edn(value: EdnValue) -> str:
    return _cut(dumps(value), EDN_SHOWN_CHARS, "edn")


def _operation_cells(operation: Operation) -> str:
    invoke, completion = operation.invoke, operation.completion
    call = f"{esc(invoke.f)} {_edn(invoke.value)}" if invoke.value is not None else esc(invoke.f)
    if completion is None:
        returned, span = "never completed", f"{invoke.index}-"
    else:
        returned = f"{esc(completion.type.value)} {_edn(completion.value)}"
        span = f"{invoke.index}-{completion.index}"
    return (
        f"<td>{esc(dumps(operation.process))}</td><td>{call}</td><td>{returned}</td>"
        f'<td class="num">{span}</td>'
    )


def _violation_table(result: KeyResult) -> str:
    rows = []
    prefix = result.longest_prefix
    shown = prefix[-PREFIX_ROWS:]
    if len(prefix) > len(shown):
        rows.append(
            f'<tr class="elided"><td colspan="7">{len(prefix) - len(shown)} earlier operations of the '
            "linearizable prefix are not shown</td></tr>"
        )
    first = len(prefix) - len(shown) + 1
    for number, step in enumerate(shown, first):
        rows.append(
            f'<tr class="linearized"><td class="num">{number}</td><td class="role">linearized</td>'
            f"{_operation_cells(step.operation)}<td>state after: {_edn(step.state_after)}</td></tr>"
        )
    for stuck in result.stuck_ops:
        rows.append(
            f'<tr class="stuck"><td class="num">-</td><td class="role">cannot come next</td>'
            f"{_operation_cells(stuck.operation)}<td>{_cut(stuck.reason, REASON_SHOWN_CHARS)}</td></tr>"
        )
    return (
        f"<h3>Key {_edn(result.key)}</h3>"
        f"<p>After the linearizable prefix shown ({len(prefix)} operations) the key held "
        f"{_edn(result.stuck_state)}; none of the operations that must come next can take effect in that "
        "state.</p>"
        '<table class="violation"><thead><tr><th class="num">#</th><th>role</th><th>process</th>'
        '<th>operation</th><th>returned</th><th class="num">history index</th><th>state after / why not</th>'
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _verdict_section(data: ReportData) -> str:
    check = data.check
    budget = "" if check.timeout_s is None else f", budget {check.timeout_s:g} s"
    scope = (
        f"{check.ops_checked} operations on {len(check.per_key)} keys, model {esc(check.model)}, "
        f"checked in {check.elapsed_s:.2f} s{budget}"
    )
    if check.verdict is Verdict.LINEARIZABLE:
        banner = (
            '<div class="verdict good" data-verdict="LINEARIZABLE"><strong>Linearizable.</strong> '
            "The checker found an order of every operation, consistent with real time, that one copy of "
            f"the store could have produced ({scope}).</div>"
        )
    elif check.verdict is Verdict.NOT_LINEARIZABLE:
        banner = (
            '<div class="verdict bad" data-verdict="NOT_LINEARIZABLE"><strong>Not linearizable.</strong> '
            f"{len(check.violations)} key(s) have no order of their operations consistent with real "
            f"time that one copy of the store could have produced ({scope}). The operations involved:</div>"
        )
    else:
        banner = (
            '<div class="verdict warn" data-verdict="UNKNOWN"><strong>Unknown.</strong> '
            f"The checker ran out of its time budget before deciding ({scope}).</div>"
        )
    body = [banner]
    body.extend(_violation_table(result) for result in check.violations)
    if check.explanation and check.verdict is not Verdict.LINEARIZABLE:
        body.append(
            "<details><summary>The checker's explanation, as text</summary>"
            f"<pre>{esc(check.explanation)}</pre></details>"
        )
    if check.ops_skipped:
        body.append(
            f"<p>{check.ops_skipped} operations were skipped: the model does not know their function.</p>"
        )
    if not data.converged:
        body.append('<p class="bad">The replicas did not converge to the same state.</p>')
    for failure in data.node_failures:
        body.append(f'<p class="bad">Node failure: {esc(failure)}</p>')
    return (
        '<section id="verdict" aria-labelledby="verdict-heading">'
        '<h2 id="verdict-heading">Linearizability verdict</h2>' + "".join(body) + "</section>"
    )


def _footer(data: ReportData) -> str:
    settings = ", ".join(f"<code>{esc(k)}={esc(v)}</code>" for k, v in data.settings)
    cpu = (
        ""
        if data.cpu_s is None or math.isnan(data.cpu_s)
        else f" CPU during the workload: {data.cpu_s:.2f} s."
    )
    return (
        "<footer>"
        f"<p>Generated by <code>dscore demo</code> from the run's own observations.{cpu}</p>"
        + (f"<p>Settings: {settings}</p>" if settings else "")
        + "</footer>"
    )
