"""The tamper-evident audit chain over the ``events`` table.

Each event row stores ``hash = sha256(prev_hash + "\\n" + canonical(row))`` where ``canonical``
is the compact, key-sorted JSON of (seq, ts, kind, subject, message, data). Editing any field,
deleting a row or reordering rows breaks the chain at that row, which :func:`verify_chain`
reports. The first row chains from :data:`GENESIS`.

Retention may remove the oldest events (only when an events horizon is configured). It first
appends an ``audit.pruned`` event naming the last event it removes, then deletes them in small
steps, each recording the last removed event's seq and hash in ``audit_anchor``: the chain
then verifies from that anchor, and the anchor is accepted only while an ``audit.pruned``
event in the chain covers it. Removing rows from the end of the chain (the newest ones) is
only detectable against a head (seq, hash) kept elsewhere: ``vigil audit verify`` prints it,
and ``vigil audit export`` writes the whole chain for offline checks.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

GENESIS = "0" * 64


def canonical(
    seq: int, ts_ms: int, kind: str, subject: str, message: str, data: Mapping[str, Any] | str
) -> str:
    """The exact text an event's hash covers."""
    data_obj = json.loads(data) if isinstance(data, str) else dict(data)
    return json.dumps(
        {
            "seq": seq,
            "ts": ts_ms,
            "kind": kind,
            "subject": subject,
            "message": message,
            "data": data_obj,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def chain_hash(prev_hash: str, content: str) -> str:
    """sha256 of the previous hash and this row's canonical content, hex."""
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of walking the chain: ok, how many rows, and the first broken link if any.

    ``anchor_seq`` is the last event removed by retention (0 when none was), ``head_seq`` and
    ``head_hash`` the newest event verified: keep them, and a later check can prove that no
    event up to there was removed from the end either.
    """

    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str | None = None
    anchor_seq: int = 0
    head_seq: int | None = None
    head_hash: str | None = None


EventRow = tuple[int, int, str, str, str, Any, str, str]
"""(seq, ts, kind, subject, message, data, prev_hash, hash); data as JSON text or a dict."""

PRUNED_KIND = "audit.pruned"


def walk_chain(rows: Iterable[EventRow], anchor: tuple[int, str] | None = None) -> ChainReport:
    """Check a sequence of events, oldest first, starting after ``anchor`` (seq, hash).

    Without an anchor the chain must start at seq 1 from :data:`GENESIS`. With one, the first
    event must follow it, and some ``audit.pruned`` event in the chain must say retention
    removed the events up to the anchor; otherwise the anchor itself could hide a deletion.
    """
    anchor_seq, prev = anchor if anchor is not None else (0, GENESIS)
    expected_seq = anchor_seq + 1
    checked = 0
    attested = anchor is None
    head: tuple[int, str] | None = None
    for seq, ts, kind, subject, message, data, prev_hash, row_hash in rows:
        if seq != expected_seq:
            if seq < expected_seq:
                why = f"event {seq} out of order or repeated (expected {expected_seq})"
            else:
                why = f"missing events {expected_seq}..{seq - 1}"
            return ChainReport(False, checked, seq, why, anchor_seq, *(head or (None, None)))
        if prev_hash != prev:
            return ChainReport(
                False,
                checked,
                seq,
                "prev_hash does not match the previous row",
                anchor_seq,
                *(head or (None, None)),
            )
        if chain_hash(prev, canonical(seq, ts, kind, subject, message, data)) != row_hash:
            return ChainReport(
                False,
                checked,
                seq,
                "content does not match its hash (edited)",
                anchor_seq,
                *(head or (None, None)),
            )
        if not attested and kind == PRUNED_KIND:
            through = _data_obj(data).get("through_seq")
            attested = isinstance(through, int) and through >= anchor_seq
        prev = row_hash
        head = (seq, row_hash)
        expected_seq = seq + 1
        checked += 1
    if not attested:
        return ChainReport(
            False,
            checked,
            anchor_seq + 1,
            f"events 1..{anchor_seq} were removed but no {PRUNED_KIND} event in the chain "
            "records a retention pass that removed them",
            anchor_seq,
            *(head or (None, None)),
        )
    return ChainReport(True, checked, None, None, anchor_seq, *(head or (None, None)))


def _data_obj(data: Mapping[str, Any] | str) -> dict[str, Any]:
    try:
        obj = json.loads(data) if isinstance(data, str) else dict(data)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def read_anchor(conn: sqlite3.Connection) -> tuple[int, str] | None:
    """The retention anchor (seq and hash of the last removed event), or None."""
    try:
        row = conn.execute("SELECT seq, hash FROM audit_anchor WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # a database from before the anchor existed
        return None
    return (int(row[0]), str(row[1])) if row else None


_SELECT = "SELECT seq, ts, kind, subject, message, data, prev_hash, hash FROM events ORDER BY seq"


def verify_chain(conn: sqlite3.Connection) -> ChainReport:
    """Walk every event in order and check each link.

    Returns:
        A report naming the first row whose hash or link does not hold, or whose sequence
        number skips (a removed row), or the retention anchor that nothing attests.
    """
    return walk_chain(conn.execute(_SELECT), read_anchor(conn))


EXPORT_FORMAT = "vigil-audit/1"


def export_chain(conn: sqlite3.Connection, out: TextIO, *, exported_ms: int) -> int:
    """Write the chain as JSON Lines: a header line, then one event per line, oldest first.

    The header is ``{"format", "exported_ms", "anchor": {"seq", "hash"}}``; each event line
    holds ``seq, ts, kind, subject, message, data, prev_hash, hash`` with ``data`` as a JSON
    object. docs/storage.md, "Audit trail", documents how to verify it without Vigil.

    Returns:
        How many events were written.
    """
    # One read transaction: the anchor and the events are one consistent snapshot.
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        anchor = read_anchor(conn) or (0, GENESIS)
        header = {
            "format": EXPORT_FORMAT,
            "exported_ms": exported_ms,
            "anchor": {"seq": anchor[0], "hash": anchor[1]},
        }
        out.write(json.dumps(header, sort_keys=True) + "\n")
        n = 0
        for seq, ts, kind, subject, message, data, prev_hash, row_hash in conn.execute(_SELECT):
            line = {
                "seq": seq,
                "ts": ts,
                "kind": kind,
                "subject": subject,
                "message": message,
                "data": _data_obj(data),
                "prev_hash": prev_hash,
                "hash": row_hash,
            }
            out.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
            n += 1
    finally:
        if own:
            conn.execute("COMMIT")
    return n


class ExportError(ValueError):
    """A file that is not a Vigil audit export."""


def verify_export(lines: Iterable[str]) -> ChainReport:
    """Verify an :func:`export_chain` file (its lines), as an auditor would offline.

    Raises:
        ExportError: the header or a line is not what an export holds.
    """
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, ValueError):
        raise ExportError("the first line is not an export header") from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ExportError(f"not a {EXPORT_FORMAT} export")
    anchor = header.get("anchor") or {}
    start = (int(anchor.get("seq", 0)), str(anchor.get("hash", GENESIS)))

    def rows() -> Iterable[EventRow]:
        for lineno, line in enumerate(it, start=2):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                yield (
                    e["seq"],
                    e["ts"],
                    e["kind"],
                    e["subject"],
                    e["message"],
                    e["data"],
                    e["prev_hash"],
                    e["hash"],
                )
            except (ValueError, KeyError, TypeError):
                raise ExportError(f"line {lineno} is not an exported event") from None

    return walk_chain(rows(), start if start[0] > 0 else None)
