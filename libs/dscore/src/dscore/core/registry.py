"""The message registry: which frozen dataclasses may cross the wire, and how to encode and check them.

A protocol declares each message type with `@message("raft.append")`. On first use the registry reads the
class's type hints once and generates two small functions per class:

- `encode(obj) -> list`: the field values in declaration order, nested messages as nested lists;
- `decode(values) -> obj`: checks arity and the type of every field, then builds the object, so decoding
  untrusted bytes yields only well-typed messages or raises `MalformedError`.

Because decoding is driven by the declared types, nested messages need no tag on the wire. Only places
whose type is dynamic (a field typed `object`, a union of several messages, the envelope's content) carry
the message kind, as a msgpack extension (see `dscore.core.codec`).

Supported field types: int, bool, float, str, bytes, None, enums (encoded by value), `X | None`, unions,
`tuple[X, ...]`, fixed tuples `tuple[X, Y]`, `dict[K, V]`, other registered messages, and `object` (any
msgpack value or registered message; the consumer validates it).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from dscore.core.errors import LocalError, MalformedError, UnknownKindError

Converter = Callable[[Any], Any]
T = TypeVar("T")

_PRIMITIVES: dict[Any, str] = {int: "int", bool: "bool", str: "str", bytes: "bytes"}


@dataclasses.dataclass(slots=True)
class MessageType:
    kind: str
    cls: type
    field_names: tuple[str, ...] = ()
    #: message -> list of plain values (nested messages as lists); filled in by `_compile`
    encode: Callable[[Any], list[Any]] = dataclasses.field(default=lambda obj: [])
    #: tuple of plain values -> message, checking every field; filled in by `_compile`
    decode: Callable[[Any], Any] = dataclasses.field(default=lambda values: None)
    compiled: bool = False


_by_kind: dict[str, MessageType] = {}
_by_class: dict[type, MessageType] = {}
_pending: list[MessageType] = []


def message(kind: str) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a wire message named `kind` (unique, dotted: `protocol.name`)."""

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise LocalError(f"{cls.__name__} must be a dataclass to be a message")
        existing = _by_kind.get(kind)
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise LocalError(f"message kind {kind!r} registered twice")
        entry = MessageType(kind, cls)
        _by_kind[kind] = entry
        _by_class[cls] = entry
        # Compiled lazily: hints may name classes defined later in the same module.
        _pending.append(entry)
        return cls

    return register


def _compile_pending() -> None:
    while _pending:
        _compile(_pending.pop())


def lookup_kind(kind: str) -> MessageType:
    if _pending:
        _compile_pending()
    try:
        return _by_kind[kind]
    except KeyError:
        raise UnknownKindError(f"unknown message kind {kind!r}") from None


def lookup_class(cls: type) -> MessageType | None:
    if _pending:
        _compile_pending()
    return _by_class.get(cls)


def kind_of(content: object) -> str:
    entry = lookup_class(type(content))
    if entry is None:
        raise LocalError(f"{type(content).__name__} is not a registered message")
    return entry.kind


def kind_of_class(cls: type) -> str:
    """The kind a registered message class travels as."""
    entry = lookup_class(cls)
    if entry is None:
        raise LocalError(f"{cls.__name__} is not a registered message")
    return entry.kind


def _bad(kind: str, name: str, expected: str, value: Any) -> typing.NoReturn:
    raise MalformedError(f"{kind}.{name}: expected {expected}, got {type(value).__name__}")


def _compile(entry: MessageType) -> None:
    """Generate `encode` and `decode` for one message class (straight-line code: this is the hot path)."""
    cls = entry.cls
    hints = typing.get_type_hints(cls)
    names = tuple(f.name for f in dataclasses.fields(cls))
    namespace: dict[str, Any] = {"cls": cls, "bad": _bad, "kind": entry.kind, "Malformed": MalformedError}
    enc_items: list[str] = []
    dec_lines: list[str] = []
    for i, name in enumerate(names):
        hint = hints[name]
        var = f"f{i}"
        if hint in _PRIMITIVES:
            enc_items.append(f"o.{name}")
            label = _PRIMITIVES[hint]
            dec_lines.append(f"    if type({var}) is not {label}: bad(kind, {name!r}, {label!r}, {var})")
            namespace.update({"int": int, "bool": bool, "str": str, "bytes": bytes})
            continue
        namespace[f"E{i}"] = _encoder_for(hint)
        namespace[f"C{i}"] = _converter_for(hint, f"{entry.kind}.{name}")
        enc_items.append(f"E{i}(o.{name})")
        dec_lines.append(f"    {var} = C{i}({var})")
    args = ", ".join(f"f{i}" for i in range(len(names)))
    unpack = f"    {args}{',' if len(names) == 1 else ''} = v\n" if names else ""
    setters = _slot_setters(cls, names)
    if setters is not None:
        # Every field is already checked, and the class has no validation of its own: fill the slots
        # directly, which is half the cost of a frozen dataclass's __init__ (one object.__setattr__ per
        # field). Decoding runs per message and per log entry on every replica.
        namespace["new"] = object.__new__
        namespace.update({f"S{i}": setter for i, setter in enumerate(setters)})
        build = "    o = new(cls)\n" + "".join(f"    S{i}(o, f{i})\n" for i in range(len(names)))
        build += "    return o\n"
    else:
        build = (
            "    try:\n"
            f"        return cls({args})\n"
            "    except (TypeError, ValueError) as exc:\n"
            "        raise Malformed(kind + ': ' + str(exc)) from None\n"
        )
    source = (
        "def encode(o):\n"
        f"    return [{', '.join(enc_items)}]\n"
        "def decode(v):\n"
        f"    if type(v) is not tuple or len(v) != {len(names)}:\n"
        f"        raise Malformed(kind + ': expected an array of {len(names)} fields')\n"
        f"{unpack}" + "".join(line + "\n" for line in dec_lines) + build
    )
    exec(compile(source, f"<message {entry.kind}>", "exec"), namespace)
    entry.field_names = names
    entry.encode = namespace["encode"]
    entry.decode = namespace["decode"]
    entry.compiled = True


def _slot_setters(cls: type, names: tuple[str, ...]) -> list[Callable[[Any, Any], None]] | None:
    """The slot setters of a plain slotted dataclass, or None when `cls(...)` must build it (the class
    validates in `__post_init__`, has its own `__init__`, or keeps fields outside slots)."""
    if hasattr(cls, "__post_init__") or "__slots__" not in cls.__dict__:
        return None
    # dataclasses builds its __init__ inside `__create_fn__`; anything else is the class's own.
    code = getattr(cls.__dict__.get("__init__"), "__code__", None)
    if code is None or not code.co_qualname.startswith("__create_fn__"):
        return None
    if any(not field.init for field in dataclasses.fields(cls)):
        return None
    setters = []
    for name in names:
        slot = cls.__dict__.get(name)
        if not isinstance(slot, types.MemberDescriptorType):
            return None
        setters.append(slot.__set__)
    return setters


def _identity(value: Any) -> Any:
    return value


def constructor(cls: type[T]) -> Callable[..., T]:
    """A faster way to build a plain message on a hot path: `constructor(cls)(*all_fields)` fills the
    slots directly, skipping a frozen dataclass's `__init__` (one `object.__setattr__` per field). Every
    field must be given, positionally, with the right type: nothing is checked (use it only for values
    this process builds itself). Falls back to `cls` for a class that validates in `__post_init__`."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    setters = _slot_setters(cls, names)
    if setters is None:
        return cls
    args = ", ".join(f"f{i}" for i in range(len(names)))
    namespace: dict[str, Any] = {"cls": cls, "new": object.__new__}
    namespace.update({f"S{i}": setter for i, setter in enumerate(setters)})
    source = (
        f"def build({args}):\n    o = new(cls)\n"
        + "".join(f"    S{i}(o, f{i})\n" for i in range(len(names)))
        + "    return o\n"
    )
    exec(compile(source, f"<constructor {cls.__qualname__}>", "exec"), namespace)
    built: Callable[..., T] = namespace["build"]
    return built


def _is_message(hint: Any) -> bool:
    return isinstance(hint, type) and hint in _by_class


def _tagged_encoder(value: Any) -> Any:
    """A union of messages travels as `[kind, fields]` (the declared type alone cannot say which)."""
    if value is None:
        return None
    entry = _by_class[type(value)]
    if not entry.compiled:
        _compile(entry)
    return [entry.kind, entry.encode(value)]


def _encoder_for(hint: Any) -> Converter:
    """How a field's value becomes plain msgpack data. Dynamic places (object, unions of messages) are
    left to the codec's `default` hook, which tags them with their kind."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda v: v.value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        target = _by_class.get(hint)
        if target is None:
            raise LocalError(f"field type {hint.__name__} is a dataclass but not a registered message")
        if not target.compiled:
            _compile(target)
        return target.encode
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            inner = _encoder_for(non_none[0])
            if inner is _identity:
                return _identity
            return lambda v: None if v is None else inner(v)
        if all(_is_message(a) for a in non_none):
            return _tagged_encoder
        return _identity
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _encoder_for(args[0])
            if item is _identity:
                return _identity
            return lambda v: [item(x) for x in v]
        items = tuple(_encoder_for(a) for a in args)
        if all(e is _identity for e in items):
            return _identity
        return lambda v: [e(x) for e, x in zip(items, v, strict=True)]
    if origin is dict:
        key_enc, value_enc = (_encoder_for(a) for a in args)
        if key_enc is _identity and value_enc is _identity:
            return _identity
        return lambda v: {key_enc(k): value_enc(x) for k, x in v.items()}
    return _identity


def _fail(where: str, expected: str, value: Any) -> typing.NoReturn:
    raise MalformedError(f"{where}: expected {expected}, got {type(value).__name__}")


def _converter_for(hint: Any, where: str) -> Converter:
    """How a decoded plain value is checked (and, for enums and messages, rebuilt)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        return _identity
    if hint is type(None) or hint is None:
        return lambda v: v if v is None else _fail(where, "nil", v)
    if hint in _PRIMITIVES:
        expected_type = hint
        label = _PRIMITIVES[hint]
        return lambda v: v if type(v) is expected_type else _fail(where, label, v)
    if hint is float:
        return lambda v: float(v) if type(v) in (float, int) else _fail(where, "float", v)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        # A dict lookup instead of calling the Enum class, which is slow (this runs per log entry).
        members: dict[Any, Any] = {member.value: member for member in hint}
        enum_name = hint.__name__

        def to_enum(v: Any) -> Any:
            member = members.get(v) if type(v) in (int, str) else None
            if member is None:
                _fail(where, enum_name, v)
            return member

        return to_enum
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        target = _by_class[hint]
        cls = hint

        def to_message(v: Any) -> Any:
            if type(v) is cls:  # arrived tagged, through a dynamic place
                return v
            if not target.compiled:
                _compile(target)
            return target.decode(v)

        return to_message
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) > 1 and all(_is_message(a) for a in non_none):
            return _tagged_converter(tuple(non_none), type(None) in args, where)
        names = " | ".join(getattr(a, "__name__", str(a)) for a in args)
        if len(non_none) == 1 and type(None) in args:
            # `X | None`, the common case: no exception handling on the hot path (a None is not first
            # tried as an X, which would raise and catch once per field).
            only = non_none[0]
            if only in _PRIMITIVES:
                expected_type = only
                return lambda v: v if v is None or type(v) is expected_type else _fail(where, names, v)
            inner = _converter_for(only, where)
            return lambda v: None if v is None else inner(v)
        options = tuple(_converter_for(a, where) for a in args)

        def to_union(v: Any) -> Any:
            for conv in options:
                try:
                    return conv(v)
                except MalformedError:
                    continue
            _fail(where, names, v)

        return to_union
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _converter_for(args[0], where)
            if args[0] in _PRIMITIVES:
                item_type = args[0]

                def to_primitive_tuple(v: Any) -> Any:
                    if type(v) is not tuple:
                        _fail(where, "array", v)
                    for x in v:
                        if type(x) is not item_type:
                            _fail(where, _PRIMITIVES[item_type], x)
                    return v

                return to_primitive_tuple

            def to_var_tuple(v: Any) -> Any:
                if type(v) is not tuple:
                    _fail(where, "array", v)
                return tuple([item(x) for x in v])

            return to_var_tuple
        items = tuple(_converter_for(a, where) for a in args)

        def to_fixed_tuple(v: Any) -> Any:
            if type(v) is not tuple or len(v) != len(items):
                _fail(where, f"array of {len(items)}", v)
            return tuple(conv(x) for conv, x in zip(items, v, strict=True))

        return to_fixed_tuple
    if origin is dict:
        key_conv, value_conv = (_converter_for(a, where) for a in args)

        def to_dict(v: Any) -> Any:
            if type(v) is not dict:
                _fail(where, "map", v)
            return {key_conv(k): value_conv(x) for k, x in v.items()}

        return to_dict
    raise LocalError(f"{where}: unsupported message field type {hint!r}")


def _tagged_converter(classes: tuple[type, ...], optional: bool, where: str) -> Converter:
    allowed = {_by_class[c].kind: _by_class[c] for c in classes}
    names = " | ".join(c.__name__ for c in classes)

    def to_tagged(v: Any) -> Any:
        if v is None and optional:
            return None
        if type(v) in classes:  # arrived as an extension, through a dynamic place
            return v
        if type(v) is not tuple or len(v) != 2:
            _fail(where, f"[kind, fields] of {names}", v)
        target = allowed.get(v[0])
        if target is None:
            _fail(where, names, v[0])
        if not target.compiled:
            _compile(target)
        return target.decode(v[1])

    return to_tagged
