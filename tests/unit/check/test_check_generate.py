"""The history generator used by the bench and the randomized tests, and the oracle's limit."""

from __future__ import annotations

import pytest

from dscore.check import History, HistoryRecorder, OpType, check_history
from dscore.check.brute_force import MAX_OPS, brute_force_linearizable
from dscore.check.generate import generate_history


def test_same_seed_same_history() -> None:
    first = generate_history(model="kv", operations=300, processes=5, seed=7, keys=2)
    assert first == generate_history(model="kv", operations=300, processes=5, seed=7, keys=2)
    assert first != generate_history(model="kv", operations=300, processes=5, seed=8, keys=2)


def test_counts_operations_and_replaces_crashed_processes() -> None:
    history = generate_history(model="register", operations=2000, processes=4, seed=1, crash_rate=0.05)
    operations = history.operations()
    assert len(operations) == 2000
    assert all(operation.completion is not None for operation in operations)
    outcomes = {operation.outcome for operation in operations}
    assert outcomes == {OpType.OK, OpType.FAIL, OpType.INFO}
    crashed = {operation.process for operation in operations if operation.outcome is OpType.INFO}
    later = [operation for operation in operations if operation.process in crashed]
    # A crashed process id is never used again after its :info.
    for process in crashed:
        mine = [operation for operation in later if operation.process == process]
        assert mine[-1].outcome is OpType.INFO
    assert max(operation.process for operation in operations if isinstance(operation.process, int)) >= 4


def test_nemesis_ops_and_key_forms() -> None:
    history = generate_history(model="kv", operations=200, processes=3, seed=2, keys=3, nemesis_rate=0.05)
    assert any(op.is_nemesis for op in history)
    assert {op.key for op in history if not op.is_nemesis} == {"k0", "k1", "k2"}
    independent = generate_history(model="kv", operations=200, processes=3, seed=2, keys=3, key_form="tuple")
    assert all(op.key is None and isinstance(op.value, tuple) and len(op.value) == 2 for op in independent)


def test_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="model"):
        generate_history(model="queue")
    with pytest.raises(ValueError, match="key_form"):
        generate_history(model="kv", key_form="nested")


def test_brute_force_refuses_long_histories() -> None:
    recorder = HistoryRecorder()
    for value in range(MAX_OPS + 1):
        recorder.ok(recorder.invoke(0, "write", value=value))
    with pytest.raises(ValueError, match="limited"):
        brute_force_linearizable(recorder.history())
    assert brute_force_linearizable(History())
    assert check_history(recorder.history()).is_linearizable
