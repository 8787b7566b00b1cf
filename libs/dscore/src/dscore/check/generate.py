"""Random histories of simulated concurrent executions, linearizable by construction.

`generate_history` runs `processes` clients against an in-memory register or kv store,
driven by a seeded `random.Random`. Each step picks a client and advances its operation:
invoke it, make it take effect (the linearization point, between invocation and
completion), or complete it. Some operations crash (`crash_rate`): they complete with
`:info`, either having taken effect or not, and a crashed-before-effect write may still
take effect later (as a real in-flight request can); the client then continues under a
fresh process id (`process + processes`, as Jepsen does). A `:cas` whose `from` does not
match completes with `:fail`, as does a small share of ops rejected before taking effect.
Nemesis `:info` ops are sprinkled in when `nemesis_rate` > 0.

Used by `dscore bench check` and the randomized tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dscore.check.edn import EdnValue
from dscore.check.history import History, HistoryRecorder, Op, OpType

KEY_FORMS = ("key", "tuple")


@dataclass(slots=True)
class _Pending:
    op_id: int
    f: str
    key: str | None
    argument: EdnValue
    applied: bool = False
    result: EdnValue = None
    succeeded: bool = True  # False for a cas whose `from` did not match


def generate_history(
    *,
    model: str = "register",
    operations: int = 1000,
    processes: int = 5,
    seed: int = 0,
    keys: int = 1,
    value_domain: int | None = 5,
    crash_rate: float = 0.01,
    fail_rate: float = 0.01,
    nemesis_rate: float = 0.0,
    key_form: str = "key",
) -> History:
    """A linearizable history of `operations` client operations (invocation + completion pairs).

    `value_domain`: register writes draw from `range(value_domain)`, or are all distinct
    when None. `key_form` ("key" or "tuple") picks `:key k` or jepsen.independent's
    `:value [k v]` for the kv model.
    """
    if model not in ("register", "kv"):
        raise ValueError(f"unknown model {model!r}")
    if key_form not in KEY_FORMS:
        raise ValueError(f"key_form must be one of {KEY_FORMS}")
    rng = random.Random(seed)
    recorder = HistoryRecorder()
    key_names = [f"k{index}" for index in range(keys)] if model == "kv" else [None]
    store: dict[str | None, EdnValue] = {}
    process_ids = list(range(processes))
    pending: list[_Pending | None] = [None] * processes
    zombies: list[_Pending] = []  # crashed before taking effect; may still take effect
    counter = 0
    invoked = 0
    tuple_keys = model == "kv" and key_form == "tuple"

    def fresh_value() -> EdnValue:
        nonlocal counter
        counter += 1
        if model == "kv":
            return f"({counter})"  # delimited, so no value contains another
        return counter if value_domain is None else rng.randrange(value_domain)

    def take_effect(op: _Pending) -> None:
        current = store.get(op.key)
        if op.f in ("read", "get"):
            if current is None and model == "kv":
                op.result = rng.choice((None, ""))  # a never-written key reads as nil or ""
            else:
                op.result = current
        elif op.f in ("write", "put"):
            store[op.key] = op.argument
        elif op.f == "append":
            store[op.key] = ("" if current is None else str(current)) + str(op.argument)
        else:  # cas
            assert isinstance(op.argument, tuple)
            expected, new_value = op.argument
            effective = "" if model == "kv" and current is None else current
            if effective == expected and type(effective) is type(expected):
                store[op.key] = new_value
            else:
                op.succeeded = False
        op.applied = True

    def invoke(slot: int) -> None:
        nonlocal counter, invoked
        key = rng.choice(key_names)
        roll = rng.random()
        current = store.get(key)
        argument: EdnValue
        if model == "register":
            if roll < 0.5:
                f, argument = "read", None
            elif roll < 0.85:
                f, argument = "write", fresh_value()
            else:
                expected = current if rng.random() < 0.5 else fresh_value()
                f, argument = "cas", (expected, fresh_value())
        elif roll < 0.4:
            f, argument = "get", None
        elif roll < 0.6:
            f, argument = "put", fresh_value()
        elif roll < 0.9:
            counter += 1
            f, argument = "append", f"[{counter}]"  # delimited, so no token contains another
        else:
            expected = ("" if current is None else current) if rng.random() < 0.5 else fresh_value()
            f, argument = "cas", (expected, fresh_value())
        process = process_ids[slot]
        if tuple_keys:
            op_id = recorder.invoke(process, f, value=(key, argument))
        else:
            op_id = recorder.invoke(process, f, key=key, value=argument)
        pending[slot] = _Pending(op_id, f, key, argument)
        invoked += 1

    def complete(slot: int, op: _Pending) -> None:
        if op.f in ("read", "get"):
            value = (op.key, op.result) if tuple_keys else op.result
            recorder.ok(op.op_id, value)
        elif op.succeeded:
            recorder.ok(op.op_id)
        else:
            recorder.fail(op.op_id)
        pending[slot] = None

    def crash(slot: int, op: _Pending) -> None:
        recorder.info(op.op_id)
        if not op.applied and op.f not in ("read", "get") and rng.random() < 0.5:
            zombies.append(op)
        process_ids[slot] += processes
        pending[slot] = None

    while invoked < operations or any(op is not None for op in pending):
        if zombies and rng.random() < 0.02:
            take_effect(zombies.pop(rng.randrange(len(zombies))))
        if nemesis_rate and rng.random() < nemesis_rate:
            recorder.record(Op("nemesis", OpType.INFO, rng.choice(("start", "stop")), value=None))
        slot = rng.randrange(processes)
        op = pending[slot]
        if op is None:
            if invoked < operations:
                invoke(slot)
            continue
        if rng.random() < crash_rate:
            crash(slot, op)
        elif not op.applied:
            if rng.random() < fail_rate:
                recorder.fail(op.op_id)  # rejected before taking effect
                pending[slot] = None
            else:
                take_effect(op)
        else:
            complete(slot, op)
    return recorder.history()
