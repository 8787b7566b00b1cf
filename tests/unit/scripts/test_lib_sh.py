"""scripts/lib.sh's process checks, on real processes: a process the script just started is alive before it
has exec'd its program (its command line is still the forked shell's), and is_running, which also matches
the command line against stale pid files, does not say so yet."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

LIB = Path(__file__).resolve().parents[3] / "scripts" / "lib.sh"


def check(function: str, pid: int, *args: str) -> bool:
    script = f'source "{LIB}"; {function} "$@"'
    return subprocess.run(["bash", "-c", script, "check", str(pid), *args], check=False).returncode == 0


def test_a_process_still_before_its_exec_is_alive_but_not_yet_running_its_program(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # The shell waits on the fifo before it execs `sleep`: the window `cmd &` leaves in a start script.
    # (the program's name comes from the environment, so the shell's own command line never matches it)
    child = subprocess.Popen(
        ["bash", "-c", f'read -r _ <"{gate}"; exec "$PROGRAM" 600'], env={**os.environ, "PROGRAM": "sleep"}
    )
    try:
        assert check("is_alive", child.pid)
        assert not check("is_running", child.pid, "sleep 600")
        with gate.open("w") as opened:
            opened.write("go\n")
        # after the exec the command line is the program's (a bounded wait on the kernel's view)
        for _ in range(2_000):
            if check("is_running", child.pid, "sleep 600"):
                break
        assert check("is_running", child.pid, "sleep 600")
    finally:
        child.kill()
        child.wait()
    assert not check("is_alive", child.pid)
    assert not check("is_running", child.pid, "sleep 600")


def test_nonsense_pids_are_neither_alive_nor_running() -> None:
    for pid in ("", "abc", "-1"):
        script = f'source "{LIB}"; is_alive "{pid}" || is_running "{pid}" x'
        assert subprocess.run(["bash", "-c", script], check=False).returncode != 0
