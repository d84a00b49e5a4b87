"""Host labels (``region``, ``team``, ``env``, ``gpu``): what they may hold, checked in one place.

An agent's ``[agent] labels`` and a fleet file's per-agent ``labels`` obey the same rules, so
the same label can be exported to Prometheus (``vigil_agent_info``), shown in a terminal and
typed in a filter: names like Prometheus label names (``[a-zA-Z_][a-zA-Z0-9_]*``, not starting
with ``__``, which Prometheus reserves), values printable (no control, line-break or invisible
formatting characters), both bounded, and a bounded number of them. Here, in ``storage``,
because both the agent's config and the TUI's fleet file read them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from storage.text import UNSAFE_IN_NAMES

Labels = tuple[tuple[str, str], ...]
"""Labels as (name, value) pairs, sorted by name: hashable, and one order everywhere."""

MAX_LABELS = 32
MAX_NAME_LEN = 64
MAX_VALUE_LEN = 128

NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_UNSAFE = re.compile(f"[{UNSAFE_IN_NAMES}]")

NAME_EXPECTED = (
    f"a label name of 1-{MAX_NAME_LEN} letters, digits or '_', not starting with a digit "
    "or '__' (as Prometheus label names)"
)
VALUE_EXPECTED = (
    f"a string of 1-{MAX_VALUE_LEN} printable characters (no control characters, line breaks "
    "or invisible formatting characters)"
)
TABLE_EXPECTED = 'a table of label names to strings, such as { region = "eu-west", env = "prod" }'


class LabelError(ValueError):
    """A label that breaks the rules.

    Attributes:
        name: The offending label's name (None: the table as a whole, e.g. too many).
        reason: What was wrong and what was expected.
    """

    def __init__(self, name: str | None, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def name_problem(name: str) -> str | None:
    """Why ``name`` is no label name, or None."""
    if not NAME_RE.fullmatch(name) or len(name) > MAX_NAME_LEN or name.startswith("__"):
        return f"expected {NAME_EXPECTED}, got {name!r}"
    return None


def check_labels(raw: Mapping[str, object], *, allow_empty: bool = False) -> Labels:
    """Validate a labels table as a file gives it.

    Args:
        raw: Label name -> value, as read from TOML.
        allow_empty: Whether ``""`` is a value (the fleet file's way of removing a label the
            agent serves); otherwise an empty value is refused.

    Returns:
        The labels, sorted by name.

    Raises:
        LabelError: naming the label and what was expected.
    """
    if len(raw) > MAX_LABELS:
        raise LabelError(None, f"expected at most {MAX_LABELS} labels, got {len(raw)}")
    out: list[tuple[str, str]] = []
    for name, value in raw.items():
        problem = name_problem(str(name))
        if problem:
            raise LabelError(str(name), problem)
        if not isinstance(value, str):
            raise LabelError(name, f"expected {VALUE_EXPECTED}, got {_kind(value)} {value!r}")
        if (
            (not value and not allow_empty)
            or len(value) > MAX_VALUE_LEN
            or _UNSAFE.search(value)
            or (value and not value.strip())
        ):
            wanted = VALUE_EXPECTED
            if allow_empty:
                wanted += ', or "" to remove the label'
            raise LabelError(name, f"expected {wanted}, got {value!r}")
        out.append((name, value))
    return tuple(sorted(out))


def _kind(value: object) -> str:
    # storage.tomlschema.toml_type's words, without importing msgspec into storage.records.
    kinds = {bool: "a boolean", int: "an integer", float: "a float", list: "an array"}
    return kinds.get(type(value), "a table" if isinstance(value, Mapping) else "a value")


def read_labels(value: object) -> dict[str, str]:
    """Labels from an agent's answer (``status["labels"]``), keeping only what obeys the rules.

    An agent is trusted to have checked its own, but a client must not let a malformed answer
    (a number, a name with an escape sequence) reach a filter or a terminal; an older agent
    has no labels at all.
    """
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, str] = {}
    for name, item in value.items():
        if len(out) >= MAX_LABELS:
            break
        if (
            isinstance(name, str)
            and name_problem(name) is None
            and isinstance(item, str)
            and 0 < len(item) <= MAX_VALUE_LEN
            and not _UNSAFE.search(item)
        ):
            out[name] = item
    return out


def merge_labels(served: Mapping[str, str], given: Labels) -> dict[str, str]:
    """An agent's own labels with the fleet file's over them: the file wins, and its ``""``
    removes the agent's label."""
    merged = dict(served)
    for name, value in given:
        if value:
            merged[name] = value
        else:
            merged.pop(name, None)
    return merged
