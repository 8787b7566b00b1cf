"""The hand-written EDN histories in tests/data/histories, each with its expected verdict.

Every file states its expectation in comment headers: `; expect: VERDICT`, `; model: NAME`
and, for violations, `; mentions: TEXT` that the explanation must contain (the offending
op, or the key).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dscore.check import Verdict, check_history, read_edn_history
from dscore.check.brute_force import brute_force_linearizable

HISTORIES = Path(__file__).resolve().parents[2] / "data" / "histories"
FILES = sorted(HISTORIES.glob("*.edn"))


def _header(text: str, name: str) -> str | None:
    found = re.search(rf"^; {name}: (.*)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def test_the_edge_cases_are_all_there() -> None:
    names = {path.stem for path in FILES}
    for required in (
        "register_empty",
        "register_concurrent_writes",
        "register_stale_read",
        "register_cas_race",
        "register_info_took_effect",
        "register_info_no_effect",
        "register_fail_ignored",
        "kv_key_form",
        "kv_tuple_form",
        "kv_never_written_nil",
        "kv_never_written_empty",
        "kv_append",
    ):
        assert required in names


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_history_file_has_its_expected_verdict(path: Path) -> None:
    text = path.read_text()
    expected = _header(text, "expect")
    model = _header(text, "model")
    assert expected is not None and model is not None, "every history file states its expectation"
    result = check_history(read_edn_history(path), model)
    assert result.verdict is Verdict[expected], result.explanation
    mentions = _header(text, "mentions")
    if result.verdict is Verdict.NOT_LINEARIZABLE:
        assert mentions is not None, "violations say what the explanation must mention"
        assert mentions in result.explanation
    # The brute-force oracle agrees on every hand-written case.
    assert brute_force_linearizable(read_edn_history(path), model) == (result.verdict is Verdict.LINEARIZABLE)
