"""Where the artifact hasher keeps known file hashes: the ``artifact_hash_cache`` table.

In the agent, :class:`WriterHashCache`: lookups on a read-only connection of the hashing thread's
own, rows written by the writer thread (``Writer.run_task``), so the single-writer rule holds and
the hash of a 100 GB directory never waits on, or holds up, the writer's batches. Writes are
fire-and-forget: a row lost to a full disk costs one re-read, not a wrong hash. In a command that
runs without an agent (a benchmark, a pipeline step on another host), :class:`ConnectionHashCache`
reads and writes one connection directly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from storage import hashcache
from storage.db import connect
from storage.hashcache import CachedHash
from storage.writer import Writer


class ConnectionHashCache:
    """The cache on one connection the caller owns (no agent running, or a test)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def lookup(self, paths: Sequence[str]) -> Mapping[str, CachedHash]:
        """The cached rows of these paths."""
        return hashcache.lookup(self.conn, paths)

    def store(self, entries: Sequence[CachedHash]) -> None:
        """Write these rows now."""
        hashcache.store(self.conn, entries)


class WriterHashCache:
    """The cache as the agent uses it: read anywhere, written by the one writer."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def lookup(self, paths: Sequence[str]) -> Mapping[str, CachedHash]:
        """The cached rows of these paths (a fresh read-only connection: this runs on the
        hashing thread, and a connection is cheap next to reading one file)."""
        if str(self.writer.path) != ":memory:" and not Path(self.writer.path).exists():
            return {}
        conn = connect(self.writer.path, readonly=True)
        try:
            return hashcache.lookup(conn, paths)
        except sqlite3.Error:
            return {}  # a cache that cannot be read is a cache miss, never a failed hash
        finally:
            conn.close()

    def store(self, entries: Sequence[CachedHash]) -> None:
        """Queue the rows for the writer thread."""
        rows = list(entries)
        self.writer.run_task(lambda conn: hashcache.store(conn, rows))
