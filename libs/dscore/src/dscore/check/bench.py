"""Benchmark of the linearizability checker on generated histories (`dscore bench check`).

Each case generates a linearizable history with `dscore.check.generate` (seeded; register
writes draw from 5 values as in Jepsen's register workload; about 2% of operations crash
with `:info`, about 10% fail, mostly cas mismatches, and a few nemesis ops are mixed in),
writes it as EDN, and times:

* the baseline: parsing that EDN and pairing the operations, the O(n) floor any checker
  pays (`parse_edn_history` + `History.operations`);
* the check: `check_history` on the parsed history (pairing again, interpretation,
  search).

The ratio check / baseline says how far above that floor the search runs. A kv case
spreads its operations over `max(1, processes // 5)` keys, so about five clients contend
for each key. Sizes count operations (invocation + completion pairs); the EDN history has
about twice as many lines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dscore.check.generate import generate_history
from dscore.check.history import parse_edn_history
from dscore.check.linearizability import check_history
from dscore.check.result import Verdict

DEFAULT_SIZES = (1_000, 10_000, 100_000)
DEFAULT_PROCESSES = (5, 10, 50)
QUICK_SIZES = (1_000, 10_000)
QUICK_PROCESSES = (5, 10)
BENCH_MODELS = ("register", "kv")
REGISTER_VALUE_DOMAIN = 5


@dataclass(frozen=True, slots=True)
class BenchCase:
    model: str
    operations: int
    processes: int

    @property
    def keys(self) -> int:
        return max(1, self.processes // 5) if self.model == "kv" else 1


@dataclass(frozen=True, slots=True)
class BenchRow:
    case: BenchCase
    history_lines: int
    verdict: Verdict
    baseline_s: float  # parse + pair
    check_s: float

    @property
    def ratio(self) -> float:
        return self.check_s / self.baseline_s if self.baseline_s > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.case.model,
            "operations": self.case.operations,
            "processes": self.case.processes,
            "keys": self.case.keys,
            "history_lines": self.history_lines,
            "verdict": self.verdict.value,
            "baseline_s": round(self.baseline_s, 6),
            "check_s": round(self.check_s, 6),
            "ratio": round(self.ratio, 3),
        }


def bench_cases(sizes: Iterable[int], processes: Iterable[int], models: Iterable[str]) -> list[BenchCase]:
    process_counts = list(processes)
    size_list = list(sizes)
    return [
        BenchCase(model, size, count) for model in models for size in size_list for count in process_counts
    ]


def run_case(case: BenchCase, *, seed: int = 0, timeout_s: float | None = None) -> BenchRow:
    history = generate_history(
        model=case.model,
        operations=case.operations,
        processes=case.processes,
        seed=seed,
        keys=case.keys,
        value_domain=REGISTER_VALUE_DOMAIN,
        crash_rate=0.01,
        fail_rate=0.01,
        nemesis_rate=0.001,
    )
    text = history.to_edn()
    started = time.perf_counter()
    parsed = parse_edn_history(text)
    parsed.operations()
    baseline_s = time.perf_counter() - started
    started = time.perf_counter()
    result = check_history(parsed, case.model, timeout_s)
    check_s = time.perf_counter() - started
    return BenchRow(case, len(parsed), result.verdict, baseline_s, check_s)


_COLUMNS = (
    # (title, width, left-aligned)
    ("model", 8, True),
    ("ops", 7, False),
    ("procs", 5, False),
    ("keys", 4, False),
    ("lines", 7, False),
    ("verdict", 16, True),
    ("parse+pair s", 12, False),
    ("check s", 9, False),
    ("check/baseline", 14, False),
)


def _render(cells: Sequence[str]) -> str:
    return "  ".join(
        cell.ljust(width) if left else cell.rjust(width)
        for cell, (_, width, left) in zip(cells, _COLUMNS, strict=True)
    ).rstrip()


def format_header() -> str:
    """The table's title line and rule; rows can then be printed as they come."""
    return (
        _render([title for title, _, _ in _COLUMNS])
        + "\n"
        + _render(["-" * width for _, width, _ in _COLUMNS])
    )


def format_row(row: BenchRow) -> str:
    return _render(
        (
            row.case.model,
            str(row.case.operations),
            str(row.case.processes),
            str(row.case.keys),
            str(row.history_lines),
            row.verdict.value,
            f"{row.baseline_s:.3f}",
            f"{row.check_s:.3f}",
            f"{row.ratio:.2f}x",
        )
    )


def format_table(rows: Sequence[BenchRow]) -> str:
    return "\n".join([format_header(), *map(format_row, rows)])
