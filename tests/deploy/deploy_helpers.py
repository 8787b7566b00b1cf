"""Loading the generators of deploy/ (scripts, not a package) and reading PromQL for metric names."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbook.md"


def load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


#: a metric name in PromQL: a word followed by a selector, a range, or an operator (not a function call)
_NAME = re.compile(r"(?<![\w:])(dscore_[a-z0-9_]+|up\b|[a-z_]+:dscore_[a-z0-9_]+:[a-z0-9_]+)(?!\s*\()")
_SELECTOR = re.compile(r"(?<![\w:])(dscore_[a-z0-9_]+|up\b)\s*(\{[^}]*\})?")
#: a quoted string: label values and regexes, not names
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def metric_names(expr: str) -> set[str]:
    """Every metric or recording-rule name an expression reads; histogram suffixes are stripped."""
    names = set()
    for name in _NAME.findall(_QUOTED.sub('""', expr)):
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and not name.endswith("_total"):
                name = name[: -len(suffix)]
        names.add(name)
    return names


def raw_selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, its {...} or '') for every raw metric (not a recording rule) the expression reads."""
    # quoted strings are blanked (same length) so that names inside label values are not read
    blanked = _QUOTED.sub(lambda m: '"' + " " * (len(m.group(0)) - 2) + '"', expr)
    return [
        (m.group(1), expr[m.start(2) : m.end(2)] if m.group(2) else "") for m in _SELECTOR.finditer(blanked)
    ]


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {github_anchor(line[3:]) for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
