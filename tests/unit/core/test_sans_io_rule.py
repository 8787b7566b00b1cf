"""The sans-I/O rule: protocol cores, core data, state machines and clocks never touch I/O, the clock or
unseeded randomness, and never import the layers above them.

Every module of `GUARDED` is checked two ways:

- statically (`violations`): its imports and calls, with aliases resolved (`import random as r;
  r.random()`, `from random import Random as R; R()`, `r = random`). Banned: I/O, clock and
  concurrency modules (`BANNED_MODULES`, `importlib` too: a dynamic import escapes every other check),
  module-level `random` functions, `random.Random()` without a seed, `SystemRandom`, a `.seed()` without
  an argument (reseeds from the OS), `uuid1`/`uuid4`/`getnode`, the builtins `open`, `input`, `print`,
  `__import__` and `breakpoint`, `getattr` on the `random` module, and any `dscore` module outside
  `GUARDED` (directly or relatively);
- transitively (`transitive_violations`): the module is imported alone in a fresh interpreter, and
  `sys.modules` then must hold no `dscore` module outside `GUARDED` and no module of `TRANSITIVE_BANNED`.
  Modules that every interpreter or an allowed dependency loads anyway (`os`, `time` and `io` at start,
  `datetime` by msgpack, `importlib` by `inspect`) cannot be told apart there; the static check covers
  their direct use.

Each rule is shown to fail on a planted violation, written into a temporary module and checked like a
real one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dscore

PACKAGE_ROOT = Path(dscore.__file__).parent
#: the guarded modules and packages (a package covers everything under it)
GUARDED = (
    "dscore.core",
    "dscore.protocols",
    "dscore.statemachine",
    "dscore.clocks",
    # the executor both drivers run, and the plain types it shares with them
    "dscore.replica",
    "dscore.storage.base",
    "dscore.transport.base",
)
BANNED_MODULES = {
    "asyncio", "time", "aiokafka", "redis", "socket", "threading", "datetime", "os", "secrets", "importlib",
    "io", "pathlib", "shutil", "subprocess", "tempfile", "multiprocessing", "concurrent", "selectors",
    "select", "signal", "ssl", "http", "urllib", "logging", "sqlite3",
}  # fmt: skip
#: loaded by nothing a guarded module may import, so seeing one in `sys.modules` means a violation
TRANSITIVE_BANNED = {
    "asyncio", "aiokafka", "redis", "socket", "threading", "secrets", "shutil", "subprocess", "tempfile",
    "multiprocessing", "concurrent", "selectors", "select", "ssl", "http", "urllib", "logging", "sqlite3",
    "uuid",
}  # fmt: skip
#: `random.Random` (a class to inject, with a seed) is allowed; these use hidden global state
BANNED_RANDOM_FUNCTIONS = {
    "random", "randint", "randrange", "uniform", "choice", "choices", "shuffle", "sample", "seed",
    "getrandbits", "gauss", "expovariate", "randbytes", "triangular", "betavariate", "normalvariate",
    "lognormvariate", "vonmisesvariate", "paretovariate", "weibullvariate", "binomialvariate", "getstate",
    "setstate", "SystemRandom",
}  # fmt: skip
#: uuid functions that read the clock, the network card or the OS's entropy (uuid3/uuid5 are pure)
BANNED_UUID_FUNCTIONS = {"uuid1", "uuid4", "getnode"}
BANNED_BUILTINS = {"open", "input", "print", "__import__", "breakpoint"}


def is_guarded(module: str) -> bool:
    """A guarded module, or a package above one (importing a module runs its packages' `__init__`; what
    those load is checked by the transitive test like the rest)."""
    return any(module == g or module.startswith(g + ".") or g.startswith(module + ".") for g in GUARDED)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def guarded_files() -> list[Path]:
    files = []
    for name in GUARDED:
        relative = Path(*name.split("."))
        package = PACKAGE_ROOT.parent / relative
        files += package.rglob("*.py") if package.is_dir() else [package.with_suffix(".py")]
    return sorted(files)


class _Checker(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[str] = []
        #: local name -> what it stands for: "random", "uuid", "random.Random"
        self.aliases: dict[str, str] = {}

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.package.split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def _check_dscore(self, target: str, shown: str) -> None:
        if (target == "dscore" or target.startswith("dscore.")) and not is_guarded(target):
            self.found.append(f"{shown} (a layer above the guarded ones)")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            root = alias.name.split(".")[0]
            if root in BANNED_MODULES:
                self.found.append(f"import {alias.name}")
            if alias.name in ("random", "uuid"):
                self.aliases[alias.asname or alias.name] = alias.name
            self._check_dscore(alias.name, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = self._absolute(node)
        root = module.split(".")[0]
        if root in BANNED_MODULES:
            self.found.append(f"from {module} import ...")
        for alias in node.names:
            local = alias.asname or alias.name
            if module == "random":
                if alias.name == "Random":
                    self.aliases[local] = "random.Random"
                else:
                    self.found.append(f"from random import {alias.name}")
            elif module == "uuid" and alias.name in BANNED_UUID_FUNCTIONS:
                self.found.append(f"from uuid import {alias.name}")
            elif alias.name == "*":
                self.found.append(f"from {module} import * (hides what is used)")
            if module == "dscore":
                self._check_dscore(f"dscore.{alias.name}", f"from dscore import {alias.name}")
        if module != "dscore":
            self._check_dscore(module, f"from {module} import ...")

    def visit_Assign(self, node: ast.Assign) -> None:
        # `r = random` makes `r` an alias too
        if isinstance(node.value, ast.Name) and node.value.id in self.aliases:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.aliases[target.id] = self.aliases[node.value.id]
        self.generic_visit(node)

    def _resolves_to(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            base = self.aliases.get(node.value.id)
            if base in ("random", "uuid"):
                return f"{base}.{node.attr}"
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        target = self._resolves_to(node)
        if target is not None:
            base, _, name = target.partition(".")
            if (base == "random" and name in BANNED_RANDOM_FUNCTIONS) or (
                base == "uuid" and name in BANNED_UUID_FUNCTIONS
            ):
                self.found.append(f"{target} (as {ast.unparse(node)})")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if self._resolves_to(func) == "random.Random" and _unseeded(node):
            self.found.append(f"unseeded random.Random() ({ast.unparse(node)})")
        if isinstance(func, ast.Attribute) and func.attr == "seed" and not node.args and not node.keywords:
            self.found.append(f"{ast.unparse(node)} reseeds from the OS")
        if isinstance(func, ast.Name) and func.id in BANNED_BUILTINS:
            self.found.append(f"{func.id}()")
        if (
            isinstance(func, ast.Name)
            and func.id == "getattr"
            and node.args
            and self._resolves_to(node.args[0]) in ("random", "uuid")
        ):
            self.found.append(f"{ast.unparse(node)} (dynamic access to a guarded module)")
        self.generic_visit(node)


def _unseeded(call: ast.Call) -> bool:
    seeds = [*call.args[:1], *(k.value for k in call.keywords if k.arg == "x")]
    return not seeds or all(isinstance(s, ast.Constant) and s.value is None for s in seeds)


def violations(source: str, module: str = "dscore.core.example", is_package: bool = False) -> list[str]:
    """Static violations of the rule in one module's source."""
    checker = _Checker(module, is_package)
    checker.visit(ast.parse(source))
    return checker.found


def check_file(path: Path, module: str) -> list[str]:
    return violations(path.read_text(), module, path.name == "__init__.py")


def loaded_modules(module: str, extra_path: Path | None = None) -> set[str]:
    """`sys.modules` after importing `module` alone in a fresh interpreter."""
    prefix = [str(extra_path)] if extra_path is not None else []
    code = (
        f"import sys, json; sys.path[:0] = {prefix!r}; import {module}; print(json.dumps(list(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(result.stdout)
    return set(loaded)


def transitive_violations(module: str, extra_path: Path | None = None) -> list[str]:
    found = []
    for name in sorted(loaded_modules(module, extra_path)):
        if name.startswith("dscore.") and not is_guarded(name):
            found.append(f"loads {name} (a layer above the guarded ones)")
        elif name in TRANSITIVE_BANNED:
            found.append(f"loads {name}")
    return found


# -- the real modules ---------------------------------------------------------------------------------


def test_every_guarded_package_is_found() -> None:
    names = {module_name(p) for p in guarded_files()}
    for guarded in GUARDED:
        assert guarded in names, guarded
    assert len(names) >= 12


@pytest.mark.parametrize("path", guarded_files(), ids=module_name)
def test_module_is_sans_io(path: Path) -> None:
    assert check_file(path, module_name(path)) == []


@pytest.mark.parametrize("module", sorted({module_name(p) for p in guarded_files()}))
def test_module_imports_nothing_it_may_not_even_transitively(module: str) -> None:
    assert transitive_violations(module) == []


def test_the_transitive_check_is_not_blind() -> None:
    # A bare interpreter loads none of the modules it looks for, so seeing one means something.
    bare = loaded_modules("json")
    assert not {m.split(".")[0] for m in bare} & TRANSITIVE_BANNED
    assert not any(m.startswith("dscore") for m in bare)


# -- the rule fails on planted violations -------------------------------------------------------------


#: (source, the violation the rule reports)
PLANTED = [
    ("import asyncio", "import asyncio"),
    ("import time", "import time"),
    ("from time import monotonic", "from time import ..."),
    ("from redis.asyncio import Redis", "from redis.asyncio import ..."),
    ("import aiokafka.producer", "import aiokafka.producer"),
    ("import os.path", "import os.path"),
    ("from datetime import datetime", "from datetime import ..."),
    ("from random import randint", "from random import randint"),
    ("import random\nx = random.random()", "random.random (as random.random)"),
    ("import random\nrandom.shuffle([])", "random.shuffle (as random.shuffle)"),
    ("import random as r\nr.random()", "random.random (as r.random)"),
    ("import random as r\nx = r.choice", "random.choice (as r.choice)"),
    ("import random\nr = random\nr.randint(1, 2)", "random.randint (as r.randint)"),
    ("from random import random as draw", "from random import random"),
    ("import random\nrandom.Random()", "unseeded random.Random() (random.Random())"),
    ("import random\nrandom.Random(None)", "unseeded random.Random() (random.Random(None))"),
    ("import random\nrandom.Random(x=None)", "unseeded random.Random() (random.Random(x=None))"),
    ("from random import Random\nRandom()", "unseeded random.Random() (Random())"),
    ("from random import Random as R\nR()", "unseeded random.Random() (R())"),
    ("import random as r\nrng = r.Random()", "unseeded random.Random() (r.Random())"),
    ("from random import SystemRandom", "from random import SystemRandom"),
    ("import random\nrandom.SystemRandom()", "random.SystemRandom (as random.SystemRandom)"),
    ("def f(rng):\n    rng.seed()", "rng.seed() reseeds from the OS"),
    (
        "import random\ngetattr(random, 'random')()",
        "getattr(random, 'random') (dynamic access to a guarded module)",
    ),
    ("import importlib", "import importlib"),
    ("import importlib\nimportlib.import_module('time')", "import importlib"),
    ("from importlib import import_module", "from importlib import ..."),
    ("__import__('time')", "__import__()"),
    ("import uuid\nuuid.uuid4()", "uuid.uuid4 (as uuid.uuid4)"),
    ("import uuid as u\nu.uuid1()", "uuid.uuid1 (as u.uuid1)"),
    ("from uuid import uuid4 as make_id", "from uuid import uuid4"),
    ("open('state.bin', 'wb')", "open()"),
    ("print('hello')", "print()"),
    ("import logging", "import logging"),
    ("import threading", "import threading"),
    ("import dscore.runtime", "import dscore.runtime (a layer above the guarded ones)"),
    ("import dscore.runtime.node as node", "import dscore.runtime.node (a layer above the guarded ones)"),
    (
        "from dscore.runtime.node import NodeRuntime",
        "from dscore.runtime.node import ... (a layer above the guarded ones)",
    ),
    ("from dscore import runtime", "from dscore import runtime (a layer above the guarded ones)"),
    (
        "from dscore.settings import load_settings",
        "from dscore.settings import ... (a layer above the guarded ones)",
    ),
    (
        "from dscore.transport.memory import MemoryNetwork",
        "from dscore.transport.memory import ... (a layer above the guarded ones)",
    ),
    ("from ..runtime import node", "from dscore.runtime import ... (a layer above the guarded ones)"),
    ("from .. import sim", "from dscore import sim (a layer above the guarded ones)"),
    ("def later():\n    import asyncio", "import asyncio"),
    (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dscore.runtime.node import NodeRuntime",
        "from dscore.runtime.node import ... (a layer above the guarded ones)",
    ),
]


@pytest.mark.parametrize(("source", "reported"), PLANTED)
def test_the_rule_catches_a_planted_violation(tmp_path: Path, source: str, reported: str) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(source + "\n")
    assert check_file(planted, "dscore.core.planted") == [reported]


@pytest.mark.parametrize(
    "source",
    [
        "import random\ndef f(rng: random.Random) -> float:\n    return rng.random()",
        "import random\nrng = random.Random(7)",
        "import random\nrng = random.Random(f'{seed}:net')",
        "from random import Random\nrng = Random(x=3)",
        "def f(rng):\n    rng.seed(5)",
        "import uuid\nuuid.uuid5(uuid.NAMESPACE_DNS, 'n1')",
        "from dscore.core.errors import ConfigError",
        "from dscore.protocols.contract import Ready",
        "from dscore import clocks",
        "from . import codec",
        "from .errors import ConfigError",
        "import hashlib, hmac, zlib, struct",
    ],
)
def test_the_rule_allows(tmp_path: Path, source: str) -> None:
    allowed = tmp_path / "allowed.py"
    allowed.write_text(source + "\n")
    assert check_file(allowed, "dscore.core.allowed") == [], source


@pytest.fixture
def planted_modules(tmp_path: Path) -> Iterator[Path]:
    # `sneaky` looks clean to the static check; what it imports is not.
    (tmp_path / "sneaky_helper.py").write_text("import asyncio\n")
    (tmp_path / "sneaky.py").write_text("import sneaky_helper\n")
    (tmp_path / "upward.py").write_text(
        "import dscore.core.errors\nfrom dscore.settings import load_settings\n"
    )
    (tmp_path / "clean.py").write_text("import dscore.protocols.raft\n")
    yield tmp_path


def test_the_transitive_check_catches_a_hidden_import(planted_modules: Path) -> None:
    assert check_file(planted_modules / "sneaky.py", "dscore.core.sneaky") == []
    assert "loads asyncio" in transitive_violations("sneaky", planted_modules)


def test_the_transitive_check_catches_a_core_that_imports_the_runtime(planted_modules: Path) -> None:
    found = transitive_violations("upward", planted_modules)
    assert "loads dscore.settings (a layer above the guarded ones)" in found
    assert "loads dscore.runtime.node (a layer above the guarded ones)" in found
    assert transitive_violations("clean", planted_modules) == []
