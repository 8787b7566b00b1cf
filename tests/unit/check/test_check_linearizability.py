"""check_history: verdicts, results, explanations, time budgets and bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import dscore.check.linearizability as linearizability
from dscore.check import (
    CheckResult,
    History,
    HistoryError,
    HistoryRecorder,
    Op,
    OpType,
    Verdict,
    check_history,
    read_edn_history,
)
from dscore.check.edn import EdnValue
from dscore.check.generate import generate_history


def _sequential(*calls: tuple[str, EdnValue, EdnValue], key: EdnValue = None) -> History:
    """One client doing (f, argument, result) calls one after another, all :ok."""
    recorder = HistoryRecorder()
    for f, argument, result in calls:
        recorder.ok(recorder.invoke(0, f, key=key, value=argument), result)
    return recorder.history()


def test_empty_history_is_linearizable() -> None:
    result = check_history(History())
    assert result.verdict is Verdict.LINEARIZABLE
    assert result.ops_checked == 0
    assert result.per_key == ()


def test_stale_read_is_explained_with_the_offending_op() -> None:
    history = _sequential(("write", 1, 1), ("write", 2, 2), ("read", None, 1))
    result = check_history(history)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    (violation,) = result.violations
    assert violation.key is None
    stale_read = history.ops[5]
    assert stale_read.to_edn() in result.explanation
    assert "read 1, but the register held 2" in result.explanation
    assert [step.state_after for step in violation.longest_prefix] == [1, 2]
    assert violation.stuck_state == 2
    assert [stuck.operation.completion for stuck in violation.stuck_ops] == [stale_read]


def test_values_compare_like_clojure() -> None:
    # 1, 1.0 and true are different values; nested vectors compare structurally.
    assert not check_history(_sequential(("write", 1, 1), ("read", None, 1.0))).is_linearizable
    assert not check_history(_sequential(("write", 1, 1), ("read", None, True))).is_linearizable
    assert check_history(
        _sequential(("write", (1, (2,)), (1, (2,))), ("read", None, (1, (2,))))
    ).is_linearizable


def test_kv_treats_nil_as_the_empty_string() -> None:
    history = _sequential(
        ("put", None, None), ("get", None, ""), ("append", "a", "a"), ("get", None, "a"), key="k"
    )
    assert check_history(history, "kv").is_linearizable


def test_kv_reports_each_violating_key() -> None:
    recorder = HistoryRecorder()
    for key in ("a", "b", "c"):
        recorder.ok(recorder.invoke(0, "put", key=key, value="1"))
        recorder.ok(recorder.invoke(0, "get", key=key), "1" if key == "b" else "2")
    result = check_history(recorder.history(), "kv")
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert [key_result.key for key_result in result.violations] == ["a", "c"]
    assert [key_result.verdict for key_result in result.per_key] == [
        Verdict.NOT_LINEARIZABLE,
        Verdict.LINEARIZABLE,
        Verdict.NOT_LINEARIZABLE,
    ]
    assert 'key "a"' in result.explanation and 'key "c"' in result.explanation
    assert "2 key(s) violate" in result.explanation


def test_ops_the_model_does_not_know_are_skipped() -> None:
    recorder = HistoryRecorder()
    recorder.ok(recorder.invoke(0, "write", value=1))
    recorder.ok(recorder.invoke(0, "sleep", value=5))
    recorder.record(Op("nemesis", OpType.INFO, "partition"))
    recorder.ok(recorder.invoke(0, "read"), 1)
    result = check_history(recorder.history())
    assert result.is_linearizable
    assert (result.ops_checked, result.ops_skipped) == (2, 1)


@pytest.mark.parametrize(
    ("model", "invocation", "fragment"),
    [
        ("register", "{:process 0, :type :invoke, :f :cas, :value 5}", "[from to] pair"),
        ("kv", '{:process 0, :type :invoke, :f :put, :value "x"}', "needs a :key"),
        ("kv", '{:process 0, :type :invoke, :f :append, :key "k", :value 5}', "must be a string"),
    ],
)
def test_values_the_model_cannot_interpret_are_bad_input(model: str, invocation: str, fragment: str) -> None:
    history = read_edn_history(
        '{:process 1, :type :invoke, :f :read, :key "k", :value nil}\n' + invocation + "\n"
    )
    with pytest.raises(HistoryError) as caught:
        check_history(history, model)
    assert caught.value.line == 2
    assert fragment in str(caught.value)


def test_tuple_key_completion_must_match() -> None:
    history = read_edn_history(
        "{:process 0, :type :invoke, :f :read, :value [1 nil]}\n{:process 0, :type :ok, :f :read, :value [2 5]}\n"
    )
    with pytest.raises(HistoryError, match="differs"):
        check_history(history, "kv")


def test_unknown_model_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        check_history(History(), "queue")


def test_result_to_json() -> None:
    history = _sequential(("put", "x", "x"), ("get", None, "y"), key=("composite", 1))
    result = check_history(history, "kv")
    data = json.loads(result.to_json())
    assert data["verdict"] == "NOT_LINEARIZABLE"
    assert data["model"] == "kv"
    assert data["ops_checked"] == 2
    (key_data,) = data["per_key"]
    assert key_data["key"] == ["composite", 1]
    assert key_data["longest_prefix_length"] == 1
    assert key_data["stuck_state"] == "x"
    assert key_data["stuck_ops"][0]["operation"]["completion"]["value"] == "y"
    assert 'read "y"' in key_data["stuck_ops"][0]["reason"]
    assert isinstance(CheckResult.to_json(result, indent=2), str)


def test_linearizable_keys_are_left_out_of_json() -> None:
    data = json.loads(check_history(_sequential(("write", 1, 1))).to_json())
    assert data["verdict"] == "LINEARIZABLE"
    assert data["per_key"] == []


def test_zero_budget_is_unknown() -> None:
    history = _sequential(("write", 1, 1), ("read", None, 1))
    result = check_history(history, timeout_s=0)
    assert result.verdict is Verdict.UNKNOWN
    assert "time budget" in result.explanation
    assert result.timeout_s == 0


class _FakeClock:
    """Each reading of `monotonic` is one second after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeClock]:
    clock = _FakeClock()
    monkeypatch.setattr(linearizability, "time", clock)
    monkeypatch.setattr(linearizability, "CLOCK_CHECK_INTERVAL", 1)
    yield clock


def test_budget_spent_during_the_search_is_unknown(fake_clock: _FakeClock) -> None:
    history = _sequential(*[("write", value, value) for value in range(10)])
    result = check_history(history, timeout_s=2.5)
    assert result.verdict is Verdict.UNKNOWN
    assert result.per_key[0].explanation == "time budget spent during the search"


def test_a_violation_outranks_an_unknown_key(fake_clock: _FakeClock) -> None:
    recorder = HistoryRecorder()
    recorder.ok(recorder.invoke(0, "get", key="bad"), "ghost")
    for value in range(20):
        recorder.ok(recorder.invoke(0, "put", key="long", value=str(value)))
    result = check_history(recorder.history(), "kv", timeout_s=4.5)
    assert [key_result.verdict for key_result in result.per_key] == [
        Verdict.NOT_LINEARIZABLE,
        Verdict.UNKNOWN,
    ]
    assert result.verdict is Verdict.NOT_LINEARIZABLE


def test_generated_histories_are_linearizable() -> None:
    for model, seed in (("register", 1), ("register", 2), ("kv", 1), ("kv", 2)):
        history = generate_history(
            model=model, operations=1500, processes=10, seed=seed, keys=3, nemesis_rate=0.01, crash_rate=0.03
        )
        result = check_history(history, model, timeout_s=30)
        assert result.verdict is Verdict.LINEARIZABLE, result.explanation
        assert result.ops_checked == 1500


def test_generated_independent_kv_histories_are_linearizable() -> None:
    history = generate_history(model="kv", operations=1000, processes=8, seed=3, keys=4, key_form="tuple")
    assert all(op.key is None and isinstance(op.value, tuple) for op in history)
    assert check_history(history, "kv", timeout_s=30).is_linearizable


def test_a_corrupted_long_history_is_caught_and_explained() -> None:
    history = generate_history(model="register", operations=3000, processes=10, seed=5, value_domain=None)
    ops = list(history.ops)
    reads = [
        index for index, op in enumerate(ops) if op.type is OpType.OK and op.f == "read" and index > 3000
    ]
    corrupted = reads[0]
    ops[corrupted] = Op(ops[corrupted].process, OpType.OK, "read", value=-1)
    result = check_history(History(tuple(ops)), timeout_s=30)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert ":value -1" in result.explanation
    assert f":index {corrupted}" in result.explanation
    (violation,) = result.violations
    assert len(violation.longest_prefix) > 500
    assert "(last 10 of" in result.explanation


@pytest.mark.parametrize("model", ["register", "kv"])
def test_a_violation_names_the_op_that_broke_the_history(model: str) -> None:
    # One :ok read per history changed to a value nothing writes. Where keys append, the search's
    # longest path often ends at a wrong turn elsewhere (concurrent appends ordered the wrong way
    # round) and gets stuck on a read that is fine; the explanation must name the changed read.
    for seed in range(24):
        history = generate_history(
            model=model, operations=60 + 10 * seed, processes=2 + seed % 7, seed=seed, value_domain=None
        )
        ops = list(history.ops)
        reads = [
            index
            for index, op in enumerate(ops)
            if op.type is OpType.OK and op.f in ("read", "get") and op.value not in (None, "")
        ]
        changed = reads[len(reads) // 2]
        ops[changed] = Op(ops[changed].process, OpType.OK, ops[changed].f, ops[changed].key, "never written")
        result = check_history(History(tuple(ops)), model)
        assert result.verdict is Verdict.NOT_LINEARIZABLE, seed
        (violation,) = result.violations
        assert [stuck.operation.ret for stuck in violation.stuck_ops] == [changed], seed
        completion = violation.stuck_ops[0].operation.completion
        assert completion is not None and completion.value == "never written"
        assert f":index {changed}" in result.explanation
        # a linearizable prefix of the history, long enough to show where the read had to go
        assert len(violation.longest_prefix) > len(reads) // 4, seed
