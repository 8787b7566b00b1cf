"""bench/etcd/compare.py pauses the idle system during the other's runs: `paused` stops every process it is
given for the block and continues them after, also when the block fails or a process is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "etcd"))
from compare import paused


def _state(pid: int) -> str:
    """The kernel's one-letter state of `pid` (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_the_processes_stop_for_the_block_and_continue_after_it_even_on_failure() -> None:
    children = [subprocess.Popen(["sleep", "600"]) for _ in range(2)]
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        pids = [child.pid for child in children]
        with pytest.raises(RuntimeError, match="the run failed"), paused([*pids, gone.pid]):
            assert [_state(pid) for pid in pids] == ["T", "T"]
            raise RuntimeError("the run failed")
        assert [_state(pid) for pid in pids] == ["S", "S"]
    finally:
        for child in children:
            child.kill()
            child.wait()
