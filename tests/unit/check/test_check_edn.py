"""The EDN reader and writer: values, round trips, and errors that name their line."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscore.check.edn import EdnValue, Keyword, Symbol, Tagged, dumps, iter_forms, loads
from dscore.check.errors import EdnSyntaxError, HistoryError


def test_reads_a_jepsen_op_map() -> None:
    value = loads("{:process 0, :type :invoke, :f :write, :value 3, :time 12345}")
    assert value == {
        Keyword("process"): 0,
        Keyword("type"): Keyword("invoke"),
        Keyword("f"): Keyword("write"),
        Keyword("value"): 3,
        Keyword("time"): 12345,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nil", None),
        ("true", True),
        ("false", False),
        ("42", 42),
        ("-7", -7),
        ("+7", 7),
        ("123456789012345678901234567890N", 123456789012345678901234567890),
        ("1.5", 1.5),
        ("-2.5e3", -2500.0),
        ("1e2", 100.0),
        ("3.25M", 3.25),
        ("##Inf", math.inf),
        ("##-Inf", -math.inf),
        ('"plain"', "plain"),
        (r'"tab\there \"quoted\" back\\slash \u00e9 nl\n"', 'tab\there "quoted" back\\slash \u00e9 nl\n'),
        ('"multi\nline"', "multi\nline"),
        (":ns/kw", Keyword("ns/kw")),
        ("sym/bol", Symbol("sym/bol")),
        ("-", Symbol("-")),
        ("[1 [2 3] ()]", (1, (2, 3), ())),
        ("(1, 2, 3)", (1, 2, 3)),
        ("#{1 2}", frozenset({1, 2})),
        ("{}", {}),
        ("{[1 2] :pair}", {(1, 2): Keyword("pair")}),
        ("\\a", "a"),
        ("\\newline", "\n"),
        ("\\u0041", "A"),
        ('#inst "2024-01-01"', Tagged("inst", "2024-01-01")),
        ("[1 #_ 2 3]", (1, 3)),
        ("[1 ; comment\n 2]", (1, 2)),
    ],
)
def test_reads_values(text: str, expected: EdnValue) -> None:
    value = loads(text)
    assert value == expected
    assert type(value) is type(expected)


def test_nan_reads_as_nan() -> None:
    value = loads("##NaN")
    assert isinstance(value, float)
    assert math.isnan(value)


def test_iter_forms_reports_the_line_of_each_form() -> None:
    text = '{:a 1}\n\n{:b\n 2}\n ; comment\n{:c "x\ny"} {:d 4}\n'
    assert [line for _, line in iter_forms(text)] == [1, 3, 6, 7]  # the string spans a line break


def test_unwrap_top_level_yields_elements_with_their_lines() -> None:
    forms = list(iter_forms("[{:a 1}\n {:b 2}\n]", unwrap_top_level=True))
    assert forms == [({Keyword("a"): 1}, 1), ({Keyword("b"): 2}, 2)]


def test_unwrapped_collection_must_be_the_only_form() -> None:
    with pytest.raises(EdnSyntaxError) as caught:
        list(iter_forms("[{:a 1}]\n{:b 2}", unwrap_top_level=True))
    assert caught.value.line == 2


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("{:a 1", 1, "unterminated '{'"),
        ("[1 2\n 3", 1, "unterminated '['"),
        ("{:a 1}\n{:b}", 2, "even number"),
        ('"abc', 1, "unterminated string"),
        ('\n\n"bad \\q escape"', 3, "unsupported string escape"),
        ("(1 2]", 1, "unexpected ']'"),
        ("1\n}", 2, "unexpected '}'"),
        ("1/2", 1, "unexpected character"),
        ("{:a 1 :a 2}", 1, "duplicate key"),
        ("{{} 1}", 1, "unhashable"),
        ("#_", 1, "unterminated discard"),
        ("", 1, "no EDN form"),
        ("1 2", 1, "more than one"),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(EdnSyntaxError) as caught:
        loads(text)
    assert caught.value.line == line
    assert fragment in str(caught.value)
    assert isinstance(caught.value, HistoryError)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "nil"),
        (True, "true"),
        (3, "3"),
        (-0.5, "-0.5"),
        (math.inf, "##Inf"),
        ('a"b\\c\n\x01', r'"a\"b\\c\n\u0001"'),
        (Keyword("ok"), ":ok"),
        ((1, "x", (None,)), '[1 "x" [nil]]'),
        ({Keyword("k"): [1, 2]}, "{:k [1 2]}"),
        (frozenset({2, 1}), "#{1 2}"),
        (Symbol("foo"), "foo"),
        (Tagged("inst", "2024"), '#inst "2024"'),
    ],
)
def test_dumps(value: EdnValue, text: str) -> None:
    assert dumps(value) == text


def test_dumps_rejects_other_python_objects() -> None:
    with pytest.raises(TypeError):
        dumps(object())  # type: ignore[arg-type]


_names = st.from_regex(r"[a-z][a-z0-9\-?!*./]{0,8}", fullmatch=True).filter(
    lambda name: name not in ("nil", "true", "false") and not name.endswith("/")
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    _names.map(Keyword),
)
_hashable = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8)
_values = st.recursive(
    _hashable,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(_hashable, inner, max_size=4),
        st.frozensets(_hashable, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_round_trip(value: EdnValue) -> None:
    text = dumps(value)
    again = loads(text)
    # dumps is type-exact (1, 1.0 and true differ), so equal texts mean equal EDN values.
    assert dumps(again) == text
    assert again == value
