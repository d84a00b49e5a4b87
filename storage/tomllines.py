"""Where a field of a TOML file is written, and the located error that names it.

tomllib keeps no positions, so :class:`Locator` scans the text for the table header and then
the key: best effort, good for the ordinary layout of one key per line; otherwise the error has
no line, or its table's. Split from :mod:`storage.tomlschema` (which re-exports all of it) to keep
each module to one job.
"""

from __future__ import annotations

import re
from pathlib import Path

Part = str | int
"""One step of a field's path: a key, or an index into an array of tables or a list."""


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
