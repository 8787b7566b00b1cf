"""bench/etcd/compare.py pauses the idle system during the other's runs: `paused` stops every process it is
given for the block and continues them after, also when the block fails or a process is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "etcd"))
from compare import paused

#: bound on waiting for the kernel to carry out a signal (never waited out in a passing run)
BOUND_S = 30.0


def _state(pid: int) -> str:
    """The kernel's one-letter state of `pid` (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _stopped(pid: int) -> bool:
    """Whether `pid` ends up stopped: a signal takes effect when the process is next scheduled, so this
    polls its state until it is stopped (True) or settled running or asleep (False), within BOUND_S."""
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        state = _state(pid)
        if state in "TS":
            return state == "T"
        time.sleep(0.001)
    raise AssertionError(f"process {pid} stayed in state {_state(pid)!r} for {BOUND_S} s")


def test_the_processes_stop_for_the_block_and_continue_after_it_even_on_failure() -> None:
    children = [subprocess.Popen(["sleep", "600"]) for _ in range(2)]
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        pids = [child.pid for child in children]
        assert not any(_stopped(pid) for pid in pids)  # asleep in `sleep`, not stopped
        with pytest.raises(RuntimeError, match="the run failed"), paused([*pids, gone.pid]):
            assert all(_stopped(pid) for pid in pids)
            raise RuntimeError("the run failed")
        assert not any(_stopped(pid) for pid in pids)
    finally:
        for child in children:
            child.kill()
            child.wait()
