"""Typed TOML schemas on msgspec, and one locator that words their errors as file:line:field.

Three parts of Vigil read TOML against a schema and must refuse a bad file the same way: the
agent's config (``agent.config``), the fleet file of ``vigil tui --fleet`` (``tui``) and each
probe's ``[model.canary]`` options (``probes``). The layer contracts let ``tui`` and ``probes``
import only ``storage``, so the shared helpers live here, at the bottom, beside the duration
units they use; they import nothing of the agent, the TUI or the probes.

A schema is a ``msgspec.Struct`` with ``forbid_unknown_fields=True``; the TOML key of a field is
its name (or its ``msgspec.field(name=...)``), its constraints a ``msgspec.Meta``. What a field
expects is said in words by ``Meta(extra={"expected": ...})`` (or derived from its type), so a
msgspec error such as ``Expected `int`, got `str` - at `$.model[1].timeout``` becomes
``model[1].timeout: expected a whole number, got a string '5'``. :class:`Locator` then finds
the line: tomllib keeps no positions, so it scans the text for the table header and the key
(best effort: in the ordinary layout of one key per line it finds it; otherwise the error has
no line, or the table's).
"""

from __future__ import annotations

import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union

import msgspec

from storage.units import EXPECTED as DURATION_EXPECTED
from storage.units import parse_duration

T = TypeVar("T")
Part = str | int
"""One step of a field's path: a key, or an index into an array of tables or a list."""

MAX_DURATION_S = 100 * 365 * 86400.0
"""No duration in a Vigil file is longer than a century; anything longer is a typo (and would
overflow ``datetime`` arithmetic in the scheduler)."""

FLOAT_MAX = sys.float_info.max
_TOO_LONG = "expected a duration of at most 100y"


# --- errors -----------------------------------------------------------------------------------


class SchemaError(Exception):
    """A TOML file was refused: the file, the line when found, the field, and why.

    Attributes:
        path: the file.
        field: dotted path of the offending field (``model[1].interval``), or None.
        line: 1-based line in the file, when it could be located.
        reason: what was wrong and what was expected.
    """

    def __init__(
        self, path: Path | str, reason: str, *, field: str | None = None, line: int | None = None
    ) -> None:
        self.path = Path(path)
        self.field = field
        self.line = line
        self.reason = reason
        where = str(self.path) + (f":{line}" if line else "")
        what = f"{field}: " if field else ""
        super().__init__(f"{where}: {what}{reason}")


class Invalid(ValueError):
    """A value refused by a schema or a check, before its line is known.

    Attributes:
        parts: the path of the field (``("model", 1, "canary", "max_latency")``).
        reason: what was wrong and what was expected.
    """

    def __init__(self, parts: tuple[Part, ...], reason: str) -> None:
        super().__init__(reason)
        self.parts = parts
        self.reason = reason

    @property
    def field(self) -> str:
        """The dotted field name (``model[1].canary.max_latency``)."""
        return field_name(self.parts)


def field_name(parts: tuple[Part, ...]) -> str:
    """``("model", 1, "drift", "ratio")`` -> ``model[1].drift.ratio``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def toml_type(value: object) -> str:
    """A TOML value's type in words (``an integer``), for 'got ...' in messages."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# --- field types ------------------------------------------------------------------------------

if TYPE_CHECKING:
    Duration = float
    DurationOrZero = float
else:
    # Float subclasses reach the decode hook (msgspec knows no such type), which returns the
    # seconds as one; type checkers are told they are plain floats.
    class Duration(float):
        """A positive duration string (``"500ms"``, ``"1h30m"``), decoded to seconds."""

        __slots__ = ()

    class DurationOrZero(float):
        """A duration string of 0s or more, decoded to seconds."""

        __slots__ = ()


def number(
    *, ge: float | None = None, gt: float | None = None, le: float | None = None, **extra: Any
) -> Any:
    """A float field's constraints: finite always (nan and inf are refused), plus bounds.

    TOML has ``nan`` and ``inf``; no setting of Vigil means either, and either would slip past
    a lower bound alone (``inf >= 1``) or every comparison (``nan``).
    """
    bounds: dict[str, Any] = {"le": FLOAT_MAX if le is None else le}
    if gt is not None:
        bounds["gt"] = gt
    else:
        bounds["ge"] = -FLOAT_MAX if ge is None else ge
    return msgspec.Meta(**bounds, extra=extra)


def _dec_hook(kind: type, value: Any) -> Any:
    if kind in (Duration, DurationOrZero):
        if not isinstance(value, str):
            raise TypeError(f"Expected `duration`, got `{type(value).__name__}`")
        seconds = parse_duration(value)  # its ValueError says what was expected
        if kind is Duration and seconds <= 0:
            raise ValueError(f"expected a positive duration, got {value!r}")
        if seconds < 0:
            raise ValueError(f"expected a duration of 0s or more, got {value!r}")
        if seconds > MAX_DURATION_S:
            raise ValueError(f"{_TOO_LONG}, got {value!r}")
        return kind(seconds)
    raise NotImplementedError(kind)


# --- decoding ---------------------------------------------------------------------------------


def decode(raw: Any, schema: type[T], at: tuple[Part, ...] = ()) -> T:
    """Validate ``raw`` (what tomllib read) against ``schema``.

    Args:
        raw: the TOML value (usually a table).
        schema: a Struct type.
        at: where ``raw`` sits in its file (``("model", 1)``), prefixed to error paths.

    Raises:
        Invalid: naming the field's path and what was expected.
    """
    try:
        return msgspec.convert(raw, schema, strict=True, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        parts, reason = _translate(str(exc), raw, schema)
        raise Invalid((*at, *parts), reason) from None


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_CONSTRAINT = re.compile(r"^Expected `[^`]+` (?:matching|>=|<=|>|<|of length|length|that is)")


class _Field:
    """What is known about the field an error points into, found by walking its path."""

    def __init__(self) -> None:
        self.annotation: Any = None
        self.struct: Any = None
        self.inner: list[Part] = []  # steps below the field (an item of a list, a dict key)
        self.inner_value: Any = None


def _translate(message: str, raw: Any, schema: type) -> tuple[tuple[Part, ...], str]:
    m = _AT.match(message)
    assert m is not None  # the pattern matches any text
    msg, path = m.group("msg"), m.group("path") or ""
    steps: list[Part | None] = []
    for key, index in _STEP.findall(path):
        steps.append(key if key else (None if index == "..." else int(index)))

    parts: list[Part] = []
    field = _Field()
    node: Any = schema
    value: Any = raw
    for raw_step in steps:
        step = raw_step
        struct = _struct_of(node)
        if struct is not None and isinstance(step, str):
            field = _Field()
            field.struct = struct
            field.annotation = _annotation_of(struct, step)
            node = field.annotation
            value = value.get(step) if isinstance(value, Mapping) else None
            parts.append(step)
            continue
        if step is None and isinstance(value, Mapping):
            step = _first_bad_key(value, _element_type(node))
        node = _element_type(node)
        value = _child(value, step)
        field.inner.append(step if step is not None else "...")
        field.inner_value = value
    unknown = re.match(r"Object contains unknown field `(.+)`$", msg)
    if unknown:
        struct = _struct_of(node)
        key = unknown.group(1)
        return (*parts, key), _unknown_reason(struct)
    missing = re.match(r"Object missing required field `(.+)`$", msg)
    if missing:
        key = missing.group(1)
        struct = _struct_of(node)
        annotation = _annotation_of(struct, key) if struct is not None else None
        extra = _meta(annotation)[1]
        reason = extra.get("required") or f"missing required field; expected {_what(annotation)}"
        return (*parts, key), reason
    return tuple(parts), _reason(msg, field, value)


def _reason(msg: str, field: _Field, value: Any) -> str:
    bounds, extra = _meta(field.annotation)
    what = _what(field.annotation)
    if msg.startswith(_TOO_LONG):
        return msg  # the century bound, said the same way in every file
    if extra.get("plain"):
        return f"expected {what}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value!r}"
    if field.inner:
        step = field.inner[0]
        which = f"item {step}" if isinstance(step, int) else repr(step)
        return f"expected {what}; {which} is {toml_type(field.inner_value)} {field.inner_value!r}"
    if msg.startswith("Expected `") and ", got `" in msg:
        got = "a boolean" if isinstance(value, bool) else f"{toml_type(value)} {value!r}"
        return f"expected {what}, got {got}"
    if _CONSTRAINT.match(msg):
        bound = extra.get("bound") or extra.get("expected") or _bound(field.annotation, bounds)
        bound = bound or what
        return f"expected {bound}, got {value!r}"
    if msg.startswith("Invalid enum value"):
        return f"expected {what}, got {value!r}"
    return msg


def _unknown_reason(struct: Any) -> str:
    known = ", ".join(sorted(f.encode_name for f in msgspec.structs.fields(struct))) or "no keys"
    template: str = getattr(struct, "unknown_key", "unknown key; expected one of: {known}")
    return template.format(known=known)


def _first_bad_key(value: Mapping[str, Any], element: Any) -> str | None:
    for key, item in value.items():
        try:
            msgspec.convert(item, element, strict=True, dec_hook=_dec_hook)
        except msgspec.ValidationError:
            return str(key)
    return None


def _child(value: Any, step: Part | None) -> Any:
    if isinstance(step, int) and isinstance(value, list) and step < len(value):
        return value[step]
    if isinstance(step, str) and isinstance(value, Mapping):
        return value.get(step)
    return None


def _strip(annotation: Any) -> Any:
    """The type under ``Annotated`` and ``X | None``."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation


def _struct_of(annotation: Any) -> Any:
    bare = _strip(annotation)
    if isinstance(bare, type) and issubclass(bare, msgspec.Struct):
        return bare
    return None


def _element_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(_strip(annotation)) if a is not Ellipsis]
    return args[-1] if args else Any


def _annotation_of(struct: Any, key: str) -> Any:
    for f in msgspec.structs.fields(struct):
        if f.encode_name == key:
            return typing.get_type_hints(struct, include_extras=True).get(f.name, f.type)
    return None


def _meta(annotation: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The constraints and the ``extra`` of a field's ``Meta``s (also under ``| None``)."""
    bounds: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    pending = [annotation]
    while pending:
        current = pending.pop()
        if typing.get_origin(current) is Annotated:
            base, *metas = typing.get_args(current)
            for meta in metas:
                if isinstance(meta, msgspec.Meta):
                    for name in ("ge", "gt", "le", "lt", "pattern", "min_length"):
                        if getattr(meta, name) is not None:
                            bounds[name] = getattr(meta, name)
                    extra.update(meta.extra or {})
            pending.append(base)
        elif typing.get_origin(current) in (Union, types.UnionType):
            pending.extend(typing.get_args(current))
    return bounds, extra


def _what(annotation: Any) -> str:
    """What a field expects, in words."""
    extra = _meta(annotation)[1]
    if "expected" in extra:
        return str(extra["expected"])
    bare = _strip(annotation)
    origin = typing.get_origin(bare)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(bare))
    if bare in (Duration, DurationOrZero):
        return DURATION_EXPECTED
    element = _plural(_element_type(bare))
    if origin in (tuple, list):
        return f"a list of {element}" if element else "an array"
    if origin is dict:
        return f"a table of {element}" if element else "a table"
    words = {str: "a string", bool: "true or false", int: "a whole number", float: "a number"}
    if bare in words:
        return words[bare]
    return "a table"


def _plural(annotation: Any) -> str:
    bare = _strip(annotation)
    return {str: "strings", int: "whole numbers", float: "numbers"}.get(bare, "")


def _bound(annotation: Any, bounds: dict[str, Any]) -> str | None:
    bare = _strip(annotation)
    if bounds.get("min_length"):
        return f"a non-empty {_what(annotation)[2:]}"
    low = bounds.get("ge")
    high = bounds.get("le")
    if high == FLOAT_MAX:
        high = None
    if low == -FLOAT_MAX:
        low = None
    if bare is int:
        if low is not None and high is not None:
            return f"a whole number from {low} to {high}"
        return f"a whole number of {low} or more" if low is not None else None
    if bare is float:
        if "gt" in bounds:
            return f"a number greater than {bounds['gt']:g}"
        if low is not None and high is not None:
            return f"a number between {low:g} and {high:g}"
        if low is not None:
            return f"a number of at least {low:g}"
    return None


# --- lines ------------------------------------------------------------------------------------


class Locator:
    """Finds the line of a field in the TOML text, and builds the located error.

    ``line_of(("model", 1, "canary", "max_latency"))`` looks for the second ``[[model]]``
    header, then ``max_latency =`` inside ``[model.canary]`` (or the ``canary = {...}`` line);
    a key that is not written (a missing required field) points at its table's header.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?")

    def __init__(self, text: str, path: Path | str) -> None:
        self.lines = text.splitlines()
        self.path = Path(path)

    def error(
        self, invalid: Invalid, kind: type[SchemaError] = SchemaError, *, line: bool = True
    ) -> SchemaError:
        """The :class:`SchemaError` (or subclass ``kind``) for ``invalid``, with its line."""
        return kind(
            self.path,
            invalid.reason,
            field=invalid.field or None,
            line=self.line_of(invalid.parts) if line else None,
        )

    def line_of(self, parts: tuple[Part, ...]) -> int | None:
        """1-based line of the field at ``parts``, or of its table, or None."""
        if not parts:
            return None
        table = str(parts[0])
        index = parts[1] if len(parts) > 1 and isinstance(parts[1], int) else None
        keys = [p for p in parts[1:] if isinstance(p, str)]
        start = self._table_start(table, index)
        if start is None:
            return self._top_level(table) if index is None and not keys else None
        if not keys:
            return start + 1
        if len(keys) == 1:
            return self._key_in(table, start, keys[0]) or start + 1
        inner = self._key_in_sub(table, start, keys[0], keys[1])
        return inner or self._key_in(table, start, keys[0]) or start + 1

    @staticmethod
    def _key_re(key: str) -> re.Pattern[str]:
        return re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")

    def _key_in(self, table: str, start: int, key: str) -> int | None:
        key_re = self._key_re(key)
        sub_re = re.compile(rf"^\s*\[\s*{re.escape(table)}\.{re.escape(key)}\s*\]")
        for i in range(start + 1, len(self.lines)):
            line = self.lines[i]
            m = self._HEADER.match(line)
            if m and not m.group(2).startswith(table + "."):
                break
            if key_re.match(line) or sub_re.match(line):
                return i + 1
        return None

    def _key_in_sub(self, table: str, start: int, sub: str, key: str) -> int | None:
        key_re = self._key_re(key)
        inside = False
        for i in range(start + 1, len(self.lines)):
            line = self.lines[i]
            m = self._HEADER.match(line)
            if m:
                if m.group(2) == f"{table}.{sub}":
                    inside = True
                    continue
                if not m.group(2).startswith(table + "."):
                    break
                inside = False
            if inside and key_re.match(line):
                return i + 1
        return None

    def _table_start(self, table: str, index: int | None) -> int | None:
        seen = -1
        for i, line in enumerate(self.lines):
            m = self._HEADER.match(line)
            if not m or m.group(2) != table:
                continue
            if index is None:
                return i
            seen += 1
            if seen == index:
                return i
        return None

    def _top_level(self, key: str) -> int | None:
        # The key's assignment, not the first line that merely mentions it (a comment, a value).
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.]")
        for i, line in enumerate(self.lines):
            if self._HEADER.match(line):
                return None  # top-level keys come before the first table
            if key_re.match(line):
                return i + 1
        return None


def syntax_line(exc: Exception) -> int | None:
    """The line of a ``tomllib.TOMLDecodeError`` (its message says ``line N``)."""
    lineno = getattr(exc, "lineno", None)
    if lineno:
        return int(lineno)
    m = re.search(r"line (\d+)", str(exc))
    return int(m.group(1)) if m else None
