"""A brute-force linearizability oracle for tiny histories, to test the real checker against.

It shares only pairing and `dscore.check.models` (what ops mean) with the checker, and
tries every order of the ops consistent with real time (an op may go next unless some
other unlinearized `:ok` op returned before it was invoked), applying the reference step
`models.apply` on raw values: no linked list, no interning, no dropping of ops, no cache.
Exponential, so it refuses more than `MAX_OPS` ops per key.
"""

from __future__ import annotations

from collections.abc import Sequence

from dscore.check.edn import EdnValue
from dscore.check.history import History
from dscore.check.models import Model, ModelOp, apply, get_model, interpret

MAX_OPS = 10


def brute_force_linearizable(history: History, model: str = "register") -> bool:
    """Whether `history` is linearizable, by exhaustive search (at most MAX_OPS ops per key)."""
    spec = get_model(model)
    interpretation = interpret(spec, history.operations())
    return all(_key_linearizable(spec, ops) for ops in interpretation.ops_by_key.values())


def _key_linearizable(model: Model, ops: Sequence[ModelOp]) -> bool:
    if len(ops) > MAX_OPS:
        raise ValueError(f"brute force is limited to {MAX_OPS} ops per key, got {len(ops)}")

    def may_go_next(candidate: int, remaining: tuple[int, ...]) -> bool:
        call = ops[candidate].call
        for other in remaining:
            ret = ops[other].ret  # None for indeterminate ops: they never return
            if other != candidate and ret is not None and ret < call:
                return False
        return True

    def search(remaining: tuple[int, ...], state: EdnValue) -> bool:
        if not any(ops[index].certain for index in remaining):
            return True  # indeterminate ops left over simply never took effect
        for candidate in remaining:
            if not may_go_next(candidate, remaining):
                continue
            applies, new_state = apply(ops[candidate], state)
            if applies and search(tuple(i for i in remaining if i != candidate), new_state):
                return True
        return False

    return search(tuple(range(len(ops))), model.initial)
