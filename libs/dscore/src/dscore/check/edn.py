"""A small EDN reader and writer, enough for Jepsen histories.

Supported: maps `{}`, vectors `[]`, lists `()`, sets `#{}`, keywords, symbols, strings with
escapes (`\\" \\\\ \\n \\t \\r \\b \\f \\/ \\uXXXX`), integers (optionally with the `N`
suffix), floats (`M` suffix read as float), `##Inf`/`##-Inf`/`##NaN`, `nil`, `true`,
`false`, characters (`\\c`, `\\newline`, ... read as one-character strings), comments `;`,
the discard marker `#_`, and tagged literals `#tag value` (kept as `Tagged`). Commas are
whitespace. Ratios and namespaced maps are rejected.

Python mapping: vectors and lists both read as `tuple` (written back as vectors), maps
as `dict`, sets as `frozenset`, keywords as `Keyword`, symbols as `Symbol`.

The reader is a regular-expression tokenizer driving an explicit stack (no recursion), so
a 200k-line history reads in about a second. Errors are `EdnSyntaxError` with the 1-based
line of the offending token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias, Union

from dscore.check.errors import EdnSyntaxError


@dataclass(frozen=True, slots=True, eq=False)
class Keyword:
    """An EDN keyword such as `:invoke`; `name` excludes the colon."""

    name: str

    # Hand-written so dict lookups hash the (cached) str hash instead of building a tuple.
    def __eq__(self, other: object) -> bool:
        return type(other) is Keyword and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name) ^ 0x4B57

    def __str__(self) -> str:
        return ":" + self.name


@dataclass(frozen=True, slots=True)
class Symbol:
    """An EDN symbol other than nil/true/false, e.g. `foo/bar`."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Tagged:
    """A tagged literal `#tag value` whose tag this reader does not interpret."""

    tag: str
    value: EdnValue


EdnValue: TypeAlias = Union[  # noqa: UP007 (a recursive alias needs Union with string parts)
    bool,
    int,
    float,
    str,
    Keyword,
    Symbol,
    Tagged,
    tuple["EdnValue", ...],
    frozenset["EdnValue"],
    dict["EdnValue", "EdnValue"],
    None,
]

_DELIMITER = r"[\s,;()\[\]{}\"]"
_TOKEN_RE = re.compile(
    r"""
    [\s,]*
    (?:
      (;[^\n]*)                                              # 1 comment
    | ("(?:[^"\\]|\\.)*")                                    # 2 string
    | (:[^\s,;()\[\]{}"]+)                                   # 3 keyword
    | ([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[NM]?)(?=DELIM|\Z)  # 4 number
    | ([\[({])                                               # 5 open
    | (\#\{)                                                 # 6 set open
    | ([\])}])                                               # 7 close
    | (\#_)                                                  # 8 discard
    | (\#\#(?:Inf|-Inf|NaN))                                 # 9 symbolic float
    | (\#[A-Za-z][^\s,;()\[\]{}"]*)                          # 10 tag
    | (\\(?:newline|space|tab|return|formfeed|backspace|u[0-9A-Fa-f]{4}|\S))  # 11 char
    | ([^\s,;()\[\]{}"\\\#:\d][^\s,;()\[\]{}"]*)             # 12 symbol
    | (.)                                                    # 13 unexpected
    | (\Z)                                                   # 14 end
    )
    """.replace("DELIM", _DELIMITER),
    re.VERBOSE | re.DOTALL,
)
_COMMENT, _STRING, _KEYWORD, _NUMBER, _OPEN, _SET_OPEN, _CLOSE = 1, 2, 3, 4, 5, 6, 7
_DISCARD, _SYMBOLIC_FLOAT, _TAG, _CHAR, _SYMBOL, _UNEXPECTED, _END = 8, 9, 10, 11, 12, 13, 14

_CLOSER = {"[": "]", "(": ")", "{": "}", "#{": "}"}
_STRING_ESCAPE_RE = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)", re.DOTALL)
_STRING_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/"}
_NAMED_CHARS = {
    "newline": "\n",
    "space": " ",
    "tab": "\t",
    "return": "\r",
    "formfeed": "\f",
    "backspace": "\b",
}
_SYMBOLIC_FLOATS = {"##Inf": math.inf, "##-Inf": -math.inf, "##NaN": math.nan}
_LITERAL_SYMBOLS: dict[str, EdnValue] = {"nil": None, "true": True, "false": False}


class _Frame:
    """An open collection, discard marker or tag waiting for its contents."""

    __slots__ = ("items", "kind", "offset")

    def __init__(self, kind: str, offset: int) -> None:
        self.kind = kind  # "[", "(", "{", "#{", "#_" or a tag such as "#inst"
        self.offset = offset
        self.items: list[EdnValue] = []


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _error(text: str, offset: int, message: str) -> EdnSyntaxError:
    return EdnSyntaxError(message, line=_line_of(text, offset))


def _decode_string(text: str, body: str, offset: int) -> str:
    if "\\" not in body:
        return body

    def replace(match: re.Match[str]) -> str:
        escape = match.group(1)
        if len(escape) == 5 and escape[0] == "u":
            return chr(int(escape[1:], 16))
        decoded = _STRING_ESCAPES.get(escape)
        if decoded is None:
            raise _error(text, offset + match.start(), f"unsupported string escape \\{escape}")
        return decoded

    return _STRING_ESCAPE_RE.sub(replace, body)


def _number(token: str) -> int | float:
    if token[-1] == "N":
        return int(token[:-1])
    if token[-1] == "M":
        return float(token[:-1])
    if "." in token or "e" in token or "E" in token:
        return float(token)
    return int(token)


def _close(text: str, frame: _Frame, closer: str, offset: int) -> EdnValue:
    if _CLOSER.get(frame.kind) != closer:
        if frame.kind in _CLOSER:
            expected = f"'{_CLOSER[frame.kind]}'"
        else:
            expected = f"a form after {frame.kind}"
        raise _error(text, offset, f"unexpected '{closer}', expected {expected}")
    items = frame.items
    if frame.kind == "{":
        if len(items) % 2:
            raise _error(text, frame.offset, "map literal must contain an even number of forms")
        try:
            mapping = dict(zip(items[::2], items[1::2], strict=True))
        except TypeError as exc:
            raise _error(text, frame.offset, f"unhashable map key: {exc}") from None
        if len(mapping) * 2 != len(items):
            raise _error(text, frame.offset, "map literal has a duplicate key")
        return mapping
    if frame.kind == "#{":
        try:
            return frozenset(items)
        except TypeError as exc:
            raise _error(text, frame.offset, f"unhashable set element: {exc}") from None
    return tuple(items)


def iter_forms(text: str, *, unwrap_top_level: bool = False) -> Iterator[tuple[EdnValue, int]]:
    """Yield each top-level form of `text` with the 1-based line where it starts.

    With `unwrap_top_level`, a text consisting of one vector or list yields that
    collection's elements instead (Knossos-style `[{...} {...}]` histories), still with
    the line of each element.
    """
    stack: list[_Frame] = []
    keywords: dict[str, Keyword] = {}  # one Keyword object per distinct keyword in a text
    match = _TOKEN_RE.match
    position = 0
    line = 1
    line_offset = 0  # `line` is the line number of `line_offset`
    wrapper: _Frame | None = None  # the unwrapped top-level collection, while open
    wrapper_closed = False
    seen_top_level = False
    while True:
        token = match(text, position)
        assert token is not None  # the pattern's last alternative matches at end of text
        position = token.end()
        group = token.lastindex
        start = token.start(group) if group is not None else position
        value: EdnValue
        if group == _KEYWORD:
            name = token.group(_KEYWORD)
            keyword = keywords.get(name)
            if keyword is None:
                keyword = keywords[name] = Keyword(name[1:])
            value = keyword
        elif group == _NUMBER:
            value = _number(token.group(_NUMBER))
        elif group == _STRING:
            value = _decode_string(text, token.group(_STRING)[1:-1], start + 1)
        elif group == _SYMBOL:
            name = token.group(_SYMBOL)
            value = _LITERAL_SYMBOLS[name] if name in _LITERAL_SYMBOLS else Symbol(name)
        elif group in (_OPEN, _SET_OPEN):
            opener = token.group(group)
            if (
                unwrap_top_level
                and not stack
                and wrapper is None
                and not seen_top_level
                and opener in ("[", "(")
            ):
                wrapper = _Frame(opener, start)
                seen_top_level = True
                continue
            stack.append(_Frame(opener, start))
            continue
        elif group == _CLOSE:
            closer = token.group(_CLOSE)
            if not stack:
                if wrapper is not None and not wrapper_closed and _CLOSER[wrapper.kind] == closer:
                    wrapper_closed = True
                    continue
                raise _error(text, start, f"unexpected '{closer}' with no open collection")
            frame = stack.pop()
            value = _close(text, frame, closer, start)
            start = frame.offset
        elif group == _COMMENT:
            continue
        elif group == _DISCARD:
            stack.append(_Frame("#_", start))
            continue
        elif group == _TAG:
            stack.append(_Frame(token.group(_TAG), start))
            continue
        elif group == _SYMBOLIC_FLOAT:
            value = _SYMBOLIC_FLOATS[token.group(_SYMBOLIC_FLOAT)]
        elif group == _CHAR:
            name = token.group(_CHAR)[1:]
            if len(name) == 1:
                value = name
            elif name in _NAMED_CHARS:
                value = _NAMED_CHARS[name]
            else:
                value = chr(int(name[1:], 16))
        elif group == _END:
            if stack:
                frame = stack[-1]
                what = "discard" if frame.kind == "#_" else f"'{frame.kind}'"
                raise _error(text, frame.offset, f"unterminated {what}: reached end of input")
            if wrapper is not None and not wrapper_closed:
                raise _error(text, wrapper.offset, f"unterminated '{wrapper.kind}': reached end of input")
            return
        else:
            char = token.group(_UNEXPECTED)
            if char == '"':
                raise _error(text, start, "unterminated string")
            raise _error(text, start, f"unexpected character {char!r}")

        # Deliver the finished value to whatever is waiting for it.
        while stack:
            frame = stack[-1]
            if frame.kind == "#_":
                stack.pop()
                break
            if frame.kind[0] == "#" and frame.kind != "#{":
                stack.pop()
                value = Tagged(frame.kind[1:], value)
                start = frame.offset
                continue
            frame.items.append(value)
            break
        else:
            if wrapper_closed:
                raise _error(text, start, "unexpected form after the top-level collection")
            seen_top_level = True
            line += text.count("\n", line_offset, start)
            line_offset = start
            yield value, line


def loads(text: str) -> EdnValue:
    """Read exactly one EDN form from `text`."""
    forms = iter_forms(text)
    first = next(forms, None)
    if first is None:
        raise EdnSyntaxError("no EDN form in input", line=1)
    second = next(forms, None)
    if second is not None:
        raise EdnSyntaxError("more than one EDN form in input", line=second[1])
    return first[0]


_STRING_TRANSLATION = {
    **{code: f"\\u{code:04x}" for code in range(32)},
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\t"): "\\t",
    ord("\r"): "\\r",
    0x7F: "\\u007f",
}


def dumps(value: EdnValue) -> str:
    """Write `value` as EDN text (vectors for tuples; maps keep insertion order)."""
    kind = type(value)
    if value is None:
        return "nil"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is str:
        assert isinstance(value, str)
        return '"' + value.translate(_STRING_TRANSLATION) + '"'
    if kind is Keyword:
        assert isinstance(value, Keyword)
        return ":" + value.name
    if kind is float:
        assert isinstance(value, float)
        if math.isnan(value):
            return "##NaN"
        if math.isinf(value):
            return "##Inf" if value > 0 else "##-Inf"
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + " ".join(dumps(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dumps(k)} {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, frozenset | set):
        return "#{" + " ".join(sorted(dumps(item) for item in value)) + "}"
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, Tagged):
        return f"#{value.tag} {dumps(value.value)}"
    if isinstance(value, int):  # int subclasses such as IntEnum
        return str(int(value))
    raise TypeError(f"cannot write {type(value).__name__} as EDN: {value!r}")
