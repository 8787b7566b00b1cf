"""Histories and linearizability checking, compatible with Jepsen, Knossos and Porcupine.

* `read_edn_history` / `parse_edn_history`: Jepsen EDN histories (one op map per line).
* `HistoryRecorder`: record a client history from Python; `History.to_edn` writes it.
* `check_history(history, model="register" | "kv", timeout_s=None) -> CheckResult`.

See `dscore.check.models` for the models' semantics and `dscore.check.linearizability`
for the algorithm.
"""

from dscore.check.edn import Keyword, Symbol, Tagged
from dscore.check.errors import EdnSyntaxError, HistoryError
from dscore.check.history import (
    History,
    HistoryRecorder,
    Op,
    Operation,
    OpType,
    pair_operations,
    parse_edn_history,
    read_edn_history,
)
from dscore.check.linearizability import check_history
from dscore.check.models import MODELS
from dscore.check.result import CheckResult, KeyResult, LinearizedStep, StuckOp, Verdict

__all__ = [
    "MODELS",
    "CheckResult",
    "EdnSyntaxError",
    "History",
    "HistoryError",
    "HistoryRecorder",
    "KeyResult",
    "Keyword",
    "LinearizedStep",
    "Op",
    "OpType",
    "Operation",
    "StuckOp",
    "Symbol",
    "Tagged",
    "Verdict",
    "check_history",
    "pair_operations",
    "parse_edn_history",
    "read_edn_history",
]
