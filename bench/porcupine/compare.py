"""Time dscore's linearizability checker against Porcupine on the same histories, in one run.

For each case it generates one history (as `dscore bench check` does), writes it as EDN and
as porcupine-check's JSON lines (export.py), then times `check_history` in this process and
`porcupine.CheckOperationsTimeout` in the Go binary on those files, and prints
dscore s / Porcupine s. Verdicts must agree; a disagreement exits 1 and keeps the files.

Besides the generated (linearizable) histories, "stale" cases change one read in the
middle to an older value read earlier on the same key, which makes the history
non-linearizable (see `stale_read`), so the verdict cross-check covers violations too.

Porcupine runs with GOMAXPROCS=1 by default: dscore checks keys one by one on one core,
while Porcupine checks partitions in parallel goroutines; --go-procs 0 leaves Go's default.
Times are the best of --repeat runs for cases of at most --repeat-max-ops operations, one run
above that. dscore's time covers pairing, interpretation and search of a parsed history;
Porcupine's covers partitioning, sorting and search of loaded operations.

Run from the repository root: .venv/bin/python bench/porcupine/compare.py [--help]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from export import BENCH_CRASH_RATE, ExportedCase, case_name, export, generate

from dscore.check.edn import EdnValue
from dscore.check.history import History, Operation, OpType, read_edn_history
from dscore.check.linearizability import check_history
from dscore.check.result import Verdict

HERE = Path(__file__).resolve().parent
# (model, operations, processes, stale): `dscore bench check` sizes Porcupine can finish, plus stale reads.
DEFAULT_CASES = (
    ("register", 1_000, 5, False),
    ("register", 1_000, 10, False),
    ("register", 10_000, 5, False),
    ("register", 10_000, 10, False),
    ("register", 100_000, 5, False),
    ("register", 100_000, 10, False),
    ("kv", 10_000, 50, False),
    ("kv", 50_000, 50, False),  # Porcupine runs out of time here, so kv 100k is left out
    ("register", 1_000, 5, True),
    ("register", 1_000, 10, True),
    ("register", 10_000, 10, True),
    ("kv", 10_000, 50, True),
)
PORCUPINE_VERDICTS = {
    "Ok": Verdict.LINEARIZABLE,
    "Illegal": Verdict.NOT_LINEARIZABLE,
    "Unknown": Verdict.UNKNOWN,
}
STALE_GAP = 50  # the older read completed at least this many history entries before the stale one


@dataclass(frozen=True, slots=True)
class Row:
    case: ExportedCase
    ops_checked: int  # ops given to Porcupine (:fail ops and unknown reads dropped)
    partitions: int
    dscore_s: float
    dscore_verdict: Verdict
    porcupine_s: float
    porcupine_verdict: Verdict

    @property
    def agree(self) -> bool:
        return Verdict.UNKNOWN in (self.dscore_verdict, self.porcupine_verdict) or (
            self.dscore_verdict is self.porcupine_verdict
        )

    @property
    def ratio(self) -> str:
        """dscore s / Porcupine s; a timed-out side makes it a bound ('<' or '>')."""
        value = self.dscore_s / self.porcupine_s if self.porcupine_s > 0 else math.inf
        text = f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"
        if self.porcupine_verdict is Verdict.UNKNOWN and self.dscore_verdict is not Verdict.UNKNOWN:
            return "<" + text
        if self.dscore_verdict is Verdict.UNKNOWN and self.porcupine_verdict is not Verdict.UNKNOWN:
            return ">" + text
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "case": self.case.name,
            "model": self.case.model,
            "operations": self.case.operations,
            "processes": self.case.processes,
            "ops_checked": self.ops_checked,
            "partitions": self.partitions,
            "dscore_s": round(self.dscore_s, 6),
            "porcupine_s": round(self.porcupine_s, 6),
            "ratio": self.ratio,
            "dscore_verdict": self.dscore_verdict.value,
            "porcupine_verdict": self.porcupine_verdict.value,
            "edn": str(self.case.edn_path),
            "jsonl": str(self.case.jsonl_path),
        }


def _installs(operation: Operation) -> EdnValue:
    value = operation.invoke.value
    return value[1] if operation.f == "cas" and type(value) is tuple else value


def _certainly_stale(writes: Sequence[Operation], value: EdnValue, target: Operation) -> bool:
    """Whether a register read of `value` by `target` cannot be linearized.

    It cannot when every write of `value` that may have taken effect before `target`
    returned had completed before `target` was invoked, and an :ok write of another value
    lies wholly between the last of them and that invocation.
    """
    assert target.ret is not None
    last = -1
    for write in writes:  # in invocation order
        if write.call > target.ret:
            break
        if _installs(write) == value:
            if write.outcome is not OpType.OK or write.ret is None or write.ret > target.call:
                return False
            last = max(last, write.ret)
    return any(
        write.f == "write"
        and write.outcome is OpType.OK
        and _installs(write) != value
        and write.call > last
        and write.ret is not None
        and write.ret < target.call
        for write in writes
    )


def stale_read(history: History, model: str, seed: int) -> History:
    """`history` with one :ok read in its middle half returning an older read's value.

    The register's 5 values recur, so there the older value is one the register certainly
    no longer held: the result is certainly not linearizable. kv values never recur, so an
    older kv value almost always makes a violation too.
    """
    rng = random.Random(seed)
    operations = history.operations()
    reads = [op for op in operations if op.f in ("read", "get") and op.outcome is OpType.OK]
    writes = [op for op in operations if op.f in ("write", "cas") and op.outcome is not OpType.FAIL]
    middle = reads[len(reads) // 4 : 3 * len(reads) // 4]
    for target in rng.sample(middle, len(middle)):
        assert target.completion is not None
        seen = [
            read.completion.value
            for read in reads
            if read.completion is not None
            and read.invoke.key == target.invoke.key
            and read.completion.index < target.call - STALE_GAP
            and read.completion.value != target.completion.value
        ]
        for value in dict.fromkeys(reversed(seen)):  # distinct, the latest first
            if model == "kv" or _certainly_stale(writes, value, target):
                ops = list(history.ops)
                ops[target.completion.index] = replace(target.completion, value=value)
                return History(tuple(ops))
    raise ValueError("no read with an older, different value to go stale on")


def time_dscore(case: ExportedCase, runs: int, timeout_s: float) -> tuple[float, Verdict]:
    history = read_edn_history(case.edn_path)
    best, verdict = math.inf, Verdict.UNKNOWN
    for _ in range(runs):
        started = time.perf_counter()
        verdict = check_history(history, case.model, timeout_s).verdict
        best = min(best, time.perf_counter() - started)
        if verdict is Verdict.UNKNOWN:
            break  # another run would only time out again
    return best, verdict


def time_porcupine(
    binary: Path, case: ExportedCase, runs: int, timeout_s: float, go_procs: int
) -> tuple[float, Verdict, int, int]:
    env = dict(os.environ)
    if go_procs > 0:
        env["GOMAXPROCS"] = str(go_procs)
    command = [str(binary), f"-timeout={timeout_s}s", f"-repeat={runs}", str(case.jsonl_path)]
    # The Go timeout bounds each check; this one bounds loading and a wedged process too.
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout_s * runs + 120, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {completed.returncode}: {completed.stderr.strip()}")
    result = json.loads(completed.stdout)
    return (
        float(result["seconds"]),
        PORCUPINE_VERDICTS[result["verdict"]],
        int(result["ops_checked"]),
        int(result["partitions"]),
    )


def build(out_dir: Path) -> Path:
    binary = out_dir / "porcupine-check"
    # -mod=readonly: building must never rewrite the committed go.mod / go.sum.
    subprocess.run(
        ["go", "build", "-mod=readonly", "-o", str(binary), "."], cwd=HERE, check=True, timeout=600
    )
    return binary


def parse_cases(text: str) -> list[tuple[str, int, int, bool]]:
    """'register:1000:5,kv:10000:50:stale' -> cases."""
    cases = []
    for item in text.split(","):
        model, operations, processes, *rest = item.split(":")
        if model not in ("register", "kv") or rest not in ([], ["stale"]):
            raise argparse.ArgumentTypeError(f"bad case {item!r}; expected MODEL:OPS:PROCS[:stale]")
        cases.append((model, int(operations), int(processes), rest == ["stale"]))
    return cases


COLUMNS = (
    # (title, width, left-aligned)
    ("case", 30, True),
    ("ops", 7, False),
    ("checked", 7, False),
    ("parts", 5, False),
    ("dscore s", 9, False),
    ("porcupine s", 11, False),
    ("dscore/porc", 11, False),
    ("dscore verdict", 16, True),
    ("porcupine verdict", 17, True),
)


def render(cells: list[str]) -> str:
    return "  ".join(
        cell.ljust(width) if left else cell.rjust(width)
        for cell, (_, width, left) in zip(cells, COLUMNS, strict=True)
    ).rstrip()


def format_row(row: Row) -> str:
    return render(
        [
            row.case.name,
            str(row.case.operations),
            str(row.ops_checked),
            str(row.partitions),
            f"{row.dscore_s:.3f}",
            f"{row.porcupine_s:.3f}",
            row.ratio,
            row.dscore_verdict.value,
            row.porcupine_verdict.value,
        ]
    )


def go_version() -> str:
    completed = subprocess.run(["go", "version"], capture_output=True, text=True, timeout=60, check=True)
    return completed.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=parse_cases, help="MODEL:OPS:PROCS[:stale],... (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--crash-rate",
        type=float,
        default=BENCH_CRASH_RATE,
        help=f"share of ops completing with :info (default {BENCH_CRASH_RATE}, as dscore bench check)",
    )
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per check, each side (default 120)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repeat-max-ops", type=int, default=10_000)
    parser.add_argument("--go-procs", type=int, default=1, help="GOMAXPROCS for Porcupine; 0: Go's default")
    parser.add_argument("--keep", type=Path, help="write the histories here and keep them")
    parser.add_argument("--json", action="store_true", help="one JSON object per case instead of a table")
    args = parser.parse_args()
    cases = args.cases or list(DEFAULT_CASES)
    work = Path(tempfile.mkdtemp(prefix="bench-porcupine-"))
    out_dir = args.keep or work
    disagreements: list[Row] = []
    try:
        binary = build(work)
        if not args.json:
            print(
                f"# seed {args.seed}; crash rate {args.crash_rate:g}; "
                f"Python {platform.python_version()}; {go_version()}; "
                f"GOMAXPROCS={args.go_procs or 'default'}; timeout {args.timeout_s:g} s per check"
            )
            print(render([title for title, _, _ in COLUMNS]))
            print(render(["-" * width for _, width, _ in COLUMNS]))
        for model, operations, processes, stale in cases:
            history = generate(model, operations, processes, args.seed, args.crash_rate)
            name = case_name(model, operations, processes, args.seed, args.crash_rate)
            if stale:
                history, name = stale_read(history, model, args.seed), name + "-stale"
            case = export(history, name, model, processes, out_dir)
            runs = args.repeat if operations <= args.repeat_max_ops else 1
            dscore_s, dscore_verdict = time_dscore(case, runs, args.timeout_s)
            porcupine_s, porcupine_verdict, checked, partitions = time_porcupine(
                binary, case, runs, args.timeout_s, args.go_procs
            )
            row = Row(case, checked, partitions, dscore_s, dscore_verdict, porcupine_s, porcupine_verdict)
            print(json.dumps(row.to_dict()) if args.json else format_row(row), flush=True)
            if not row.agree:
                disagreements.append(row)
    finally:
        if args.keep is None and not disagreements:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep is not None:
            shutil.rmtree(work, ignore_errors=True)  # only the binary lives there
    for row in disagreements:
        print(
            f"VERDICT DISAGREEMENT on {row.case.name}: dscore {row.dscore_verdict.value}, "
            f"Porcupine {row.porcupine_verdict.value}; files kept: {row.case.edn_path} {row.case.jsonl_path}",
            file=sys.stderr,
        )
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
