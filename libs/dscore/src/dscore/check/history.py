"""Histories of client operations, in memory and in Jepsen's EDN form.

A history is a sequence of `Op`s, each an invocation or a completion (`:ok`, `:fail`,
`:info`) by one process: `{:process 0, :type :invoke, :f :write, :value 3}`, one map per
line. `read_edn_history` reads that form (extra keys such as `:time` and `:index` are
ignored; a single top-level vector of maps is accepted too); `History.to_edn` writes it.

Pairing follows Jepsen: a completion pairs with the most recent invocation of its process.
Rules, enforced with a `HistoryError` that names the line (or op index):

* a completion whose process has no pending invocation is bad input;
* an invocation while the same process still has one pending is bad input (a crashed
  Jepsen client completes with `:info` and comes back under a fresh process id);
* a completion's `:f` must match its invocation's;
* an invocation never completed by the end of the history is indeterminate, like `:info`.

Ops of the `:nemesis` process are kept in the history (so it round-trips) but are not
paired or checked. Processes are ints or keyword names (`str`); keywords and strings are
both read as `str` and written back as keywords.

`HistoryRecorder` is the Python API other modules (simulator, demo clients) use to record
a client history as it happens.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TypeAlias

from dscore.check.edn import EdnValue, Keyword, dumps, iter_forms
from dscore.check.errors import HistoryError

Process: TypeAlias = int | str
NEMESIS_PROCESS = "nemesis"


class OpType(Enum):
    """What an op records: the start of an operation or one of its three outcomes."""

    INVOKE = "invoke"
    OK = "ok"  # took effect, and the value is its result
    FAIL = "fail"  # certainly did not take effect
    INFO = "info"  # indeterminate: may have taken effect at any time after its invocation, or never


_OP_TYPES = {member.value: member for member in OpType}


@dataclass(frozen=True, slots=True)
class Op:
    """One history entry. `index` is its 0-based position; `line` its source line, if read."""

    process: Process
    type: OpType
    f: str
    key: EdnValue = None
    value: EdnValue = None
    index: int = -1
    line: int | None = field(default=None, compare=False)

    @property
    def is_nemesis(self) -> bool:
        return self.process == NEMESIS_PROCESS

    def to_edn(self) -> str:
        process = str(self.process) if type(self.process) is int else ":" + str(self.process)
        parts = [f"{{:process {process}", f":type :{self.type.value}", f":f :{self.f}"]
        if self.key is not None:
            parts.append(f":key {dumps(self.key)}")
        parts.append(f":value {dumps(self.value)}")
        if self.index >= 0:
            parts.append(f":index {self.index}")
        return ", ".join(parts) + "}"

    def describe(self) -> str:
        """The op as EDN, plus where it came from."""
        where = f" (line {self.line})" if self.line is not None else ""
        return self.to_edn() + where


@dataclass(frozen=True, slots=True)
class Operation:
    """An invocation paired with its completion (None: never completed, so indeterminate)."""

    invoke: Op
    completion: Op | None

    @property
    def process(self) -> Process:
        return self.invoke.process

    @property
    def f(self) -> str:
        return self.invoke.f

    @property
    def outcome(self) -> OpType:
        """OK, FAIL or INFO; an invocation that never completed counts as INFO."""
        return OpType.INFO if self.completion is None else self.completion.type

    @property
    def call(self) -> int:
        """History index of the invocation."""
        return self.invoke.index

    @property
    def ret(self) -> int | None:
        """History index of the completion, or None when there is none."""
        return None if self.completion is None else self.completion.index

    def describe(self) -> str:
        if self.completion is None:
            return f"{self.invoke.describe()}, never completed"
        return f"{self.invoke.describe()} -> {self.completion.describe()}"


@dataclass(frozen=True, slots=True)
class History:
    """An immutable sequence of ops; each op's `index` is set to its position."""

    ops: tuple[Op, ...] = ()

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        if any(op.index != position for position, op in enumerate(ops)):
            ops = tuple(
                op if op.index == position else replace(op, index=position) for position, op in enumerate(ops)
            )
        object.__setattr__(self, "ops", ops)

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def operations(self) -> tuple[Operation, ...]:
        """Client operations in invocation order (see `pair_operations`)."""
        return pair_operations(self.ops)

    def to_edn(self) -> str:
        """One EDN map per line, Jepsen style."""
        return "".join(op.to_edn() + "\n" for op in self.ops)


def pair_operations(ops: Iterable[Op]) -> tuple[Operation, ...]:
    """Pair each client invocation with its completion, in invocation order.

    Nemesis ops are left out. Raises `HistoryError` for a completion with no pending
    invocation, a second invocation while one is pending, or a mismatched `:f`.
    """
    pending: dict[Process, int] = {}  # process -> slot of its pending invocation
    invokes: list[Op] = []
    completions: list[Op | None] = []
    for op in ops:
        process = op.process
        if process == NEMESIS_PROCESS:
            continue
        if op.type is OpType.INVOKE:
            if process in pending:
                earlier = invokes[pending[process]]
                raise HistoryError(
                    f"process {process!r} invoked :{op.f} while its earlier invocation "
                    f"(op index {earlier.index}) is still pending",
                    line=op.line,
                    index=op.index,
                )
            pending[process] = len(invokes)
            invokes.append(op)
            completions.append(None)
            continue
        slot = pending.pop(process, None)
        if slot is None:
            raise HistoryError(
                f"completion :{op.type.value} of process {process!r} has no pending invocation",
                line=op.line,
                index=op.index,
            )
        if invokes[slot].f != op.f:
            raise HistoryError(
                f"completion :f :{op.f} does not match its invocation's :f :{invokes[slot].f}",
                line=op.line,
                index=op.index,
            )
        completions[slot] = op
    return tuple(map(Operation, invokes, completions))


_PROCESS = Keyword("process")
_TYPE = Keyword("type")
_F = Keyword("f")
_KEY = Keyword("key")
_VALUE = Keyword("value")


def _name(value: EdnValue) -> str | None:
    if type(value) is Keyword:
        return value.name
    if type(value) is str:
        return value
    return None


def _op_from_map(form: EdnValue, index: int, line: int) -> Op:
    if type(form) is not dict:
        raise HistoryError(f"expected an operation map, got {dumps(form)[:60]}", line=line, index=index)
    process = form.get(_PROCESS)
    if type(process) is not int:
        process = _name(process)
        if process is None:
            raise HistoryError("operation needs a :process that is an integer or a keyword", line=line)
    op_type = _OP_TYPES.get(_name(form.get(_TYPE)) or "")
    if op_type is None:
        raise HistoryError(
            f"operation needs a :type of :invoke, :ok, :fail or :info, got {dumps(form.get(_TYPE))}",
            line=line,
        )
    f = _name(form.get(_F))
    if f is None:
        raise HistoryError("operation needs an :f that is a keyword", line=line)
    return Op(process, op_type, f, form.get(_KEY), form.get(_VALUE), index, line)


def parse_edn_history(text: str, *, source: str | None = None) -> History:
    """Read and pair-validate a Jepsen EDN history from `text`."""
    try:
        ops = tuple(
            _op_from_map(form, index, line)
            for index, (form, line) in enumerate(iter_forms(text, unwrap_top_level=True))
        )
        pair_operations(ops)  # validate pairing now, while line numbers are at hand
    except HistoryError as error:
        raise error.with_source(source) if source is not None else error from None
    # The ops already carry their positions, so History needs no re-indexing.
    return History(ops)


def _looks_like_edn(text: str) -> bool:
    stripped = text.lstrip()
    return not stripped or stripped[0] in "{[(;" or "\n" in text


def read_edn_history(path_or_text: str | os.PathLike[str]) -> History:
    """Read a history from a file path (a `PathLike`, or a `str` naming a file) or EDN text.

    A `str` is EDN text when it is empty, contains a newline, or starts with `{`, `[`,
    `(` or `;`; otherwise it names a file.
    """
    if isinstance(path_or_text, str) and _looks_like_edn(path_or_text):
        return parse_edn_history(path_or_text)
    path = Path(path_or_text)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HistoryError(f"cannot read history: {error}", source=str(path)) from None
    return parse_edn_history(text, source=str(path))


class _Unset(Enum):
    UNSET = "unset"


_UNSET = _Unset.UNSET


class HistoryRecorder:
    """Records a client history as operations happen; safe to share between threads.

    `invoke` returns an op id (the invocation's index) to pass to `ok`, `fail` or `info`.
    A completion without a value repeats the invocation's value (right for writes and
    cas); pass the observed value for reads.
    """

    __slots__ = ("_lock", "_ops", "_pending_by_process")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._pending_by_process: dict[Process, int] = {}

    def invoke(self, process: Process, f: str, key: EdnValue = None, value: EdnValue = None) -> int:
        with self._lock:
            if process in self._pending_by_process:
                pending = self._pending_by_process[process]
                raise HistoryError(f"process {process!r} invoked :{f} while op {pending} is pending")
            op_id = len(self._ops)
            self._ops.append(Op(process, OpType.INVOKE, f, key, value, op_id))
            self._pending_by_process[process] = op_id
            return op_id

    def ok(self, op_id: int, value: EdnValue | _Unset = _UNSET) -> Op:
        """The operation took effect; `value` is its result (e.g. the value read)."""
        return self._complete(op_id, OpType.OK, value)

    def fail(self, op_id: int, value: EdnValue | _Unset = _UNSET) -> Op:
        """The operation certainly did not take effect."""
        return self._complete(op_id, OpType.FAIL, value)

    def info(self, op_id: int, value: EdnValue | _Unset = _UNSET) -> Op:
        """The outcome is unknown (timeout, crash); reuse a fresh process id afterwards."""
        return self._complete(op_id, OpType.INFO, value)

    def _complete(self, op_id: int, op_type: OpType, value: EdnValue | _Unset) -> Op:
        with self._lock:
            invocation = self._ops[op_id] if 0 <= op_id < len(self._ops) else None
            if invocation is None or self._pending_by_process.get(invocation.process) != op_id:
                raise HistoryError(f"op {op_id} is not a pending invocation", index=op_id)
            del self._pending_by_process[invocation.process]
            completion = Op(
                invocation.process,
                op_type,
                invocation.f,
                invocation.key,
                invocation.value if value is _UNSET else value,
                len(self._ops),
            )
            self._ops.append(completion)
            return completion

    def record(self, op: Op) -> Op:
        """Append a ready-made op (e.g. a nemesis :info), re-indexed.

        Client ops are pairing-checked like `invoke`/`ok`; nemesis ops are not paired.
        """
        with self._lock:
            op = replace(op, index=len(self._ops), line=None)
            if op.process != NEMESIS_PROCESS:
                pending = self._pending_by_process.get(op.process)
                if op.type is OpType.INVOKE:
                    if pending is not None:
                        raise HistoryError(f"process {op.process!r} already has op {pending} pending")
                    self._pending_by_process[op.process] = op.index
                else:
                    if pending is None:
                        raise HistoryError(f"process {op.process!r} has no pending invocation")
                    if self._ops[pending].f != op.f:
                        raise HistoryError(f"completion :f :{op.f} does not match op {pending}")
                    del self._pending_by_process[op.process]
            self._ops.append(op)
            return op

    @property
    def pending(self) -> tuple[int, ...]:
        """Op ids of invocations not completed yet."""
        with self._lock:
            return tuple(sorted(self._pending_by_process.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def history(self) -> History:
        with self._lock:
            return History(tuple(self._ops))

    def to_edn(self) -> str:
        return self.history().to_edn()
