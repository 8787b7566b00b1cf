from __future__ import annotations

from dscore.core.dedup import DedupFilter
from dscore.core.ids import MsgId


def test_dedup_accepts_each_id_once_in_order() -> None:
    dedup = DedupFilter()
    ids = [MsgId("a", 1, s) for s in (1, 2, 3)]
    assert [dedup.accept(i) for i in ids] == [True, True, True]
    assert [dedup.accept(i) for i in ids] == [False, False, False]


def test_dedup_new_incarnation_restarts_sequence() -> None:
    dedup = DedupFilter({"a": (1, 50)})
    assert dedup.accept(MsgId("a", 2, 1))
    assert not dedup.accept(MsgId("a", 1, 51))  # an old incarnation's late message


def test_dedup_marks_are_per_sender() -> None:
    dedup = DedupFilter()
    assert dedup.accept(MsgId("a", 1, 5))
    assert dedup.accept(MsgId("b", 1, 1))
    assert dedup.marks == {"a": (1, 5), "b": (1, 1)}
