"""The serving-environment fingerprint: what a host serves models with, and its history.

A fingerprint is a map of sections to items to values, all strings::

    {"host": {"kernel": "6.1.0-18-amd64", "cpu.model": "AMD EPYC 7763 64-Core Processor"},
     "gpu": {"driver": "550.54.15", "cuda_driver": "12.4", "device.0": "NVIDIA H100 80GB HBM3"},
     "process:vllm": {"python": "3.11.7", "pkg:torch": "2.4.0", "pkg:vllm": "0.6.3"},
     "model:llama": {"server.version": "0.6.3", "artifact": "sha256:..."}}

The agent collects one now and then (``agent.runtime.environment``); this module holds what is
pure about it (merging a collection with what was known, the changes between two, a compact
hash) and its table. The table keeps the history as one row per item *change*
(``ts, section, item, value``; a NULL value: the item went away), so the current fingerprint is
the newest row of each item, and a host's environment at any past moment can be read back.
Each change is also an audit event (``environment.changed``) listing what changed.

Items a collection could not read this time (a model server that did not answer, a process
that is not running) are *unknown*, not gone: :func:`merge` keeps their last known values, so
a server restarting does not show as its version removed and added again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Fingerprint = Mapping[str, Mapping[str, str]]
"""section -> item -> value. Sections: ``host``, ``gpu``, ``process:<name>``, ``model:<name>``."""

HASH_HEX_CHARS = 16
"""The compact hash's length: 64 bits tell a fleet's few hundred variants apart."""


@dataclass(frozen=True, slots=True)
class EnvChange:
    """One item that changed: ``old`` None means it was added, ``new`` None that it went away."""

    section: str
    item: str
    old: str | None
    new: str | None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (the event's and the API's)."""
        return {"section": self.section, "item": self.item, "old": self.old, "new": self.new}

    def describe(self) -> str:
        """One line: ``process:vllm pkg:torch 2.3.0 -> 2.4.0``."""
        old = "(none)" if self.old is None else self.old
        new = "(none)" if self.new is None else self.new
        return f"{self.section} {self.item} {old} -> {new}"


@dataclass(frozen=True, slots=True)
class Collected:
    """What one collection read, and what it could not read this time.

    ``unknown`` holds ``(section, item prefix)`` pairs: the items of ``section`` whose names
    start with the prefix (``""``: the whole section) keep their last known values.
    """

    sections: Mapping[str, Mapping[str, str]]
    unknown: frozenset[tuple[str, str]] = field(default_factory=frozenset)


def merge(previous: Fingerprint, collected: Collected) -> dict[str, dict[str, str]]:
    """The new fingerprint: what was collected, plus the unknown items' last known values.

    A section neither collected nor unknown is gone (its model or process was removed from
    the config, or its GPU is no longer seen).
    """
    out = {s: dict(items) for s, items in collected.sections.items()}
    for section, prefix in collected.unknown:
        old = previous.get(section)
        if not old:
            continue
        target = out.setdefault(section, {})
        for item, value in old.items():
            if item.startswith(prefix) and item not in target:
                target[item] = value
    return {s: items for s, items in out.items() if items}


def diff(old: Fingerprint, new: Fingerprint) -> list[EnvChange]:
    """Every item added, changed or removed between two fingerprints, by section and item."""
    changes: list[EnvChange] = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for item in sorted(set(a) | set(b)):
            before, after = a.get(item), b.get(item)
            if before != after:
                changes.append(EnvChange(section, item, before, after))
    return changes


def fingerprint_hash(fp: Fingerprint) -> str:
    """A compact hash of the whole fingerprint (``sha256:`` and 16 hex digits): two hosts with
    the same one serve from the same environment, so a fleet view compares one string."""
    canonical = json.dumps(
        {s: dict(sorted(items.items())) for s, items in sorted(fp.items())},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:HASH_HEX_CHARS]


def summary(changes: list[EnvChange], shown: int = 3) -> str:
    """The first few changes on one line, and how many more."""
    text = "; ".join(c.describe() for c in changes[:shown])
    if len(changes) > shown:
        text += f"; and {len(changes) - shown} more"
    return text


# --- the table ------------------------------------------------------------------------------


def create_table(conn: sqlite3.Connection) -> None:
    """The ``environment`` table (migration ``0009_environment``)."""
    conn.execute("""
        CREATE TABLE environment (
            id INTEGER PRIMARY KEY,
            ts INTEGER NOT NULL,
            section TEXT NOT NULL,
            item TEXT NOT NULL,
            value TEXT
        )""")
    conn.execute("CREATE INDEX environment_item ON environment (section, item, id)")
    conn.execute("CREATE INDEX environment_ts ON environment (ts)")


def store(conn: sqlite3.Connection, ts_ms: int, changes: Iterable[EnvChange]) -> int:
    """Record changes observed at ``ts_ms`` (one transaction); returns how many rows."""
    rows = [(ts_ms, c.section, c.item, c.new) for c in changes]
    if not rows:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO environment (ts, section, item, value) VALUES (?, ?, ?, ?)", rows
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(rows)


def current(conn: sqlite3.Connection, at_ms: int | None = None) -> dict[str, dict[str, str]]:
    """The fingerprint as stored: each item's newest value (as of ``at_ms`` when given)."""
    sql = (
        "SELECT section, item, value FROM environment WHERE id IN "
        "(SELECT max(id) FROM environment WHERE ts <= ? GROUP BY section, item)"
    )
    out: dict[str, dict[str, str]] = {}
    until = at_ms if at_ms is not None else 2**62
    for section, item, value in conn.execute(sql, (until,)):
        if value is not None:
            out.setdefault(str(section), {})[str(item)] = str(value)
    return out


def history(conn: sqlite3.Connection, limit: int = 100) -> list[tuple[int, EnvChange]]:
    """The newest ``limit`` item changes, newest first, each with when it was observed (the
    ``old`` value read from the item's row before it)."""
    rows = conn.execute(
        "SELECT e.ts, e.section, e.item, "
        "(SELECT p.value FROM environment p WHERE p.section = e.section AND p.item = e.item "
        " AND p.id < e.id ORDER BY p.id DESC LIMIT 1), e.value "
        "FROM environment e ORDER BY e.id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [(int(ts), EnvChange(str(s), str(i), old, new)) for ts, s, i, old, new in rows]


def last_change(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The newest ``environment.changed`` event as ``{"ts_ms", "message", "changes"}``."""
    row = conn.execute(
        "SELECT ts, message, data FROM events WHERE kind = 'environment.changed' "
        "ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    try:
        data = json.loads(row[2])
    except ValueError:
        data = {}
    return {"ts_ms": int(row[0]), "message": str(row[1]), "changes": data.get("changes", [])}
