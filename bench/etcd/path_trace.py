"""Where one client's write spends its time on the process stack: each stage of the path, p50 and mean.

    nice .venv/bin/python bench/etcd/path_trace.py [--duration-s 10] [--warmup-s 15]

Starts a stack like `compare.py`'s (`dscore_side.DscoreStack`: broker, a Redis per node, 3 nodes, a
gateway). One closed-loop client writes through the gateway. Then, with the nodes idle, it measures
the two floors on the warmed broker and on a Redis run like the nodes' (`baselines.kafka_hop`,
`baselines.redis_multi_exec`). The nodes and the gateway run with `pathtrace/sitecustomize.py` on
their `PYTHONPATH`, which records timestamps along the path in each process.

Each write is followed from the gateway's send to the gateway's event loop taking the answer:
- the hop to the leader;
- the leader's hand-off (consumer thread -> event loop) and processing (feed, step, build the write) up
  to the send of its appends;
- the leader's save, which runs while the appends travel (`Work.send_during_write`): not on the path
  unless it outlasts the round trip to the follower;
- the hop to the follower that answers first;
- that follower's hand-off, processing and save;
- the hop back to the leader;
- the leader's processing from the later of that acknowledgement and its own save to the answer's send;
- the hop to the gateway.

Beside each hop and save stands its floor from the same run. The tracing adds a few µs per event, so
the total is a little above `compare.py`'s single-client p50.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from baselines import kafka_hop, redis_multi_exec
from dscore_side import DscoreStack
from httpload import DSCORE_PUT, closed_loop

REPO = Path(__file__).resolve().parents[2]
TRACER = Path(__file__).resolve().parent / "pathtrace"

#: (stage, which floor it sits on: "hop", "save" or "")
STAGES = (
    ("hop gateway -> leader", "hop"),
    ("leader hand-off", ""),
    ("leader processing (to the appends' send)", ""),
    ("leader save (beside the next five)", "save"),
    ("hop leader -> follower", "hop"),
    ("follower hand-off", ""),
    ("follower processing", ""),
    ("follower save", "save"),
    ("hop follower -> leader", "hop"),
    ("leader: ack (and own save) -> answer sent", ""),
    ("hop leader -> gateway", "hop"),
)

Event = tuple[float, str, str]


def load_events(folder: Path) -> list[Event]:
    events: list[Event] = []
    for path in folder.glob("*.txt"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stamp, who, what = line.split(" ", 2)
            events.append((float(stamp), who, what))
    events.sort()
    return events


def _to_gateway(what: str) -> bool:
    return what.startswith("send") and "gw" in what


def follow_writes(events: Sequence[Event]) -> dict[str, list[float]]:
    """Each stage's durations in seconds, over the writes whose every stage was found."""
    gateway = next((who for _, who, _ in events if who.startswith("gateway")), None)
    answering = [who for _, who, what in events if who != gateway and _to_gateway(what)]
    if gateway is None or not answering:
        return {}
    leader = max(set(answering), key=answering.count)
    starts = [i for i, (_, who, what) in enumerate(events) if who == gateway and what.startswith("send")]
    stages: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    stages["total"] = []
    for first, last in itertools.pairwise(starts):
        window = events[first:last]

        def at(who: str, prefix: str, after: float, window: Sequence[Event] = window) -> float | None:
            for stamp, by, what in window:
                if stamp >= after and by == who and what.startswith(prefix):
                    return stamp
            return None

        sent = window[0][0]
        polled = at(leader, "th_poll", sent)
        arrived = polled and at(leader, "loop_arrived", polled)
        # The leader sends its appends while it saves (`Work.send_during_write`): both start after the
        # processing, and the answer waits for the later of its own save and the first acknowledgement.
        appended = arrived and next(
            (
                s
                for s, by, w in window
                if s >= arrived and by == leader and w.startswith("send") and not _to_gateway(w)
            ),
            None,
        )
        saving = arrived and at(leader, "save_start", arrived)
        saved = saving and at(leader, "save_end", saving)
        acked = None
        follower = None
        if appended:
            for stamp, by, what in window:
                if stamp >= appended and by not in (leader, gateway) and what.startswith("send"):
                    acked, follower = stamp, by
                    break
        f_polled = follower and appended and at(follower, "th_poll", appended)
        f_arrived = f_polled and at(follower, "loop_arrived", f_polled)
        f_saving = f_arrived and at(follower, "save_start", f_arrived)
        f_saved = f_saving and at(follower, "save_end", f_saving)
        ack_polled = acked and at(leader, "th_poll", acked)
        ready = ack_polled and saved and max(ack_polled, saved)
        answered = ready and next(
            (s for s, by, w in window if s >= ready and by == leader and _to_gateway(w)), None
        )
        back = answered and at(gateway, "loop_arrived", answered)
        points = [sent, polled, arrived, appended, saving, saved, f_polled, f_arrived, f_saving, f_saved,
                  acked, ack_polled, ready, answered, back]  # fmt: skip
        if any(not p for p in points):
            continue
        steps = [float(p) for p in points]  # type: ignore[arg-type]
        durations = [
            steps[1] - steps[0],  # hop to the leader
            steps[2] - steps[1],
            steps[3] - steps[2],  # processing up to the appends' send
            steps[5] - steps[4],  # the leader's save, in parallel with what follows
            steps[6] - steps[3],  # hop to the follower
            steps[7] - steps[6],
            steps[8] - steps[7],
            steps[9] - steps[8],
            steps[11] - steps[10],  # hop back: from the follower's send
            steps[13] - steps[12],  # from the later of the ack and the leader's save to the answer
            steps[14] - steps[13],
        ]
        for (name, _), value in zip(STAGES, durations, strict=True):
            stages[name].append(value)
        stages["total"].append(steps[14] - steps[0])
    return stages


async def run(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="dscore-path-"))
    out = base / "trace"
    out.mkdir()
    # the node and gateway processes inherit this environment (ProcessCluster drops only DSCORE_*)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRACER), os.environ.get("PYTHONPATH")]))
    os.environ["PATHTRACE_OUT"] = str(out)
    stack = DscoreStack(REPO, base)
    try:
        await stack.start_servers()
        await stack.start_nodes()
        result = await closed_loop(
            DSCORE_PUT,
            [stack.endpoint],
            1,
            warmup_s=args.warmup_s,
            duration_s=args.duration_s,
            stack_pids=stack.pids_by_role,
        )
        # after the load: on a broker whose JIT has warmed up, as in compare.py
        hop = await asyncio.to_thread(kafka_hop, stack.bootstrap, [stack.kafka_pid], args.hops)
        save = await asyncio.to_thread(
            redis_multi_exec, stack.baseline_redis_url, [stack.baseline_redis_pid], args.hops
        )
    finally:
        await stack.stop()  # SIGTERM: each process writes its trace as it exits
    stages = follow_writes(load_events(out))
    if not stages.get("total"):
        print(f"no write could be followed end to end in {out}: has a traced method been renamed?")
        return 1
    floors = {"hop": hop["p50_ms"], "save": save["p50_ms"]}
    print(f"one client: {result.ops_s:,.0f} writes/s, p50 {result.p50_ms or 0:.2f} ms (untraced path: less)")
    print(
        f"floors, same run: Kafka hop p50 {floors['hop']:.3f} ms, Redis MULTI/EXEC p50 {floors['save']:.3f}"
    )
    print(f"writes followed: {len(stages['total'])}\n")
    print("| stage | p50 ms | mean ms | floor p50 ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, floor in [*STAGES, ("total", "")]:
        values = stages[name]
        floor_text = f"{floors[floor]:.3f}" if floor else ""
        p50, mean = statistics.median(values) * 1e3, statistics.fmean(values) * 1e3
        print(f"| {name} | {p50:.3f} | {mean:.3f} | {floor_text} |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup-s", type=float, default=15.0, help="unmeasured load first (broker JIT)")
    parser.add_argument("--hops", type=int, default=2000, help="round trips in each floor")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
