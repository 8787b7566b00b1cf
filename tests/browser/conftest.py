"""Fixtures of the browser tests: Debian's Chromium (installed on first use), one headless browser per
module, driven over the DevTools protocol on a pipe (tests/browser/cdp_pipe.py).

Chromium is installed by the `chromium` fixture when it is missing, with `need` of scripts/lib.sh: the
same rule as Redis and Java for the other tests (apt-get as root or with passwordless sudo;
DSCORE_NO_INSTALL=1 forbids it, and the test then fails saying what to install). About 30 s, once per
machine; DSCORE_CHROMIUM names another Chromium binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp_pipe import Browser

REPO_ROOT = Path(__file__).resolve().parents[2]
#: a cold install downloads ~100 MB of packages; a stuck apt lock waits up to 300 s (scripts/lib.sh)
INSTALL_TIMEOUT_S = 900


@pytest.fixture(scope="session")
def chromium() -> str:
    configured = os.environ.get("DSCORE_CHROMIUM")
    if configured:
        return configured
    found = shutil.which("chromium")
    if found:
        return found
    result = subprocess.run(
        ["bash", "-c", 'source scripts/lib.sh && need chromium chromium "Chromium (for the browser tests)"'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    found = shutil.which("chromium")
    if result.returncode != 0 or not found:
        pytest.fail(
            f"Chromium is needed for tests/browser and could not be installed:\n{result.stderr[-3000:]}"
        )
    return found


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with Browser(chromium, tmp_path_factory.mktemp("chromium-profile")) as running:
        yield running
