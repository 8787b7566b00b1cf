"""Write one generated history twice: as EDN for dscore and as JSON lines for porcupine-check.

Both files hold the same operations. The JSON lines are derived from the EDN file as read
back by `read_edn_history`, so the two checkers see exactly the same input. The mapping
follows Jepsen's semantics (the ones dscore documents in `dscore.check.models`), written
out here independently of dscore's own interpretation so the comparison also cross-checks it:

* `:fail` ops never took effect and are dropped; so are nemesis ops.
* An `:info` op, or one never completed, may have taken effect at any point after its
  invocation, or never: its `return` is null (after everything, in porcupine-check) and its
  output is unknown. An indeterminate read constrains nothing and is dropped.
* `call` and `return` are the invocation's and completion's positions in the history.
* register: values are written as EDN text (`nil`, `1`, `"1"`), so the Go side compares
  them as Clojure would without knowing EDN; the register starts as `nil`.
* kv: keys are EDN text, values plain strings; nil reads and writes as "", which is also
  what a never-written key holds. `:read`/`:write` are aliases of `:get`/`:put`.

Usage: export.py --model kv --operations 10000 --processes 50 [--seed 0] [--crash-rate 0.01] OUT_DIR
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dscore.check.bench import REGISTER_VALUE_DOMAIN, BenchCase
from dscore.check.edn import EdnValue, dumps
from dscore.check.generate import generate_history
from dscore.check.history import History, OpType, read_edn_history

REGISTER_FUNCTIONS = {"read": "read", "write": "write", "cas": "cas"}
KV_FUNCTIONS = {"get": "get", "read": "get", "put": "put", "write": "put", "append": "append", "cas": "cas"}
INITIAL = {"register": "nil", "kv": ""}
BENCH_CRASH_RATE = 0.01  # as in `dscore.check.bench.run_case`


@dataclass(frozen=True, slots=True)
class ExportedCase:
    name: str
    model: str
    operations: int
    processes: int
    edn_path: Path
    jsonl_path: Path


def generate(
    model: str, operations: int, processes: int, seed: int, crash_rate: float = BENCH_CRASH_RATE
) -> History:
    """The history `dscore bench check` generates for this case (same knobs as `run_case`).

    `crash_rate` is the share of ops that complete with `:info`; Porcupine's search is
    sensitive to it (see README.md), so it can be varied apart from the rest.
    """
    case = BenchCase(model, operations, processes)
    return generate_history(
        model=model,
        operations=operations,
        processes=processes,
        seed=seed,
        keys=case.keys,
        value_domain=REGISTER_VALUE_DOMAIN,
        crash_rate=crash_rate,
        fail_rate=0.01,
        nemesis_rate=0.001,
    )


def case_name(model: str, operations: int, processes: int, seed: int, crash_rate: float) -> str:
    name = f"{model}-{operations}-p{processes}-s{seed}"
    return name if crash_rate == BENCH_CRASH_RATE else f"{name}-crash{crash_rate:g}"


def _register_value(value: EdnValue) -> str:
    if isinstance(value, dict | set | frozenset):
        raise ValueError(f"register value {dumps(value)} has no canonical text")  # EDN order varies
    return dumps(value)


def _kv_value(value: EdnValue) -> str:
    if value is None:
        return ""
    if type(value) is not str:
        raise ValueError(f"kv values must be strings, got {dumps(value)}")
    return value


def porcupine_ops(history: History, model: str) -> list[dict[str, Any]]:
    """The client operations of `history` as porcupine-check input records."""
    functions = REGISTER_FUNCTIONS if model == "register" else KV_FUNCTIONS
    encode = _register_value if model == "register" else _kv_value
    records: list[dict[str, Any]] = []
    for operation in history.operations():
        f = functions.get(operation.f)
        outcome = operation.outcome
        if f is None or outcome is OpType.FAIL:
            continue
        invoke, completion = operation.invoke, operation.completion
        argument = invoke.value
        result = None if completion is None else completion.value
        key: EdnValue = invoke.key
        if model == "register":
            if key is not None:
                raise ValueError(f"keyed register ops are not supported: {operation.describe()}")
        elif key is None:
            # jepsen.independent style: the value is a [key value] tuple, on both sides.
            if type(argument) is not tuple or len(argument) != 2:
                raise ValueError(f"kv op without a key: {operation.describe()}")
            key, argument = argument
            if type(result) is tuple and len(result) == 2:
                result = result[1]
        certain = outcome is OpType.OK
        record_input: dict[str, str] = {"f": f, "key": "" if key is None else dumps(key)}
        output: dict[str, Any] = {"value": "", "unknown": not certain}
        if f in ("read", "get"):
            if not certain:
                continue
            output["value"] = encode(result)
        elif f == "cas":
            if type(argument) is not tuple or len(argument) != 2:
                raise ValueError(f"cas needs a [from to] value: {operation.describe()}")
            record_input["value"], record_input["to"] = encode(argument[0]), encode(argument[1])
        else:
            record_input["value"] = encode(argument)
        records.append(
            {
                "client_id": operation.process if type(operation.process) is int else 0,
                "input": record_input,
                "output": output,
                "call": operation.call,
                "return": operation.ret if certain else None,
            }
        )
    return records


def write_jsonl(history: History, model: str, processes: int, path: Path) -> None:
    header = {
        "model": model,
        "operations": len(history.operations()),
        "processes": processes,
        "initial": INITIAL[model],
    }
    lines = [json.dumps(header), *(json.dumps(record) for record in porcupine_ops(history, model))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def export(history: History, name: str, model: str, processes: int, out_dir: Path) -> ExportedCase:
    """Write `name`.edn, read it back, and write `name`.jsonl from what was read."""
    out_dir.mkdir(parents=True, exist_ok=True)
    edn_path = out_dir / f"{name}.edn"
    jsonl_path = out_dir / f"{name}.jsonl"
    edn_path.write_text(history.to_edn(), encoding="utf-8")
    parsed = read_edn_history(edn_path)
    write_jsonl(parsed, model, processes, jsonl_path)
    operations = len(parsed.operations())
    return ExportedCase(name, model, operations, processes, edn_path, jsonl_path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("register", "kv"), required=True)
    parser.add_argument("--operations", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crash-rate", type=float, default=BENCH_CRASH_RATE)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    name = case_name(args.model, args.operations, args.processes, args.seed, args.crash_rate)
    history = generate(args.model, args.operations, args.processes, args.seed, args.crash_rate)
    case = export(history, name, args.model, args.processes, args.out_dir)
    print(case.edn_path)
    print(case.jsonl_path)


if __name__ == "__main__":
    main()
