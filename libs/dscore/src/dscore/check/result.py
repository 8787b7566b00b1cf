"""What a linearizability check returns: a verdict, per-key details and an explanation."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum

from dscore.check.edn import EdnValue, Keyword, Symbol, Tagged, dumps
from dscore.check.history import Op, Operation

# How many steps of the longest linearizable prefix `to_dict` includes (the last ones).
JSON_PREFIX_STEPS = 50


class Verdict(Enum):
    LINEARIZABLE = "LINEARIZABLE"
    NOT_LINEARIZABLE = "NOT_LINEARIZABLE"
    UNKNOWN = "UNKNOWN"  # the time budget ran out first


@dataclass(frozen=True, slots=True)
class LinearizedStep:
    """One op of a linearization and the model state right after it."""

    operation: Operation
    state_after: EdnValue


@dataclass(frozen=True, slots=True)
class StuckOp:
    """An op that could have come next when the search got stuck, and why it could not."""

    operation: Operation
    reason: str


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key (the key is None for a single register).

    On a violation, `longest_prefix` is a linearizable prefix of the history, in order, and
    `stuck_ops` are ops that could have come next, none of which the state after that prefix
    (`stuck_state`) allows. Usually that is one op, the first whose return the history cannot
    explain, after a linearization of everything invoked before it returned; where finding it
    takes more than the checker's budget, the search's longest path and the ops stuck after
    it (the name is kept from that form, as JSON readers use it).
    """

    key: EdnValue
    verdict: Verdict
    ops_checked: int
    ops_searched: int
    configurations: int
    longest_prefix: tuple[LinearizedStep, ...] = ()
    stuck_state: EdnValue = None
    stuck_ops: tuple[StuckOp, ...] = ()
    explanation: str = ""

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "key": to_jsonable(self.key),
            "verdict": self.verdict.value,
            "ops_checked": self.ops_checked,
            "ops_searched": self.ops_searched,
            "configurations": self.configurations,
        }
        if self.verdict is Verdict.NOT_LINEARIZABLE:
            tail = self.longest_prefix[-JSON_PREFIX_STEPS:]
            data["longest_prefix_length"] = len(self.longest_prefix)
            data["longest_prefix_tail"] = [
                {"operation": operation_to_dict(step.operation), "state_after": to_jsonable(step.state_after)}
                for step in tail
            ]
            data["stuck_state"] = to_jsonable(self.stuck_state)
            data["stuck_ops"] = [
                {"operation": operation_to_dict(stuck.operation), "reason": stuck.reason}
                for stuck in self.stuck_ops
            ]
        if self.explanation:
            data["explanation"] = self.explanation
        return data


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of `check_history`.

    `ops_checked` counts the client operations (invocation + completion pairs) the model
    knows, `ops_skipped` the client operations with an unknown `:f` (nemesis ops are left
    out before pairing and counted in neither).
    """

    verdict: Verdict
    model: str
    per_key: tuple[KeyResult, ...]
    explanation: str
    ops_checked: int
    ops_skipped: int
    elapsed_s: float
    timeout_s: float | None = None

    @property
    def is_linearizable(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE

    @property
    def violations(self) -> tuple[KeyResult, ...]:
        return tuple(result for result in self.per_key if result.verdict is Verdict.NOT_LINEARIZABLE)

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.value,
            "model": self.model,
            "ops_checked": self.ops_checked,
            "ops_skipped": self.ops_skipped,
            "keys": len(self.per_key),
            "elapsed_s": round(self.elapsed_s, 6),
            "timeout_s": self.timeout_s,
            "explanation": self.explanation,
            # Linearizable keys carry nothing interesting; list only the others.
            "per_key": [
                result.to_dict() for result in self.per_key if result.verdict is not Verdict.LINEARIZABLE
            ],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)


def to_jsonable(value: EdnValue) -> object:
    """An EDN value as plain JSON data: keywords become ":name" strings, tuples lists."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else dumps(value)
    if isinstance(value, Keyword):
        return str(value)
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, tuple | list):
        return [to_jsonable(item) for item in value]
    if isinstance(value, frozenset | set):
        return sorted((to_jsonable(item) for item in value), key=repr)
    if isinstance(value, dict):
        if all(isinstance(key, str | Keyword) for key in value):
            return {str(key): to_jsonable(item) for key, item in value.items()}
        return [[to_jsonable(key), to_jsonable(item)] for key, item in value.items()]
    assert isinstance(value, Tagged)
    return {"tag": value.tag, "value": to_jsonable(value.value)}


def op_to_dict(op: Op) -> dict[str, object]:
    data: dict[str, object] = {
        "process": op.process,
        "type": op.type.value,
        "f": op.f,
        "value": to_jsonable(op.value),
        "index": op.index,
    }
    if op.key is not None:
        data["key"] = to_jsonable(op.key)
    if op.line is not None:
        data["line"] = op.line
    return data


def operation_to_dict(operation: Operation) -> dict[str, object]:
    return {
        "invoke": op_to_dict(operation.invoke),
        "completion": None if operation.completion is None else op_to_dict(operation.completion),
    }
