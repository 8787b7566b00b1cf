"""Committed ops/s of a 3-process PySyncObj cluster on loopback, with N operations in flight.

Close to PySyncObj's own benchmark (its repository's benchmarks/testobj.py): a `SyncObj` subclass
with one `@replicated` method, one process per node on 127.0.0.1 with distinct ports, the default
`SyncObjConf` (no journal file, so nothing is written or fsynced; no full dump file; dynamic
membership off; auto-tick thread), commands submitted with `callback=`. Unlike testobj.py, which
offers a fixed rate from every node, the load here is closed-loop, as in `dscore bench raft`: the
leader's process keeps `--in-flight` commands outstanding and submits a new one from each callback,
so the rate is what the cluster sustains. The command is `put(key, value)` into a dict with keys
k0..k63 and value "v", like dscore's `put`.

Committed ops are callbacks with `FAIL_REASON.SUCCESS` (the entry is committed and applied on the
leader) that arrive within the measurement window, after `--warmup-s`; latency is submit -> callback
(p50/p99, nearest rank). CPU is utime + stime of the three node processes over the window, from
/proc/<pid>/stat (all threads, including the tick threads).

Prints one JSON line. The node processes are this script's children (`--node`), run with the
same interpreter, which must have pysyncobj installed (compare.py makes a private venv for it):

    bench/pysyncobj/.venv/bin/python bench/pysyncobj/run_pysyncobj.py --in-flight 5000

Cleanup: every read from a node has a deadline (`--timeout-s` in all), the nodes are killed in a
`finally` (SIGTERM is turned into an exit so that runs too), each node dies with its parent
(PR_SET_PDEATHSIG) and exits by itself once `--timeout-s` plus a margin has passed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any

PYSYNCOBJ_VERSION = "0.3.17"
HOST = "127.0.0.1"
KEYS = 64
NODES = 3
WATCHDOG_MARGIN_S = 15.0  # a node outlives the orchestrator's own deadline by at most this much
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is the state, field 3 of proc(5)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime (14) and stime (15)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest rank, as dscore.runtime.bench does."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))]


# -- node process ---------------------------------------------------------------------------------------


def _emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _die_with_parent(parent_pid: int, hard_timeout_s: float) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(3)
    watchdog = threading.Timer(hard_timeout_s, os._exit, (4,))
    watchdog.daemon = True
    watchdog.start()


def _make_node(self_addr: str, partners: list[str], overrides: dict[str, Any]) -> Any:
    # the private venv has pysyncobj; the repository's does not
    from pysyncobj import SyncObj, SyncObjConf, replicated  # type: ignore[import-not-found]

    class KvObj(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            # The defaults, spelled out where they matter: no journal or dump file (memory only, so
            # no fsync), static membership, the auto-tick thread driving the node.
            settings: dict[str, Any] = {
                "journalFile": None,
                "fullDumpFile": None,
                "dynamicMembershipChange": False,
                "autoTick": True,
            }
            conf = SyncObjConf(**(settings | overrides))
            super().__init__(self_addr, partners, conf)
            self.__data: dict[str, str] = {}
            self.__applied = 0

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, value: str) -> None:
            self.__data[key] = value
            self.__applied += 1

    return KvObj()


def _drive(node: Any, command: dict[str, Any]) -> dict[str, object]:
    """Keep `in_flight` commands outstanding; count successes that complete inside the window."""
    from pysyncobj import FAIL_REASON

    success = FAIL_REASON.SUCCESS
    in_flight = int(command["in_flight"])
    pids: list[int] = [int(pid) for pid in command["pids"]]
    monotonic = time.monotonic
    window_start = monotonic() + float(command["warmup_s"])
    window_end = window_start + float(command["duration_s"])
    latencies: list[float] = []
    errors: collections.Counter[int] = collections.Counter()
    retry: collections.deque[int] = collections.deque()  # slots whose command failed
    put = node.put

    def submit(slot: int) -> None:
        put(f"k{slot % KEYS}", "v", callback=partial(done, slot, monotonic()))

    def done(slot: int, sent: float, _result: object, error: int) -> None:
        # Runs on PySyncObj's tick thread (or, for QUEUE_FULL, inside `submit`).
        now = monotonic()
        if error == success:
            if window_start <= now < window_end:
                latencies.append(now - sent)
            if now < window_end:
                submit(slot)
        else:
            errors[error] += 1
            retry.append(slot)  # resubmitted by the main thread, never recursively

    term_before, leader_before = node._getTerm(), str(node._getLeader())
    for slot in range(in_flight):
        submit(slot)

    def wait_until(deadline: float) -> None:
        while (now := monotonic()) < deadline:
            time.sleep(min(0.02, deadline - now))
            while retry:
                submit(retry.popleft())

    wait_until(window_start)
    cpu_start = [cpu_seconds(pid) for pid in pids]
    own_cpu_start, applied_start, started = time.process_time(), node.raftLastApplied, monotonic()
    wait_until(window_end)
    cpu_end = [cpu_seconds(pid) for pid in pids]
    own_cpu_end, applied_end, ended = time.process_time(), node.raftLastApplied, monotonic()
    ordered = sorted(latencies)
    return {
        "event": "result",
        "ops": len(ordered),
        "seconds": ended - started,
        "p50_ms": percentile(ordered, 50) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "cpu_s_per_process": [end - start for start, end in zip(cpu_start, cpu_end, strict=True)],
        # cross-checks: the driver's own CPU clock, and entries the leader applied in the window
        "driver_process_time_s": own_cpu_end - own_cpu_start,
        "applied_in_window": applied_end - applied_start,
        "errors": {str(code): count for code, count in sorted(errors.items())},
        "leader_changed": node._getTerm() != term_before or str(node._getLeader()) != leader_before,
        "driver_is_leader": bool(node._isLeader()),
    }


def run_node(args: argparse.Namespace) -> int:
    _die_with_parent(args.parent_pid, args.timeout_s + WATCHDOG_MARGIN_S)
    import pysyncobj.version  # type: ignore[import-not-found]

    node = _make_node(args.node, args.partners, dict(args.conf))
    deadline = time.monotonic() + args.timeout_s
    while not (node._isReady() and node._getLeader() is not None):
        if time.monotonic() > deadline:
            _emit({"event": "error", "error": "no leader"})
            os._exit(5)
        time.sleep(0.05)
    _emit({"event": "ready", "pysyncobj": pysyncobj.version.VERSION, "python": sys.version.split()[0]})
    for line in sys.stdin:  # one JSON command per line; EOF means stop
        command = json.loads(line)
        if command["cmd"] == "status":
            leader = node._getLeader()
            _emit({"event": "status", "self": args.node, "leader": None if leader is None else str(leader)})
        elif command["cmd"] == "drive":
            _emit(_drive(node, command))
        else:
            break
    node.destroy()
    os._exit(0)  # do not wait for the tick thread's next wake-up


# -- orchestrator ---------------------------------------------------------------------------------------


class NodeProcess:
    """One node: its process, a line reader over its stdout with deadlines, and its stderr in a file."""

    def __init__(self, command: list[str], address: str, stderr: IO[bytes]) -> None:
        self.address = address
        self.stderr = stderr
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        assert self.process.stdout is not None and self.process.stdin is not None
        self._stdin = self.process.stdin
        self._fd = self.process.stdout.fileno()
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, command: dict[str, object]) -> None:
        self._stdin.write((json.dumps(command) + "\n").encode())
        self._stdin.flush()

    def read(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"node {self.address}: no answer within --timeout-s")
            if self._selector.select(remaining):
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    code = self.process.poll()
                    raise RuntimeError(f"node {self.address} closed its output (exit {code})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        if event.get("event") == "error":
            raise RuntimeError(f"node {self.address}: {event['error']}")
        return event

    def stderr_tail(self, limit: int = 2000) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-limit:]

    def kill(self) -> None:
        for stop, grace in ((self.process.terminate, 2.0), (self.process.kill, 5.0)):
            if self.process.poll() is not None:
                break
            stop()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        self._selector.close()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_cluster(args: argparse.Namespace) -> dict[str, object]:
    deadline = time.monotonic() + args.timeout_s
    addresses = [f"{HOST}:{port}" for port in free_ports(NODES)]
    nodes: list[NodeProcess] = []
    with contextlib.ExitStack() as files:
        try:
            for i, address in enumerate(addresses):
                partners = addresses[:i] + addresses[i + 1 :]
                command = [
                    args.python, "-u", str(Path(__file__).resolve()), "--node", address, *partners,
                    "--parent-pid", str(os.getpid()), "--timeout-s", str(args.timeout_s),
                    *(f"--conf={key}={json.dumps(value)}" for key, value in args.conf),
                ]  # fmt: skip
                stderr = files.enter_context(tempfile.TemporaryFile())
                nodes.append(NodeProcess(command, address, stderr))
                if args.cpus is not None:
                    os.sched_setaffinity(nodes[-1].pid, args.cpus)
            return _measure(args, nodes, deadline)
        except BaseException:
            for node in nodes:
                tail = node.stderr_tail().strip()
                if tail:
                    print(f"--- node {node.address} stderr ---\n{tail}", file=sys.stderr)
            raise
        finally:
            for node in nodes:
                node.kill()


def _measure(args: argparse.Namespace, nodes: list[NodeProcess], deadline: float) -> dict[str, object]:
    """Wait for one leader that every node names, have its process drive the load, return the result."""
    ready = [node.read(deadline) for node in nodes]
    while True:
        for node in nodes:
            node.send({"cmd": "status"})
        leaders = {node.read(deadline)["leader"] for node in nodes}
        if len(leaders) == 1 and None not in leaders:
            break
        time.sleep(0.1)
    (leader_address,) = leaders
    driver = next(node for node in nodes if node.address == leader_address)
    driver.send(
        {
            "cmd": "drive",
            "in_flight": args.in_flight,
            "warmup_s": args.warmup_s,
            "duration_s": args.duration_s,
            "pids": [node.pid for node in nodes],
        }
    )
    result = driver.read(deadline)
    cpu_s = sum(result["cpu_s_per_process"])
    ops = int(result["ops"])
    seconds = float(result["seconds"])
    return {
        "system": "pysyncobj",
        "version": ready[0]["pysyncobj"],
        "python": ready[0]["python"],
        "nodes": NODES,
        "in_flight": args.in_flight,
        "ops": ops,
        "seconds": round(seconds, 4),
        "ops_s": round(ops / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(result["p50_ms"], 3),
        "p99_ms": round(result["p99_ms"], 3),
        "cpu_s": round(cpu_s, 3),
        "cpu_s_per_process": [round(value, 3) for value in result["cpu_s_per_process"]],
        "cpu_us_per_op": round(cpu_s / ops * 1e6, 2) if ops else None,
        "driver_process_time_s": round(result["driver_process_time_s"], 3),
        "applied_in_window": result["applied_in_window"],
        "errors": result["errors"],
        "leader_changed": result["leader_changed"],
        "driver_is_leader": result["driver_is_leader"],
        "cpus": None if args.cpus is None else sorted(args.cpus),
        "conf": dict(args.conf),
    }


def _cpu_set(text: str) -> set[int]:
    try:
        cpus = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated CPU numbers, got {text!r}") from None
    if not cpus:
        raise argparse.ArgumentTypeError("empty CPU list")
    return cpus


def _setting(text: str) -> tuple[str, Any]:
    """'appendEntriesPeriod=0.01' -> ('appendEntriesPeriod', 0.01): the value is JSON, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected SyncObjConf KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--in-flight", type=int, default=5000, help="outstanding commands (default 5000)")
    parser.add_argument("--duration-s", type=float, default=5.0, help="measurement seconds (default 5)")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured seconds under load first")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=None,
        help="hard limit on the run (default 60 + warm-up + duration)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the nodes (with pysyncobj)")
    parser.add_argument("--cpus", type=_cpu_set, default=None, help="pin the nodes to these CPUs, e.g. 0")
    parser.add_argument(
        "--conf",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a SyncObjConf setting (repeatable; default: PySyncObj's defaults), "
        "e.g. appendEntriesPeriod=0.01",
    )
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("partners", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_flight < 1 or args.duration_s <= 0 or args.warmup_s < 0:
        parser.error("--in-flight >= 1, --duration-s > 0 and --warmup-s >= 0 required")
    if args.timeout_s is None:
        args.timeout_s = 60.0 + args.warmup_s + args.duration_s
    elif args.timeout_s <= args.warmup_s + args.duration_s:
        parser.error("--timeout-s must exceed --warmup-s + --duration-s")
    return args


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so that `finally` kills the nodes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.node is not None:
        return run_node(args)
    handler: Callable[[int, Any], None] = _exit_on_sigterm
    signal.signal(signal.SIGTERM, handler)
    try:
        result = run_cluster(args)
    except (TimeoutError, RuntimeError) as error:
        print(f"run_pysyncobj.py: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
