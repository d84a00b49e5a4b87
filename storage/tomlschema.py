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
``model[1].timeout: expected a whole number, got a string '5'``. :class:`Locator` (in
:mod:`storage.tomllines`, re-exported here) then finds the line.
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

from storage.tomllines import Invalid, Locator, Part, SchemaError, field_name, syntax_line
from storage.units import EXPECTED as DURATION_EXPECTED
from storage.units import parse_duration

__all__ = [
    "MAX_DURATION_S",
    "Duration",
    "DurationOrZero",
    "Invalid",
    "Locator",
    "Part",
    "SchemaError",
    "decode",
    "expand_home",
    "field_name",
    "number",
    "syntax_line",
]

T = TypeVar("T")

MAX_DURATION_S = 100 * 365 * 86400.0
"""No duration in a Vigil file is longer than a century; anything longer is a typo (and would
overflow ``datetime`` arithmetic in the scheduler)."""

FLOAT_MAX = sys.float_info.max
_TOO_LONG = "expected a duration of at most 100y"


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


def expand_home(value: str) -> Path:
    """A path field's value with ``~`` and ``~user`` expanded, as the file's reader means it.

    Raises:
        ValueError: ``~user`` names no user of this host (``Path.expanduser`` raises a
            RuntimeError there, which used to escape as a traceback instead of a refusal).
    """
    try:
        return Path(value).expanduser()
    except RuntimeError:
        user = value.partition("/")[0]
        raise ValueError(
            f"expected a path; {user!r} names no user of this host, so its home directory is "
            f"unknown, got {value!r}"
        ) from None


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
