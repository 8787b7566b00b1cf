"""`ProgressWatch`: stuck only when progress was owed and none came for the whole bound (virtual time)."""

from __future__ import annotations

from dscore.transport.stall import ProgressWatch


def test_owed_progress_that_never_comes_is_a_stall_after_the_bound() -> None:
    watch = ProgressWatch(bound_s=4.0)
    assert not watch.stalled(10.0, progress=7, owed=True)
    assert not watch.stalled(13.9, progress=7, owed=True)
    assert watch.stalled(14.0, progress=7, owed=True)


def test_any_progress_starts_the_bound_over() -> None:
    watch = ProgressWatch(bound_s=4.0)
    assert not watch.stalled(10.0, progress=7, owed=True)
    assert not watch.stalled(13.0, progress=8, owed=True)
    assert not watch.stalled(16.0, progress=8, owed=True)
    assert watch.stalled(17.0, progress=8, owed=True)


def test_time_owing_nothing_does_not_count() -> None:
    watch = ProgressWatch(bound_s=4.0)
    assert not watch.stalled(10.0, progress=7, owed=True)
    assert not watch.stalled(12.0, progress=7, owed=False)
    # owed again, same count: the bound starts now, not at 10.0
    assert not watch.stalled(20.0, progress=7, owed=True)
    assert not watch.stalled(23.0, progress=7, owed=True)
    assert watch.stalled(24.0, progress=7, owed=True)


def test_forget_starts_over_after_a_replacement() -> None:
    watch = ProgressWatch(bound_s=4.0)
    assert not watch.stalled(10.0, progress=7, owed=True)
    assert watch.stalled(14.0, progress=7, owed=True)
    watch.forget()
    assert not watch.stalled(15.0, progress=7, owed=True)
    assert watch.stalled(19.0, progress=7, owed=True)
