"""The checker against the brute-force oracle on small random histories.

Two sources of cases, both seeded: random interleavings with random results (mostly not
linearizable), and executions simulated by `dscore.check.generate` (linearizable) with one
read result corrupted half of the time. Each case has at most 7 operations, so the oracle
can try every order (a few cases go up to 10). On violations, the explanation's prefix is checked to be a real
linearizable prefix and its stuck ops to be really stuck.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

import dscore.check.linearizability as linearizability
from dscore.check import History, Op, OpType, Verdict, check_history
from dscore.check.brute_force import brute_force_linearizable
from dscore.check.edn import EdnValue
from dscore.check.generate import generate_history
from dscore.check.models import apply, get_model, interpret, same_value

REGISTER_VALUES: tuple[EdnValue, ...] = (None, 0, 1, 2)
KV_VALUES: tuple[EdnValue, ...] = (None, "", "x", "y", "xy", "yx")


def _random_call(rng: random.Random, model: str) -> tuple[str, EdnValue]:
    if model == "register":
        f = rng.choice(("read", "read", "write", "write", "cas"))
        if f == "read":
            return f, None
        if f == "write":
            return f, rng.choice(REGISTER_VALUES[1:])
        return f, (rng.choice(REGISTER_VALUES), rng.choice(REGISTER_VALUES[1:]))
    f = rng.choice(("get", "get", "put", "append", "append", "cas"))
    if f == "get":
        return f, None
    if f == "put":
        return f, rng.choice(KV_VALUES)
    if f == "append":
        return f, rng.choice(("x", "y"))
    return f, (rng.choice(KV_VALUES), rng.choice(KV_VALUES))


def random_history(rng: random.Random, model: str, max_operations: int = 7) -> History:
    """A random interleaving of a few operations with random results and outcomes."""
    operations = rng.randint(1, max_operations)
    processes = rng.randint(1, 5)
    keys = ("a", "b") if model == "kv" and rng.random() < 0.5 else ("a",)
    tuple_keys = model == "kv" and rng.random() < 0.5
    pending: dict[int, tuple[str, EdnValue, EdnValue]] = {}
    ops: list[Op] = []
    next_process = processes
    started = 0
    clients = list(range(processes))
    while started < operations or pending:
        slot = rng.randrange(processes)
        process = clients[slot]
        if process not in pending:
            if started == operations:
                continue
            f, value = _random_call(rng, model)
            key = rng.choice(keys) if model == "kv" else None
            pending[process] = (f, key, value)
            started += 1
            if tuple_keys:
                ops.append(Op(process, OpType.INVOKE, f, value=(key, value)))
            else:
                ops.append(Op(process, OpType.INVOKE, f, key=key, value=value))
            continue
        f, key, value = pending.pop(process)
        roll = rng.random()
        if roll < 0.05 and started == operations:
            continue  # leave it uncompleted: indeterminate
        outcome = OpType.OK if roll < 0.7 else OpType.INFO if roll < 0.85 else OpType.FAIL
        if f in ("read", "get"):
            value = rng.choice(REGISTER_VALUES if model == "register" else KV_VALUES)
        if tuple_keys:
            ops.append(Op(process, outcome, f, value=(key, value)))
        else:
            ops.append(Op(process, outcome, f, key=key, value=value))
        if outcome is OpType.INFO:
            clients[slot] = next_process
            next_process += 1
    return History(tuple(ops))


def corrupted_execution(rng: random.Random, model: str, seed: int) -> History:
    """A simulated (linearizable) execution; half the time one :ok read result is replaced."""
    history = generate_history(
        model=model,
        operations=rng.randint(1, 7),
        processes=rng.randint(1, 4),
        seed=seed,
        keys=rng.randint(1, 2),
        value_domain=3,
        crash_rate=0.15,
        fail_rate=0.1,
        key_form=rng.choice(("key", "tuple")),
    )
    ops = list(history.ops)
    reads = [i for i, op in enumerate(ops) if op.type is OpType.OK and op.f in ("read", "get")]
    if reads and rng.random() < 0.5:
        i = rng.choice(reads)
        op = ops[i]
        if model == "register":
            value: EdnValue = rng.choice(REGISTER_VALUES)
        else:
            put = rng.choice(("", f"({rng.randint(1, 6)})"))
            value = rng.choice((None, put, put + "".join(f"[{rng.randint(1, 6)}]" for _ in range(2))))
            if isinstance(op.value, tuple):
                value = (op.value[0], value)
        ops[i] = Op(op.process, op.type, op.f, op.key, value)
    return History(tuple(ops))


def _assert_explanation_is_sound(history: History, model: str) -> None:
    """A violation's prefix must replay under the model in real-time order, and stick."""
    result = check_history(history, model)
    spec = get_model(model)
    ops_by_operation = {
        model_op.operation: model_op
        for ops in interpret(spec, history.operations()).ops_by_key.values()
        for model_op in ops
    }
    for key_result in result.violations:
        state = spec.initial
        steps = [ops_by_operation[step.operation] for step in key_result.longest_prefix]
        for step, recorded in zip(steps, key_result.longest_prefix, strict=True):
            applies, state = apply(step, state)
            assert applies
            assert same_value(state, recorded.state_after)
        for earlier_index, earlier in enumerate(steps):
            for later in steps[earlier_index + 1 :]:
                assert later.ret is None or later.ret > earlier.call  # real-time order kept
        assert same_value(key_result.stuck_state, state)
        assert key_result.stuck_ops, "a violation names the ops that could not go next"
        for stuck in key_result.stuck_ops:
            assert not apply(ops_by_operation[stuck.operation], state)[0]
            assert stuck.operation.completion is not None
            assert stuck.operation.completion.to_edn() in key_result.explanation


@pytest.mark.parametrize("model", ["register", "kv"])
def test_random_histories_agree_with_brute_force(model: str) -> None:
    rng = random.Random(f"random-{model}")
    verdicts: Counter[bool] = Counter()
    for case in range(1500):
        history = random_history(rng, model, max_operations=10 if case % 10 == 0 else 7)
        expected = brute_force_linearizable(history, model)
        result = check_history(history, model)
        assert result.verdict is not Verdict.UNKNOWN
        assert (result.verdict is Verdict.LINEARIZABLE) == expected, history.to_edn()
        verdicts[expected] += 1
        if not expected:
            _assert_explanation_is_sound(history, model)
    assert verdicts[True] >= 300 and verdicts[False] >= 300, verdicts


@pytest.mark.parametrize("model", ["register", "kv"])
def test_simulated_executions_agree_with_brute_force(model: str) -> None:
    rng = random.Random(f"simulated-{model}")
    verdicts: Counter[bool] = Counter()
    for seed in range(1000):
        history = corrupted_execution(rng, model, seed)
        expected = brute_force_linearizable(history, model)
        result = check_history(history, model)
        assert (result.verdict is Verdict.LINEARIZABLE) == expected, history.to_edn()
        verdicts[expected] += 1
        if not expected:
            _assert_explanation_is_sound(history, model)
    assert verdicts[True] >= 400 and verdicts[False] >= 100, verdicts


@pytest.mark.slow
@pytest.mark.parametrize("model", ["register", "kv"])
def test_many_more_histories_agree_with_brute_force(model: str) -> None:
    rng = random.Random(f"slow-{model}")
    for case in range(30_000):
        if case % 2:
            history = random_history(rng, model, max_operations=10)
        else:
            history = corrupted_execution(rng, model, case + 1_000_000)
        expected = brute_force_linearizable(history, model)
        assert (check_history(history, model).verdict is Verdict.LINEARIZABLE) == expected, history.to_edn()
        if not expected:
            _assert_explanation_is_sound(history, model)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "processes", "value_domain"),
    [("register", 50, 5), ("register", 20, 3), ("register", 30, None), ("kv", 50, 5)],
)
def test_large_simulated_executions_are_linearizable(
    model: str, processes: int, value_domain: int | None
) -> None:
    for seed in range(3):
        history = generate_history(
            model=model,
            operations=20_000,
            processes=processes,
            seed=seed,
            keys=max(1, processes // 5),
            value_domain=value_domain,
            crash_rate=0.02,
        )
        result = check_history(history, model, timeout_s=120)
        assert result.verdict is Verdict.LINEARIZABLE, result.explanation


def test_violations_found_up_front_are_explained_soundly(monkeypatch: pytest.MonkeyPatch) -> None:
    # No search budget for explanations: violations the pre-check finds keep its explanation.
    monkeypatch.setattr(linearizability, "EXPLANATION_SEARCH_BUDGET", 0)
    monkeypatch.setattr(linearizability, "EXPLANATION_SEARCH_BUDGET_PER_OP", 0)
    monkeypatch.setattr(linearizability, "CLOCK_CHECK_INTERVAL", 1)
    rng = random.Random("up-front")
    up_front = 0
    for _ in range(1500):
        history = random_history(rng, "register")
        expected = brute_force_linearizable(history, "register")
        result = check_history(history, "register")
        assert (result.verdict is Verdict.LINEARIZABLE) == expected, history.to_edn()
        if not expected:
            _assert_explanation_is_sound(history, "register")
            up_front += "in every order of its ops" in result.explanation
    assert up_front >= 100
