"""The artifact hash cache: one row per file whose content hash is known.

A row says "the file at ``path``, while it has this size, mtime, inode and ctime, hashes to
``hash``", so a 100 GB model directory is re-read only where a file changed. All four stat
fields are in the key because each catches a change the others can miss: an in-place edit that
keeps the size (mtime), a file replaced by a rename (inode), an mtime set back with ``touch -d``
or ``rsync -t`` after a rewrite (ctime, which no user call can set). The hasher decides what may
be cached (``agent.deploy.artifacts``); this module only stores and finds rows.

Writes run on the writer thread in the agent (``Writer.run_task``) or on a direct connection in a
command that runs without an agent; reads may run anywhere.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedHash:
    """One file's known content hash and the stat it was read under.

    ``hash`` is ``sha256:<hex>``; ``hashed_ms`` is when it was read.
    """

    path: str
    size_bytes: int
    mtime_ns: int
    inode: int
    ctime_ns: int
    hash: str
    hashed_ms: int

    def matches(self, size_bytes: int, mtime_ns: int, inode: int, ctime_ns: int) -> bool:
        """True when a file with this stat is the file this row was hashed from."""
        return (self.size_bytes, self.mtime_ns, self.inode, self.ctime_ns) == (
            size_bytes,
            mtime_ns,
            inode,
            ctime_ns,
        )


def create_table(conn: sqlite3.Connection) -> None:
    """The ``artifact_hash_cache`` table (migration ``0008_deploys``)."""
    conn.execute("""
        CREATE TABLE artifact_hash_cache (
            path TEXT PRIMARY KEY,
            size_bytes INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            ctime_ns INTEGER NOT NULL,
            hash TEXT NOT NULL,
            hashed_ms INTEGER NOT NULL
        )""")


_COLUMNS = "path, size_bytes, mtime_ns, inode, ctime_ns, hash, hashed_ms"

_LOOKUP_CHUNK = 500
"""Paths per query: well under SQLite's bound-parameter limit (32766, 999 before 3.32)."""


def lookup(conn: sqlite3.Connection, paths: Sequence[str]) -> dict[str, CachedHash]:
    """The cached rows of these absolute paths (a path without a row is absent)."""
    out: dict[str, CachedHash] = {}
    for i in range(0, len(paths), _LOOKUP_CHUNK):
        chunk = paths[i : i + _LOOKUP_CHUNK]
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT {_COLUMNS} FROM artifact_hash_cache WHERE path IN ({marks})"  # noqa: S608 - fixed columns, placeholders only
        for row in conn.execute(sql, chunk):
            out[str(row[0])] = CachedHash(
                path=str(row[0]),
                size_bytes=int(row[1]),
                mtime_ns=int(row[2]),
                inode=int(row[3]),
                ctime_ns=int(row[4]),
                hash=str(row[5]),
                hashed_ms=int(row[6]),
            )
    return out


def store(conn: sqlite3.Connection, entries: Iterable[CachedHash]) -> int:
    """Insert or replace rows (one transaction); returns how many were written."""
    rows = [
        (e.path, e.size_bytes, e.mtime_ns, e.inode, e.ctime_ns, e.hash, e.hashed_ms)
        for e in entries
    ]
    if not rows:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            f"INSERT OR REPLACE INTO artifact_hash_cache ({_COLUMNS}) "  # noqa: S608 - fixed columns
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(rows)


def paths(conn: sqlite3.Connection) -> list[str]:
    """Every cached path (housekeeping stats them to forget the files that are gone)."""
    return [str(r[0]) for r in conn.execute("SELECT path FROM artifact_hash_cache ORDER BY path")]


def forget(conn: sqlite3.Connection, gone: Sequence[str]) -> int:
    """Delete the rows of these paths (one transaction); returns how many were deleted."""
    if not gone:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.executemany(
            "DELETE FROM artifact_hash_cache WHERE path = ?", [(p,) for p in gone]
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return cur.rowcount
