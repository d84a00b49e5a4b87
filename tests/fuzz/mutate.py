"""One-field mutations of a valid document, and a TOML writer to put the result in a file.

A document is what ``tomllib`` or ``json`` reads: dicts, lists and scalars. :func:`mutate` takes
a valid one (a config, a fleet file, a request body), picks one place in it and does one thing
there: vary it within its type (the input mostly stays valid, so the checks after parsing
run), put a value at the edge of its type there (out of range, NaN, a huge duration, control
characters, an empty or very long string) or one of another type, drop it, add an unknown key
beside it, or duplicate it. The seed's structure is kept everywhere else, so a refusal is a
check doing its job, not the parser rejecting noise."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
from typing import Any

from hypothesis import strategies as st

from storage.units import UNITS_S, parse_duration

Path = tuple[str | int, ...]

CONTROL = ["\x00", "\x1b[2J", "\x07", "\n", "\r\n", "\t", "\x7f", "\x85", "\u2028", "\u202e"]
"""Characters a name or a message must not carry into a terminal, a log line or HTML."""
INVISIBLE = ["\u200b", "\ufeff", "\u00ad"]

BAD_DURATIONS = [
    "0s",
    "0ms",
    "-1s",
    "-5m",
    "99999999999999999999999y",
    "1e400s",
    "1e3s",
    "inf s",
    "nans",
    "1.5h",
    "",
    " 5s",
    "5 s",
    "5S",
    "1h30",
    "ms",
    "1_000s",
    "\u0661s",  # ARABIC-INDIC DIGIT ONE: str.isdigit() says yes, int() says no
    "\u00b2s",  # SUPERSCRIPT TWO: isdigit() and int() disagree here too
    "101y",
    "36525d",
    "3155760001s",
]
BIG_INTS = [-1, 0, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 10**30, 10**400]
ODD_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, 5e-324, -1e308, 0.5, 1.0000001]
LONG = "a" * 100_000
DEEP = "\x00deep\x00"
"""Stands for arrays nested 3,000 deep in a JSON document (:func:`json_bytes`): JSON that
``json.loads`` reads only up to its recursion limit, and code walking it recursively less."""
NUMERIC_TEXT = [
    "-1",
    "0",
    "-0",
    "1e9",
    "0x10",
    "NaN",
    "inf",
    " 7 ",
    "1_000",
    "99999999999999999999",  # over SQLite's 64-bit integers
    "9" * 5000,  # over int()'s 4,300-digit limit
    "\u00b2",  # SUPERSCRIPT TWO: str.isdigit() but not int()
    "\u0661\u0662",  # ARABIC-INDIC digits: isdigit() and int() agree, ASCII parsers do not
]
"""Numbers as text (query parameters, header values): the edges of what a parser reads."""


def durations() -> st.SearchStrategy[str]:
    """Durations a config takes (``"90s"``, ``"1h30m"``), from 1 ms to a few years."""
    part = st.tuples(st.integers(1, 500), st.sampled_from(sorted(UNITS_S)))
    return st.lists(part, min_size=1, max_size=2, unique_by=lambda p: p[1]).map(
        lambda parts: "".join(f"{n}{u}" for n, u in parts)
    )


def hostile_text() -> st.SearchStrategy[str]:
    """Strings a field must refuse or carry as data: empty, blank, very long, control and
    invisible characters, path and markup tricks."""
    spiked = st.tuples(
        st.text(max_size=8), st.sampled_from(CONTROL + INVISIBLE), st.text(max_size=8)
    ).map("".join)
    return st.one_of(
        st.sampled_from(
            ["", " ", "\t", "\x00", LONG, "../../etc/passwd", "/", "~", "~nobody-here/x", "-rf"]
        ),
        st.sampled_from(["[red]x", "<b>x</b>", "a{99999999999}", "(" * 2000, "[" * 2000, "%s"]),
        st.sampled_from(BAD_DURATIONS),
        st.sampled_from(NUMERIC_TEXT),
        spiked,
        st.text(max_size=30),
    )


def _datetimes() -> st.SearchStrategy[Any]:
    return st.sampled_from(
        [dt.datetime(1979, 5, 27, 7, 32, tzinfo=dt.UTC), dt.date(1979, 5, 27), dt.time(7, 32)]
    )


def hostile_value(toml: bool = True) -> st.SearchStrategy[Any]:
    """Any value of any type a field did not ask for, or the edge of the type it asked for."""
    scalars = st.one_of(
        st.booleans(),
        st.sampled_from(BIG_INTS),
        st.integers(-1000, 1000),
        st.sampled_from(ODD_FLOATS),
        st.floats(allow_nan=True, allow_infinity=True),
        hostile_text(),
        _datetimes() if toml else st.sampled_from([None, DEEP]),
    )
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(st.text(max_size=6), scalars, max_size=2),
    )


def edge(value: Any, toml: bool = True) -> st.SearchStrategy[Any]:
    """A value of ``value``'s own type at the edge of what the type holds: a hostile string for
    a string, a huge, negative or zero number for a number, NaN and infinities for a float, an
    empty or hostile list, a table with a hostile entry."""
    if isinstance(value, bool):
        return st.sampled_from([0, 1, "true"])
    if isinstance(value, int):
        return st.sampled_from(BIG_INTS)
    if isinstance(value, float):
        return st.sampled_from(ODD_FLOATS)
    if isinstance(value, str):
        return hostile_text()
    if isinstance(value, list):
        return st.one_of(
            st.just([]),
            st.just([LONG] * 3),
            st.lists(hostile_value(toml), min_size=1, max_size=3),
            st.just(value * 50),
        )
    if isinstance(value, dict):
        return st.dictionaries(st.text(max_size=8), hostile_value(toml), max_size=2).map(
            lambda extra: {**value, **extra}
        )
    return hostile_value(toml)


def _is_duration(value: str) -> bool:
    try:
        return parse_duration(value) > 0
    except ValueError:
        return False


def vary(value: Any) -> st.SearchStrategy[Any]:
    """Another value of ``value``'s own kind, mostly one a field of that kind takes."""
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, int):
        return st.one_of(st.integers(max(0, value - 3), value + 3), st.integers(0, 10_000))
    if isinstance(value, float):
        return st.one_of(
            st.floats(0.0, 2 * abs(value) + 1, allow_nan=False), st.just(round(value, 3))
        )
    if isinstance(value, str):
        if _is_duration(value):
            return durations()
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            return st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
        return st.one_of(st.just(value + "x"), st.text(min_size=1, max_size=20))
    if isinstance(value, list):
        return st.just(value[::-1])
    return st.just(value)


def paths(doc: Any, at: Path = ()) -> list[Path]:
    """Every place in ``doc`` (each table, array, element and value), depth first."""
    out: list[Path] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append((*at, key))
            out.extend(paths(value, (*at, key)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.append((*at, i))
            out.extend(paths(value, (*at, i)))
    return out


def _get(doc: Any, path: Path) -> Any:
    for step in path:
        doc = doc[step]
    return doc


MUTATIONS = (
    "vary",
    "vary",
    "edge",
    "edge",
    "wrong_type",
    "drop",
    "unknown_key",
    "empty",
    "duplicate",
    "none",
)
"""What is done at the chosen place, each as often as it is listed."""


@st.composite
def mutate(draw: st.DrawFn, seed: Any, toml: bool = True) -> tuple[str, Any]:
    """``seed`` with one mutation; returns its name (``edge:model.0.interval``) and the
    mutated copy. ``toml`` allows TOML's date and time values (JSON has null instead)."""
    doc = copy.deepcopy(seed)
    where = paths(doc)
    kind = draw(st.sampled_from(MUTATIONS))
    if kind == "none" or not where:
        return "none", doc
    path = draw(st.sampled_from(where))
    parent, last = _get(doc, path[:-1]), path[-1]
    value = parent[last]
    label = f"{kind}:{'.'.join(map(str, path))}"
    if kind == "vary":
        parent[last] = draw(vary(value))
    elif kind == "edge":
        parent[last] = draw(edge(value, toml))
    elif kind == "wrong_type":
        parent[last] = draw(hostile_value(toml))
    elif kind == "drop":
        del parent[last]
    elif kind == "unknown_key":
        table = value if isinstance(value, dict) else parent if isinstance(parent, dict) else None
        if table is None:
            return "none", doc
        known = sorted(map(str, table)) or ["key"]
        name = draw(
            st.one_of(
                st.sampled_from(known).map(lambda k: k + "s"),  # a typo of a known key
                st.text(min_size=1, max_size=12),
            )
        )
        table.setdefault(name, draw(hostile_value(toml)))
    elif kind == "empty":
        parent[last] = {} if isinstance(value, dict) else [] if isinstance(value, list) else ""
    elif kind == "duplicate":
        if isinstance(parent, list):
            parent.append(copy.deepcopy(value))
        else:
            parent[last] = [value, copy.deepcopy(value)]
    return label, doc


# --- TOML -------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}


def toml_string(text: str) -> str:
    """A TOML basic string holding ``text`` exactly (control characters escaped)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """One value, inline (tables as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dump_toml(doc: dict[str, Any]) -> str:
    """A document as TOML: top-level values, then ``[table]`` and ``[[array]]`` sections whose
    own nested tables are written inline."""
    lines = [
        f"{toml_key(k)} = {toml_value(v)}"
        for k, v in doc.items()
        if not isinstance(v, dict) and not _is_array_of_tables(v)
    ]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"\n[{toml_key(key)}]")
            lines += [f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()]
        elif _is_array_of_tables(value):
            for table in value:
                lines.append(f"\n[[{toml_key(key)}]]")
                lines += [f"{toml_key(str(k))} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- JSON -------------------------------------------------------------------------------------


def json_text(doc: Any) -> str:
    """A document as JSON text: NaN and infinities as Python writes them (``NaN``,
    ``Infinity``: what a sloppy server sends), :data:`DEEP` as 3,000 nested arrays."""
    return json.dumps(doc, allow_nan=True).replace(json.dumps(DEEP), "[" * 3000 + "]" * 3000)


def json_bytes(doc: Any) -> bytes:
    """:func:`json_text` as UTF-8."""
    return json_text(doc).encode("utf-8")
