"""Committed ops/s of dscore's 3-node embedded Raft cluster, as `dscore bench raft` measures it.

One measurement of `dscore.runtime.bench.cluster_throughput` (3 nodes in this process on the memory
transport, default `RuntimeConfig` and `raft_factory()`, `tune_gc()` applied first as `dscore bench
raft` does), printed as one JSON line shaped like run_pysyncobj.py's. Run with the repository's venv:

    .venv/bin/python bench/pysyncobj/run_dscore.py --in-flight 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
from collections.abc import Sequence

from dscore.runtime.bench import cluster_throughput
from dscore.runtime.cluster import raft_factory
from dscore.runtime.gc_tuning import DEFAULT_GC_GEN0_THRESHOLD, tune_gc
from dscore.runtime.node import RuntimeConfig

NODES = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--in-flight", type=int, default=5000, help="client operations in flight")
    parser.add_argument("--duration-s", type=float, default=5.0, help="measurement seconds (default 5)")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured seconds under load first")
    parser.add_argument("--gc-gen0-threshold", type=int, default=DEFAULT_GC_GEN0_THRESHOLD)
    args = parser.parse_args(argv)
    if args.in_flight < 1 or args.duration_s <= 0 or args.warmup_s < 0:
        parser.error("--in-flight >= 1, --duration-s > 0 and --warmup-s >= 0 required")
    tune_gc(args.gc_gen0_threshold)
    result = asyncio.run(
        cluster_throughput(
            raft_factory(),
            nodes=NODES,
            in_flight=args.in_flight,
            duration_s=args.duration_s,
            warmup_s=args.warmup_s,
            config=RuntimeConfig(),
            label=f"{NODES}-node Raft",
        )
    )
    record = {
        "system": "dscore",
        "python": platform.python_version(),
        "nodes": NODES,
        "in_flight": result.in_flight,
        "ops": result.ops,
        "seconds": round(result.seconds, 4),
        "ops_s": round(result.ops_s, 1),
        "p50_ms": round(result.p50_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "cpu_s": round(result.cpu_s, 3),
        "cpu_us_per_op": round(result.cpu_us_per_op, 2) if result.ops else None,
        "gc_gen0_threshold": args.gc_gen0_threshold,
    }
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
