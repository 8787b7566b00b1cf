"""`tune_gc`: the process-wide collector setting node entry points apply."""

from __future__ import annotations

import gc

import pytest

from dscore.core.errors import ConfigError
from dscore.runtime.gc_tuning import DEFAULT_GC_GEN0_THRESHOLD, tune_gc
from dscore.settings import load_settings

# tests/conftest.py puts the collector back as it was after each test.


def test_the_young_threshold_is_raised_and_older_ones_kept() -> None:
    gc.set_threshold(700, 11, 12)
    tune_gc(25_000, freeze=False)
    assert gc.get_threshold() == (25_000, 11, 12)
    assert gc.get_freeze_count() == 0


def test_zero_keeps_the_thresholds_and_freeze_moves_live_objects_out_of_view() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()  # cycles are still collected


def test_a_negative_threshold_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        tune_gc(-1)


def test_the_setting_defaults_to_the_tuned_threshold_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().gc_gen0_threshold == DEFAULT_GC_GEN0_THRESHOLD
    monkeypatch.setenv("DSCORE_GC_GEN0_THRESHOLD", "0")
    assert load_settings().gc_gen0_threshold == 0
    monkeypatch.setenv("DSCORE_GC_GEN0_THRESHOLD", "-5")
    with pytest.raises(ConfigError, match="DSCORE_GC_GEN0_THRESHOLD"):
        load_settings()
