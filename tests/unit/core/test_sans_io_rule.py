"""The sans-I/O rule: protocol cores and core data never touch I/O, the clock or global randomness.

Fails the build if any module under dscore/core or dscore/protocols imports asyncio, time, aiokafka,
redis, socket, threading or a module-level `random` function (an injected `random.Random` is fine).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dscore

PACKAGE_ROOT = Path(dscore.__file__).parent
GUARDED_DIRS = ("core", "protocols")
BANNED_MODULES = {"asyncio", "time", "aiokafka", "redis", "socket", "threading", "datetime", "os", "secrets"}
#: `random.Random` (a class to inject) is allowed; these module-level functions use hidden global state
BANNED_RANDOM_FUNCTIONS = {
    "random", "randint", "randrange", "uniform", "choice", "choices", "shuffle", "sample", "seed",
    "getrandbits", "gauss", "expovariate", "randbytes",
}  # fmt: skip


def guarded_files() -> list[Path]:
    return sorted(p for d in GUARDED_DIRS for p in (PACKAGE_ROOT / d).rglob("*.py"))


def violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in BANNED_MODULES:
                found.append(f"from {node.module} import ...")
            if root == "random":
                found += [f"from random import {a.name}" for a in node.names if a.name != "Random"]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr in BANNED_RANDOM_FUNCTIONS
        ):
            found.append(f"random.{node.attr}")
    return found


def test_guarded_directories_are_not_empty() -> None:
    assert len(guarded_files()) >= 5


@pytest.mark.parametrize("path", guarded_files(), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_module_is_sans_io(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import time",
        "from redis.asyncio import Redis",
        "import aiokafka.producer",
        "from random import randint",
        "import random\nx = random.random()",
        "import random\nrandom.shuffle([])",
    ],
)
def test_the_rule_catches(source: str) -> None:
    assert violations(source)


def test_the_rule_allows_injected_rng() -> None:
    assert violations("import random\ndef f(rng: random.Random) -> float:\n    return rng.random()") == []
