"""The report's charts as inline SVG, each with a text summary (for people who would rather read, and
for screen readers).

Every chart shares one time axis (seconds since the workload started, same width and margins), so the
charts line up one above the other: a fault is a dashed vertical line with its number at the top, and
each failover's gap (the fault to the first write answered by the new leader) a shaded band.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from dscore.report.figures import Summary, Window
from dscore.report.model import CANDIDATES, DOWN, LEADER, FaultEvent, ReportData, RoleSpan
from dscore.report.svg import LinearScale, LogScale, esc, nice_step, num, tick_label, ticks

WIDTH = 960
LEFT = 70
RIGHT = 20
#: room above the plot for the faults' numbered badges
TOP = 34
#: room below for the time ticks and the axis title
BOTTOM = 46
#: colour-blind-safe lane colours (Okabe and Ito), one per node, in node order
NODE_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999933", "#882255")
LANE_H = 26
LANE_GAP = 8
TIME_AXIS_TITLE = "time since the workload started (s)"


@dataclass(frozen=True, slots=True)
class Frame:
    """What every chart shares: the data, its figures, its windows and the time scale."""

    data: ReportData
    summary: Summary
    windows: tuple[Window, ...]

    @property
    def x(self) -> LinearScale:
        return LinearScale(0.0, max(self.data.duration_s, 1e-9), LEFT, WIDTH - RIGHT)


@dataclass(frozen=True, slots=True)
class Legend:
    label: str
    colour: str
    #: "line", "area", "bar" or "hatch"
    shape: str


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    svg: str
    #: HTML paragraphs that say in words what the chart shows
    summary: str
    legend: tuple[Legend, ...] = ()


def node_colour(data: ReportData, node_id: str) -> str:
    index = data.nodes.index(node_id) if node_id in data.nodes else len(data.nodes)
    return NODE_COLOURS[index % len(NODE_COLOURS)]


def fault_label(fault: FaultEvent) -> str:
    """A short label for a fault marker."""
    if fault.removed_leader is not None:
        verb = {"kill_leader": "kill", "partition_leader": "partition"}.get(fault.kind, fault.kind)
        return f"{verb} {fault.removed_leader}"
    return fault.kind.replace("_", " ")


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def millis(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


# -- shared pieces ----------------------------------------------------------------------------------------


def _open(key: str, title: str, description: str, height: float) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {num(height)}" '
        f'width="{WIDTH}" height="{num(height)}" role="img" '
        f'aria-labelledby="{key}-title {key}-desc" data-chart="{key}" class="chart">',
        f'<title id="{key}-title">{esc(title)}</title>',
        f'<desc id="{key}-desc">{esc(description)}</desc>',
    ]


def _time_axis(frame: Frame, top: float, bottom: float) -> list[str]:
    x = frame.x
    out = ['<g class="axis x-axis" aria-hidden="true">']
    for value in ticks(0.0, frame.data.duration_s, 12):
        px = num(x(value))
        label = tick_label(value)
        out.append(f'<line class="grid" x1="{px}" y1="{num(top)}" x2="{px}" y2="{num(bottom)}"/>')
        out.append(f'<text class="tick" x="{px}" y="{num(bottom + 16)}" text-anchor="middle">{label}</text>')
    out.append(
        f'<line class="axis-line" x1="{LEFT}" y1="{num(bottom)}" x2="{WIDTH - RIGHT}" y2="{num(bottom)}"/>'
    )
    out.append(
        f'<text class="axis-title" x="{num((LEFT + WIDTH - RIGHT) / 2)}" y="{num(bottom + 36)}" '
        f'text-anchor="middle">{TIME_AXIS_TITLE}</text>'
    )
    out.append("</g>")
    return out


def _y_axis_title(text: str, top: float, bottom: float) -> str:
    middle = num((top + bottom) / 2)
    return (
        f'<text class="axis-title" x="16" y="{middle}" text-anchor="middle" '
        f'transform="rotate(-90 16 {middle})">{esc(text)}</text>'
    )


def _overlays(frame: Frame, top: float, bottom: float, *, labels: bool) -> list[str]:
    """Failover bands, then fault lines with numbered badges (and, with `labels`, short names)."""
    x = frame.x
    duration = frame.data.duration_s
    out = ['<g class="failovers">']
    for failover in frame.summary.failovers:
        start = failover.fault.at_s
        end = duration if failover.seconds is None else min(duration, start + failover.seconds)
        if start >= duration:
            continue
        width = max(2.0, x(end) - x(start))
        took = "no recovery seen" if failover.seconds is None else millis(failover.seconds * 1000)
        tip = f"failover after {failover.fault.description}: {took}"
        if failover.new_leader is not None:
            tip += f" (new leader {failover.new_leader})"
        out.append(
            f'<rect class="failover" x="{num(x(start))}" y="{num(top)}" width="{num(width)}" '
            f'height="{num(bottom - top)}"><title>{esc(tip)}</title></rect>'
        )
        if labels:
            out.append(
                f'<text class="failover-label" x="{num(x(start) + width + 4)}" y="{num(top + 14)}">'
                f"{esc(took)}</text>"
            )
    out.append("</g>")
    out.append('<g class="faults">')
    faults = [f for f in frame.data.faults if 0 <= f.at_s < duration]
    for number, fault in enumerate(faults, 1):
        px = x(fault.at_s)
        tip = f"{number}. t = {seconds(fault.at_s)}: {fault.description}"
        out.append(
            f'<line class="fault" x1="{num(px)}" y1="{num(top - 8)}" x2="{num(px)}" y2="{num(bottom)}"/>'
        )
        out.append(
            f'<g class="fault-badge"><title>{esc(tip)}</title>'
            f'<circle cx="{num(px)}" cy="{num(top - 17)}" r="9"/>'
            f'<text x="{num(px)}" y="{num(top - 13)}" text-anchor="middle">{number}</text></g>'
        )
        if labels:
            label = fault_label(fault)
            room = (x(faults[number].at_s) if number < len(faults) else WIDTH) - px - 14
            if room >= 6.5 * len(label):
                out.append(
                    f'<text class="fault-label" x="{num(px + 13)}" y="{num(top - 13)}">{esc(label)}</text>'
                )
    out.append("</g>")
    return out


def _y_tick(py: float, label: str, *, minor: bool = False) -> list[str]:
    """A horizontal grid line at `py`, labelled on the left (no label when `label` is empty)."""
    grid = "grid minor" if minor else "grid"
    out = [f'<line class="{grid}" x1="{LEFT}" y1="{num(py)}" x2="{WIDTH - RIGHT}" y2="{num(py)}"/>']
    if label:
        out.append(
            f'<text class="tick" x="{LEFT - 8}" y="{num(py)}" dy="4" text-anchor="end">{esc(label)}</text>'
        )
    return out


def _polyline(cls: str, points: Iterable[tuple[float, float]]) -> str:
    text = " ".join(f"{num(px)},{num(py)}" for px, py in points)
    return f'<polyline class="{cls}" points="{text}"/>'


def _centre(window: Window) -> float:
    return (window.start_s + window.end_s) / 2


# -- throughput -----------------------------------------------------------------------------------------


def throughput_chart(frame: Frame, height: float = 250) -> Chart:
    key = "throughput"
    title = "Throughput: successful operations per second"
    summary = frame.summary
    windows = frame.windows
    x = frame.x
    top, bottom = TOP, height - BOTTOM
    peak = max((w.ok_per_s for w in windows), default=0.0)
    step = nice_step(max(peak, 1.0) * 1.05, 5)
    y_max = math.ceil(max(peak, 1.0) * 1.05 / step) * step
    y = LinearScale(0.0, y_max, bottom, top)
    out = _open(
        key,
        title,
        f"Successful operations per second in each 100 ms window over {seconds(frame.data.duration_s)}, "
        "with failed or unknown operations as red bars, faults as numbered dashed lines and failover gaps "
        "shaded.",
        height,
    )
    out.append('<g class="axis y-axis" aria-hidden="true">')
    for value in ticks(0.0, y_max, 5):
        out.extend(_y_tick(y(value), tick_label(value)))
    out.append(_y_axis_title("ops/s", top, bottom))
    out.append("</g>")
    out.extend(_time_axis(frame, top, bottom))
    out.extend(_overlays(frame, top, bottom, labels=True))
    points = [(x(_centre(w)), y(w.ok_per_s)) for w in windows]
    if points:
        area = [(points[0][0], bottom), *points, (points[-1][0], bottom)]
        out.append(
            '<polygon class="area-ok" points="' + " ".join(f"{num(a)},{num(b)}" for a, b in area) + '"/>'
        )
        out.append(_polyline("series series-ok", points))
    out.append('<g class="series-errors">')
    for window in windows:
        if window.not_ok_per_s > 0:
            x0, x1 = x(window.start_s), x(window.end_s)
            bar_top = min(y(window.not_ok_per_s), bottom - 2)
            tip = f"t = {seconds(window.start_s)}: {window.failed_other} failed, {window.unknown} unknown"
            out.append(
                f'<rect class="bar-error" x="{num(x0)}" y="{num(bar_top)}" '
                f'width="{num(max(1.0, x1 - x0 - 0.5))}" height="{num(bottom - bar_top)}">'
                f"<title>{tip}</title></rect>"
            )
    out.append("</g>")
    out.append("</svg>")
    idle = [w for w in windows if not w.up]
    busiest = max(windows, key=lambda w: w.ok_per_s) if windows else None
    text = [
        f"<p>Clients completed <strong>{summary.ok}</strong> operations successfully in "
        f"{seconds(frame.data.duration_s)}: <strong>{summary.throughput_ops_s:.0f} ops/s</strong> on average"
        + (
            f", {summary.cpu_us_per_op:.0f} µs of CPU per successful operation"
            if summary.cpu_us_per_op is not None
            else ""
        )
        + ".</p>"
    ]
    if busiest is not None:
        text.append(
            f"<p>The busiest 100 ms window ran at {busiest.ok_per_s:.0f} ops/s "
            f"(t = {seconds(busiest.start_s)}); "
            f"{len(idle)} of {len(windows)} windows had no successful operation.</p>"
        )
    text.append(
        f"<p>{summary.failed} operations failed with no effect ({summary.cas_mismatches} of them a cas whose "
        f"compare failed, which is an answer, not an outage) and {summary.unknown} ended with an unknown "
        "outcome.</p>"
    )
    legend = (
        Legend("successful ops/s", "#0072B2", "area"),
        Legend("failed (not cas) or unknown ops/s", "#D55E00", "bar"),
        Legend("failover gap", "#F5C26B", "band"),
    )
    return Chart(key, title, "\n".join(out), "\n".join(text), legend)


# -- latency --------------------------------------------------------------------------------------------


def latency_chart(frame: Frame, height: float = 250) -> Chart:
    key = "latency"
    title = "Latency of successful operations (p50 and p99 per 100 ms window)"
    windows = frame.windows
    x = frame.x
    top, bottom = TOP, height - BOTTOM
    values = [v for w in windows for v in (w.p50_ms, w.p99_ms) if not math.isnan(v)]
    lo, hi = LogScale.covering(values)
    y = LogScale(lo, hi, bottom, top)
    out = _open(
        key,
        title,
        "Median and 99th-percentile latency in milliseconds, on a logarithmic scale, of the operations that "
        "succeeded in each 100 ms window (retries included); gaps are windows without a success.",
        height,
    )
    out.append('<g class="axis y-axis" aria-hidden="true">')
    scale_ticks = y.ticks()
    decades_only = math.log10(hi / lo) > 2
    for value in scale_ticks:
        is_decade = abs(math.log10(value) - round(math.log10(value))) < 1e-9
        label = tick_label(value) if is_decade or not decades_only else ""
        out.extend(_y_tick(y(value), label, minor=not is_decade))
    out.append(_y_axis_title("latency (ms, log scale)", top, bottom))
    out.append("</g>")
    out.extend(_time_axis(frame, top, bottom))
    out.extend(_overlays(frame, top, bottom, labels=False))
    for series, attribute in (("p99", "p99_ms"), ("p50", "p50_ms")):
        out.append(f'<g class="series-{series}">')
        segment: list[tuple[float, float]] = []
        for window in [*windows, None]:
            value = math.nan if window is None else getattr(window, attribute)
            if window is not None and not math.isnan(value):
                segment.append((x(_centre(window)), y(value)))
                continue
            if len(segment) == 1:
                px, py = segment[0]
                out.append(
                    f'<circle class="series series-{series} dot" cx="{num(px)}" cy="{num(py)}" r="2.5"/>'
                )
            elif segment:
                out.append(_polyline(f"series series-{series}", segment))
            segment = []
        out.append("</g>")
    out.append("</svg>")
    latency = frame.summary.latency_ms
    text = [
        f"<p>Over the whole run, successful operations took <strong>{millis(latency[50])}</strong> at the "
        f"median and <strong>{millis(latency[99])}</strong> at p99 (p90 {millis(latency[90])}).</p>"
    ]
    worst = max((w for w in windows if not math.isnan(w.p99_ms)), key=lambda w: w.p99_ms, default=None)
    if worst is not None:
        text.append(
            f"<p>The slowest window (t = {seconds(worst.start_s)}) had a p99 of {millis(worst.p99_ms)}: "
            "operations caught by a fault wait for an attempt to time out, then retry on the next node.</p>"
        )
    legend = (Legend("p50", "#009E73", "line"), Legend("p99", "#D55E00", "line"))
    return Chart(key, title, "\n".join(out), "\n".join(text), legend)


# -- leader timeline ------------------------------------------------------------------------------------


def _spans_in_run(data: ReportData) -> list[RoleSpan]:
    return [s for s in data.roles if s.end_s > 0 and s.start_s < data.duration_s]


def leader_chart(frame: Frame) -> Chart:
    key = "leaders"
    title = "Who led when: one lane per node"
    data = frame.data
    x = frame.x
    top = TOP
    bottom = top + len(data.nodes) * (LANE_H + LANE_GAP)
    height = bottom + BOTTOM
    out = _open(
        key,
        title,
        "For each node, the time it was leader (solid, labelled with its term), candidate (light) or down "
        "(hatched), as the node itself reported it; faults are numbered dashed lines, failover gaps shaded.",
        height,
    )
    out.append(
        '<defs><pattern id="hatch-down" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e5e7eb"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#6b7280" stroke-width="2"/></pattern></defs>'
    )
    lane_top = {node: top + i * (LANE_H + LANE_GAP) + LANE_GAP / 2 for i, node in enumerate(data.nodes)}
    out.append('<g class="lanes">')
    for node, y0 in lane_top.items():
        out.append(
            f'<rect class="lane" x="{LEFT}" y="{num(y0)}" width="{WIDTH - RIGHT - LEFT}" height="{LANE_H}"/>'
        )
        out.append(
            f'<text class="lane-label" x="{LEFT - 10}" y="{num(y0 + LANE_H / 2 + 5)}" text-anchor="end" '
            f'fill="{node_colour(data, node)}">{esc(node)}</text>'
        )
    out.append("</g>")
    out.extend(_time_axis(frame, top, bottom))
    out.extend(_overlays(frame, top, bottom, labels=False))
    out.append('<g class="spans">')
    for span in _spans_in_run(data):
        if span.node_id not in lane_top:
            continue
        if span.role == LEADER:
            cls, fill = "span span-leader", f' fill="{node_colour(data, span.node_id)}"'
        elif span.role in CANDIDATES:
            cls, fill = "span span-candidate", f' fill="{node_colour(data, span.node_id)}"'
        elif span.role == DOWN:
            cls, fill = "span span-down", ' fill="url(#hatch-down)"'
        else:
            continue
        x0, x1 = x(max(0.0, span.start_s)), x(min(data.duration_s, span.end_s))
        width = max(1.0, x1 - x0)
        y0 = lane_top[span.node_id]
        term = "" if span.term is None else f" in term {span.term}"
        role = span.role.replace("_", "-")
        tip = f"{span.node_id} {role}{term}: {seconds(span.start_s)} to {seconds(span.end_s)}"
        out.append(
            f'<rect class="{cls}" x="{num(x0)}" y="{num(y0)}" width="{num(width)}" height="{LANE_H}"{fill}>'
            f"<title>{esc(tip)}</title></rect>"
        )
        label = f"term {span.term}" if span.role == LEADER and span.term is not None else ""
        label = "down" if span.role == DOWN else label
        if label and width >= 7 * len(label) + 8:
            out.append(
                f'<text class="span-label{" on-dark" if span.role == LEADER else ""}" x="{num(x0 + 6)}" '
                f'y="{num(y0 + LANE_H / 2 + 4)}">{label}</text>'
            )
    out.append("</g>")
    out.append("</svg>")
    leaders = [s for s in _spans_in_run(data) if s.role == LEADER]
    text = []
    if leaders:
        listed = ", ".join(
            f"{esc(s.node_id)}{'' if s.term is None else f' (term {s.term})'} from {s.start_s:.2f} to "
            f"{s.end_s:.2f} s"
            for s in leaders[:12]
        )
        more = f", and {len(leaders) - 12} more" if len(leaders) > 12 else ""
        text.append(f"<p>Leaders, in order: {listed}{more}.</p>")
    else:
        text.append("<p>No node was leader during the workload.</p>")
    downs = [s for s in _spans_in_run(data) if s.role == DOWN]
    if downs:
        text.append(
            "<p>Down: "
            + ", ".join(f"{esc(s.node_id)} from {s.start_s:.2f} to {s.end_s:.2f} s" for s in downs)
            + ".</p>"
        )
    overlaps = _overlapping_leaders(leaders)
    if overlaps:
        times = "once" if overlaps == 1 else f"{overlaps} times"
        text.append(
            f"<p>Two nodes said they led at the same time {times}, in different terms: a deposed leader "
            "cut off from the majority believes it leads until it misses a quorum of heartbeats, and it "
            "cannot commit anything meanwhile.</p>"
        )
    legend = (
        Legend("leader (term)", "#0072B2", "bar"),
        Legend("candidate", "#9ecae1", "bar"),
        Legend("down", "#9ca3af", "hatch"),
    )
    return Chart(key, title, "\n".join(out), "\n".join(text), legend)


def _overlapping_leaders(leaders: list[RoleSpan]) -> int:
    count = 0
    for i, a in enumerate(leaders):
        for b in leaders[i + 1 :]:
            if b.start_s >= a.end_s:
                break
            if b.node_id != a.node_id:
                count += 1
    return count


# -- availability ----------------------------------------------------------------------------------------


def availability_chart(frame: Frame) -> Chart:
    key = "availability"
    summary = frame.summary
    title = f"Availability: {summary.availability:.1%} of 100 ms windows had a successful operation"
    x = frame.x
    top = TOP
    bottom = top + 30
    height = bottom + BOTTOM
    out = _open(
        key,
        title,
        "Each 100 ms window of the workload, green when at least one client operation succeeded in it "
        "(up), red when none did (down).",
        height,
    )
    out.extend(_time_axis(frame, top, bottom))
    out.extend(_overlays(frame, top, bottom, labels=False))
    out.append('<g class="windows">')
    for window in frame.windows:
        x0, x1 = x(window.start_s), x(window.end_s)
        state = "up" if window.up else "down"
        out.append(
            f'<rect class="window {state}" x="{num(x0)}" y="{num(top + 4)}" '
            f'width="{num(max(0.5, x1 - x0 - 0.6))}" '
            f'height="{num(bottom - top - 8)}"><title>t = {seconds(window.start_s)}: {state}, {window.ok} ok'
            "</title></rect>"
        )
    out.append("</g>")
    out.append("</svg>")
    downs = _down_ranges(frame.windows)
    text = [
        f"<p><strong>{summary.availability:.1%}</strong> available: {summary.available_windows} of "
        f"{summary.total_windows} windows of 100 ms had at least one successful operation (uptime / total "
        "time, as clients saw it).</p>"
    ]
    if downs:
        text.append(
            "<p>Down: "
            + ", ".join(f"{start:.1f} to {end:.1f} s" for start, end in downs[:12])
            + (f", and {len(downs) - 12} more" if len(downs) > 12 else "")
            + ".</p>"
        )
    else:
        text.append("<p>No window was down.</p>")
    legend = (Legend("up", "#009E73", "bar"), Legend("down", "#D55E00", "bar"))
    return Chart(key, title, "\n".join(out), "\n".join(text), legend)


def _down_ranges(windows: Iterable[Window]) -> list[tuple[float, float]]:
    ranges: list[tuple[float, float]] = []
    for window in windows:
        if window.up:
            continue
        if ranges and abs(ranges[-1][1] - window.start_s) < 1e-9:
            ranges[-1] = (ranges[-1][0], window.end_s)
        else:
            ranges.append((window.start_s, window.end_s))
    return ranges
