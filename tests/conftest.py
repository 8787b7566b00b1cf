"""Guards shared by every test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _keep_the_collector_as_found() -> Iterator[None]:
    # `dscore demo` and `dscore bench raft` tune the process's collector (dscore.runtime.gc_tuning);
    # a test that runs them in-process must not change it for the tests after it.
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
