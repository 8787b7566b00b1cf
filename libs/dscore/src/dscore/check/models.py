"""The sequential specifications the checker linearizes against, and how ops map onto them.

Two models, both partitioned by key (P-compositionality: a history is linearizable iff the
sub-history of every key is):

* `register`: one register per key, initially nil. `:read` (result = the value read),
  `:write v`, `:cas [from to]`. Ops normally carry no key (a single register); an explicit
  `:key` makes independent registers.
* `kv`: a map of string keys; `:get`/`:read`, `:put`/`:write`, `:append` (string
  concatenation) and `:cas [from to]`. A key never written holds "", and nil is read and
  written as "" (so a read of a never-written key may return nil or ""). The key comes from
  `:key k` or, jepsen.independent style, from a `[k v]` tuple `:value`.

Semantics (Jepsen's): an `:ok` op took effect between its invocation and completion; a
`:fail` op never took effect and is dropped; an `:info` op (or one never completed) may
have taken effect at any point after its invocation, or never. A read whose outcome is
unknown says nothing and is dropped. A `:cas` that is `:ok` succeeded (its `from` equalled
the state); a `:cas` `:fail` did not take effect. Operations whose `:f` the model does not
know (a `:txn`, say) are skipped and counted in `ops_skipped`; `:nemesis` ops never reach the
model (pairing leaves them out).

Values compare as in Clojure: `1`, `1.0` and `true` are all different (see `canonical`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from dscore.check.edn import EdnValue, Tagged, dumps
from dscore.check.errors import HistoryError
from dscore.check.history import Operation, OpType


class OpKind(IntEnum):
    READ = 0
    WRITE = 1
    CAS = 2
    APPEND = 3


@dataclass(frozen=True, slots=True)
class Model:
    """A sequential specification: which `:f`s it knows and how values are read."""

    name: str
    functions: Mapping[str, OpKind]
    initial: EdnValue
    nil_is_empty_string: bool  # kv: nil and "" are the same value
    key_in_value: bool  # kv: accept jepsen.independent's `:value [k v]`
    subject: str  # "register" or "key", for explanations


REGISTER = Model(
    name="register",
    functions={"read": OpKind.READ, "write": OpKind.WRITE, "cas": OpKind.CAS},
    initial=None,
    nil_is_empty_string=False,
    key_in_value=False,
    subject="register",
)
KV = Model(
    name="kv",
    functions={
        "get": OpKind.READ,
        "read": OpKind.READ,
        "put": OpKind.WRITE,
        "write": OpKind.WRITE,
        "append": OpKind.APPEND,
        "cas": OpKind.CAS,
    },
    initial="",
    nil_is_empty_string=True,
    key_in_value=True,
    subject="key",
)
MODELS: Mapping[str, Model] = {REGISTER.name: REGISTER, KV.name: KV}


def get_model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}") from None


@dataclass(frozen=True, slots=True)
class ModelOp:
    """An operation reduced to what the model needs.

    `argument`: the value read (READ), written (WRITE), appended (APPEND) or expected
    (CAS); `new_value`: the value a CAS installs. `certain` is False for indeterminate ops.
    """

    operation: Operation
    key: EdnValue
    kind: OpKind
    argument: EdnValue
    new_value: EdnValue
    certain: bool

    @property
    def call(self) -> int:
        return self.operation.call

    @property
    def ret(self) -> int | None:
        """Completion index for ops that took effect; None (infinity) for indeterminate ones."""
        return self.operation.ret if self.certain else None

    def describe(self) -> str:
        where = "" if self.certain else ", indeterminate"
        return f"{self.operation.describe()}{where}"


@dataclass(frozen=True, slots=True)
class Interpretation:
    """The searchable ops of a history, grouped by key in order of first appearance."""

    ops_by_key: Mapping[Hashable, tuple[ModelOp, ...]]
    keys: Mapping[Hashable, EdnValue]  # canonical key -> key as written
    considered_by_key: Mapping[Hashable, int]  # ops of the model per key, dropped ones included
    skipped: int  # client operations whose :f the model does not know


class _Tag:
    """A private marker that keeps canonical forms of different types apart."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_BOOL, _FLOAT, _VECTOR, _MAP, _SET, _TAGGED = (
    _Tag("bool"),
    _Tag("float"),
    _Tag("vector"),
    _Tag("map"),
    _Tag("set"),
    _Tag("tagged"),
)


def canonical(value: EdnValue) -> Hashable:
    """A hashable form of `value` equal only to forms of Clojure-equal values."""
    if value is None or type(value) is int or type(value) is str:
        return value
    if type(value) is bool:
        return (_BOOL, value)
    if type(value) is float:
        return (_FLOAT, value)
    if isinstance(value, tuple | list):
        return (_VECTOR, tuple(canonical(item) for item in value))
    if isinstance(value, dict):
        return (_MAP, frozenset((canonical(k), canonical(v)) for k, v in value.items()))
    if isinstance(value, frozenset | set):
        return (_SET, frozenset(canonical(item) for item in value))
    if isinstance(value, Tagged):
        return (_TAGGED, value.tag, canonical(value.value))
    assert isinstance(value, Hashable)
    return value  # Keyword, Symbol: hashable, and unequal to everything else


def same_value(left: EdnValue, right: EdnValue) -> bool:
    return canonical(left) == canonical(right)


def _bad(operation: Operation, message: str) -> HistoryError:
    invoke = operation.invoke
    return HistoryError(f"{message}: {invoke.to_edn()}", line=invoke.line, index=invoke.index)


def _split_key(model: Model, operation: Operation) -> tuple[EdnValue, EdnValue, EdnValue]:
    """(key, invocation value, completion value) of a client operation."""
    invoke, completion = operation.invoke, operation.completion
    completion_value = None if completion is None else completion.value
    if invoke.key is not None:
        if (
            completion is not None
            and completion.key is not None
            and not same_value(completion.key, invoke.key)
        ):
            raise _bad(operation, f"completion :key {dumps(completion.key)} differs from the invocation's")
        return invoke.key, invoke.value, completion_value
    if not model.key_in_value:
        return None, invoke.value, completion_value
    invoke_value = invoke.value
    if type(invoke_value) is not tuple or len(invoke_value) != 2:
        raise _bad(operation, "a kv operation needs a :key or a [key value] tuple :value")
    key, argument = invoke_value
    if completion_value is not None:
        if type(completion_value) is not tuple or len(completion_value) != 2:
            raise _bad(operation, f"completion value {dumps(completion_value)} is not a [key value] tuple")
        if not same_value(completion_value[0], key):
            raise _bad(
                operation, f"completion key {dumps(completion_value[0])} differs from the invocation's"
            )
        completion_value = completion_value[1]
    return key, argument, completion_value


def _interpret(model: Model, operation: Operation, kind: OpKind) -> tuple[EdnValue, ModelOp | None]:
    """The key of one client operation, and its model op (None when it cannot matter)."""
    outcome = operation.outcome
    key, invoke_value, completion_value = _split_key(model, operation)
    if outcome is OpType.FAIL:
        return key, None  # never took effect
    certain = outcome is OpType.OK
    empty = model.nil_is_empty_string
    if kind is OpKind.READ:
        if not certain:
            return key, None  # an unknown read constrains nothing
        value = "" if empty and completion_value is None else completion_value
        return key, ModelOp(operation, key, kind, value, None, certain)
    value = invoke_value if invoke_value is not None else completion_value
    if kind is OpKind.CAS:
        if type(value) is not tuple or len(value) != 2:
            raise _bad(operation, "a :cas value must be a [from to] pair")
        expected, new_value = value
        if empty:
            expected = "" if expected is None else expected
            new_value = "" if new_value is None else new_value
        return key, ModelOp(operation, key, kind, expected, new_value, certain)
    if empty and value is None:
        value = ""
    if kind is OpKind.APPEND and type(value) is not str:
        raise _bad(operation, "an :append value must be a string")
    return key, ModelOp(operation, key, kind, value, None, certain)


def interpret(model: Model, operations: Iterable[Operation]) -> Interpretation:
    """Map paired client operations onto `model`, grouped by key."""
    ops_by_key: dict[Hashable, list[ModelOp]] = {}
    keys: dict[Hashable, EdnValue] = {}
    considered: dict[Hashable, int] = {}
    skipped = 0
    functions = model.functions
    for operation in operations:
        kind = functions.get(operation.f)
        if kind is None:
            skipped += 1
            continue
        key, model_op = _interpret(model, operation, kind)
        canonical_key = canonical(key)
        if canonical_key not in keys:
            keys[canonical_key] = key
            ops_by_key[canonical_key] = []
            considered[canonical_key] = 0
        considered[canonical_key] += 1
        if model_op is not None:
            ops_by_key[canonical_key].append(model_op)
    return Interpretation(
        ops_by_key={key: tuple(ops) for key, ops in ops_by_key.items()},
        keys=keys,
        considered_by_key=considered,
        skipped=skipped,
    )


def apply(op: ModelOp, state: EdnValue) -> tuple[bool, EdnValue]:
    """The reference step: can `op` take effect in `state`, and the state after it.

    Slow but plain; the checker's hot loop uses an interned equivalent and the brute-force
    oracle and explanations use this one.
    """
    kind = op.kind
    if kind is OpKind.READ:
        return same_value(op.argument, state), state
    if kind is OpKind.WRITE:
        return True, op.argument
    if kind is OpKind.CAS:
        if same_value(op.argument, state):
            return True, op.new_value
        return False, state
    if type(state) is str and type(op.argument) is str:
        return True, state + op.argument
    return False, state


def why_not(model: Model, op: ModelOp, state: EdnValue) -> str:
    """Why `op` cannot take effect in `state`, in words."""
    held = f"the {model.subject} held {dumps(state)}"
    if op.kind is OpKind.READ:
        return f"read {dumps(op.argument)}, but {held}"
    if op.kind is OpKind.CAS:
        return f"cas expected {dumps(op.argument)}, but {held}"
    if op.kind is OpKind.APPEND:
        return f"cannot append to {dumps(state)}, which is not a string"
    return "a write always applies"
