"""The tamper-evident audit chain over the ``events`` table.

Each event row stores ``hash = sha256(prev_hash + "\\n" + canonical(row))`` where ``canonical``
is the compact, key-sorted JSON of (seq, ts, kind, subject, message, data). Editing any field,
deleting a row or reordering rows breaks the chain at that row, which :func:`verify_chain`
reports. The first row chains from :data:`GENESIS`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    """Result of walking the chain: ok, how many rows, and the first broken link if any."""

    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str | None = None


def verify_chain(conn: sqlite3.Connection) -> ChainReport:
    """Walk every event in order and check each link.

    Returns:
        A report naming the first row whose hash or link does not hold, or whose sequence
        number skips (a removed row).
    """
    prev = GENESIS
    expected_seq: int | None = None
    checked = 0
    rows = conn.execute(
        "SELECT seq, ts, kind, subject, message, data, prev_hash, hash FROM events ORDER BY seq"
    )
    for seq, ts, kind, subject, message, data, prev_hash, row_hash in rows:
        if expected_seq is not None and seq != expected_seq:
            return ChainReport(False, checked, seq, f"missing events {expected_seq}..{seq - 1}")
        if prev_hash != prev:
            return ChainReport(False, checked, seq, "prev_hash does not match the previous row")
        if chain_hash(prev, canonical(seq, ts, kind, subject, message, data)) != row_hash:
            return ChainReport(False, checked, seq, "content does not match its hash (edited)")
        prev = row_hash
        expected_seq = seq + 1
        checked += 1
    return ChainReport(True, checked)
