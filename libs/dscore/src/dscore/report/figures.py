"""The figures of a run report, defined once (the text report and the HTML page both use these).

- availability: the seed's definition 1.7, uptime / total time, measured from the clients' side. The
  workload time is cut into consecutive `WINDOW_S` (100 ms) windows; a window is up when at least one
  client operation completed successfully (`ok`) in it; availability = up windows / all windows.
- failover time: for each fault that removes the leader (kill, or partition into a minority), the time
  from the fault to the first successful write answered by a different node (the first commit under the
  new leader, as a client sees it).
- throughput: successful operations per second; latency percentiles are nearest-rank over successful
  operations, retries included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dscore.core.client_messages import Outcome
from dscore.report.model import FailoverTime, FaultEvent, ReportData
from dscore.runtime.client import Completion, OpOutcome

#: width of an availability window (and of one point of the report's time series)
WINDOW_S = 0.1
WRITES = frozenset({"put", "append", "cas"})


def window_count(start_s: float, end_s: float) -> int:
    """How many `WINDOW_S` windows cover [start, end) (the last one may be partial; at least one)."""
    return max(1, math.ceil((end_s - start_s) / WINDOW_S - 1e-9))


def availability_windows(ok_times_s: Sequence[float], start_s: float, end_s: float) -> tuple[int, int]:
    """(windows with at least one ok completion, all windows) for `WINDOW_S` windows of [start, end)."""
    hit = {int((t - start_s) / WINDOW_S) for t in ok_times_s if start_s <= t < end_s}
    return len(hit), window_count(start_s, end_s)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (nan if empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def failover_time(completions: Sequence[Completion], event: FaultEvent) -> FailoverTime:
    """The first successful write at or after `event` answered by a node other than the removed leader
    (`completions` in completion order, on the same clock as `event.at_s`)."""
    for completion in completions:
        if (
            completion.time_s >= event.at_s
            and completion.outcome is OpOutcome.OK
            and completion.f in WRITES
            and completion.node_id != event.removed_leader
        ):
            return FailoverTime(event, completion.time_s - event.at_s, completion.node_id)
    return FailoverTime(event, None, None)


@dataclass(frozen=True, slots=True)
class Window:
    """One `WINDOW_S` window of the workload: what completed in [start_s, start_s + WINDOW_S)."""

    start_s: float
    #: the end of the window (the last one may be shorter)
    end_s: float
    ok: int
    #: cas operations whose compare failed (an answer, not an outage)
    cas_mismatches: int
    #: other operations that failed with no effect (no leader reached, a read without an answer)
    failed_other: int
    unknown: int
    #: latency percentiles of the window's successful operations (nan when there were none)
    p50_ms: float
    p99_ms: float

    @property
    def up(self) -> bool:
        return self.ok > 0

    @property
    def ok_per_s(self) -> float:
        return self._rate(self.ok)

    @property
    def not_ok_per_s(self) -> float:
        """Operations that failed (cas mismatches aside) or whose outcome is unknown, per second."""
        return self._rate(self.failed_other + self.unknown)

    def _rate(self, count: int) -> float:
        width_s = self.end_s - self.start_s
        return count / width_s if width_s > 0 else 0.0


def window_series(completions: Sequence[Completion], duration_s: float) -> tuple[Window, ...]:
    """Per-window counts and latencies of the completions in [0, duration_s)."""
    count = window_count(0.0, duration_s)
    latencies: list[list[float]] = [[] for _ in range(count)]
    failed = [0] * count
    mismatches = [0] * count
    unknown = [0] * count
    for completion in completions:
        if not 0 <= completion.time_s < duration_s:
            continue
        index = min(count - 1, int(completion.time_s / WINDOW_S))
        if completion.outcome is OpOutcome.OK:
            latencies[index].append(completion.latency_s * 1000)
        elif completion.outcome is OpOutcome.UNKNOWN:
            unknown[index] += 1
        elif completion.error == Outcome.CAS_MISMATCH.name:
            mismatches[index] += 1
        else:
            failed[index] += 1
    windows = []
    for index, values in enumerate(latencies):
        values.sort()
        windows.append(
            Window(
                round(index * WINDOW_S, 9),
                min(duration_s, round((index + 1) * WINDOW_S, 9)),
                len(values),
                mismatches[index],
                failed[index],
                unknown[index],
                percentile(values, 50),
                percentile(values, 99),
            )
        )
    return tuple(windows)


@dataclass(frozen=True, slots=True)
class Summary:
    """The headline figures of a `ReportData`."""

    ok: int
    #: failed with no effect, cas mismatches included
    failed: int
    cas_mismatches: int
    unknown: int
    throughput_ops_s: float
    latency_ms: dict[int, float]
    available_windows: int
    total_windows: int
    failovers: tuple[FailoverTime, ...]
    #: CPU microseconds per successful operation (None when the run did not measure CPU)
    cpu_us_per_op: float | None

    @property
    def availability(self) -> float:
        return self.available_windows / self.total_windows if self.total_windows else 0.0


def summarize(data: ReportData) -> Summary:
    completions = [c for c in data.completions if 0 <= c.time_s < data.duration_s]
    ok_latencies = sorted(c.latency_s * 1000 for c in completions if c.outcome is OpOutcome.OK)
    available, total = availability_windows(
        [c.time_s for c in completions if c.outcome is OpOutcome.OK], 0.0, data.duration_s
    )
    mismatches = sum(1 for c in completions if c.error == Outcome.CAS_MISMATCH.name)
    ok = len(ok_latencies)
    return Summary(
        ok=ok,
        failed=sum(1 for c in completions if c.outcome is OpOutcome.FAIL),
        cas_mismatches=mismatches,
        unknown=sum(1 for c in completions if c.outcome is OpOutcome.UNKNOWN),
        throughput_ops_s=ok / data.duration_s if data.duration_s > 0 else 0.0,
        latency_ms={p: percentile(ok_latencies, p) for p in (50, 90, 99)},
        available_windows=available,
        total_windows=total,
        failovers=tuple(failover_time(completions, f) for f in data.faults if f.removed_leader is not None),
        cpu_us_per_op=data.cpu_s / ok * 1e6 if data.cpu_s is not None and ok else None,
    )
