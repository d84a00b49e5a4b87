"""Opening the database, and its named, recorded, transactional migrations.

Every connection is WAL with ``synchronous=NORMAL``: a crash can lose the last transactions but
never corrupt the file, which is the right trade for metrics. Schema changes are plain functions
applied in order inside one transaction each and recorded in ``_migrations``, so a database made
by any older Vigil is brought up to date on open.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

DB_FILENAME = "vigil.db"

Migration = Callable[["sqlite_utils.Database"], None]


def _m0001_initial(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            labels TEXT NOT NULL DEFAULT '{}',
            UNIQUE (name, labels)
        )""")
    # WITHOUT ROWID with (series_id, ts) as the key: the samples are stored clustered by
    # series and time, which is exactly how range queries read them, and no rowid is paid for.
    db.execute("""
        CREATE TABLE samples (
            series_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (series_id, ts)
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE probe_runs (
            id INTEGER PRIMARY KEY,
            ts INTEGER NOT NULL,
            model TEXT NOT NULL,
            ok INTEGER NOT NULL,
            category TEXT NOT NULL,
            status INTEGER,
            error TEXT,
            ttft_ms REAL,
            itl_ms REAL,
            e2e_ms REAL,
            output_tokens INTEGER,
            tokens_per_s REAL,
            phases TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("CREATE INDEX probe_runs_model_ts ON probe_runs (model, ts)")
    # The audit trail: append-only; each row carries the sha256 of its own canonical content
    # chained to the previous row's hash (see storage.audit).
    db.execute("""
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            ts INTEGER NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            message TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX events_ts ON events (ts)")
    db.execute("CREATE INDEX events_kind ON events (kind, ts)")


def _m0002_incidents(db: sqlite_utils.Database) -> None:
    # Mutable rows (acknowledged, resolved later); every change is also an audit event, so the
    # history of an incident lives in the chain even though this row is updated in place.
    db.execute("""
        CREATE TABLE incidents (
            id INTEGER PRIMARY KEY,
            subject TEXT NOT NULL,
            kind TEXT NOT NULL,
            severity TEXT NOT NULL,
            cause TEXT NOT NULL,
            state TEXT NOT NULL,
            opened_ms INTEGER NOT NULL,
            acknowledged_ms INTEGER,
            acknowledged_by TEXT,
            resolved_ms INTEGER,
            resolved_by TEXT,
            ttr_ms INTEGER,
            root_id INTEGER REFERENCES incidents (id),
            evidence TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("CREATE INDEX incidents_state ON incidents (state, opened_ms)")
    db.execute("CREATE INDEX incidents_subject ON incidents (subject, opened_ms)")


def _m0003_sample_tiers(db: sqlite_utils.Database) -> None:
    # Raw samples move from one row each (about 30 bytes with the key) to compressed blocks
    # of one series (see storage.samples and storage.codec), with the newest samples of each
    # series in a small head table until a block's worth is collected; plus rollup tiers.
    from storage.samples import BLOCK_SAMPLES, write_blocks

    conn = db.conn
    conn.execute("""
        CREATE TABLE samples_head (
            series_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (series_id, ts)
        ) WITHOUT ROWID""")
    # A rowid table, unlike the others: its rows are blobs of up to a page, and SQLite's
    # WITHOUT ROWID b-trees suit rows under about 1/20 of a page (larger ones spill into
    # mostly empty overflow pages), while rowid tables fill their pages when appended to.
    conn.execute("""
        CREATE TABLE sample_blocks (
            id INTEGER PRIMARY KEY,
            series_id INTEGER NOT NULL,
            start_ts INTEGER NOT NULL,
            end_ts INTEGER NOT NULL,
            n INTEGER NOT NULL,
            data BLOB NOT NULL
        )""")
    conn.execute("CREATE UNIQUE INDEX sample_blocks_key ON sample_blocks (series_id, start_ts)")
    for table in ("samples_1m", "samples_1h"):
        conn.execute(f"""
            CREATE TABLE {table} (
                series_id INTEGER NOT NULL,
                ts INTEGER NOT NULL,
                count INTEGER NOT NULL,
                sum REAL NOT NULL,
                min REAL NOT NULL,
                max REAL NOT NULL,
                PRIMARY KEY (series_id, ts)
            ) WITHOUT ROWID""")
    conn.execute(
        "INSERT INTO samples_1m (series_id, ts, count, sum, min, max) "
        "SELECT series_id, ts - ts % 60000, count(*), sum(value), min(value), max(value) "
        "FROM samples GROUP BY series_id, ts - ts % 60000"
    )
    conn.execute(
        "INSERT INTO samples_1h (series_id, ts, count, sum, min, max) "
        "SELECT series_id, ts - ts % 3600000, sum(count), sum(sum), min(min), max(max) "
        "FROM samples_1m GROUP BY series_id, ts - ts % 3600000"
    )
    for (sid,) in conn.execute("SELECT DISTINCT series_id FROM samples").fetchall():
        cur = conn.execute("SELECT ts, value FROM samples WHERE series_id = ? ORDER BY ts", (sid,))
        while rows := cur.fetchmany(16 * BLOCK_SAMPLES):
            write_blocks(conn, sid, [r[0] for r in rows], [r[1] for r in rows])
    conn.execute("DROP TABLE samples")


def _m0004_audit_anchor(db: sqlite_utils.Database) -> None:
    # When retention removes the oldest events, the last removed one's seq and hash stay
    # here, so the chain still verifies from its first kept row (see storage.audit).
    db.execute("""
        CREATE TABLE audit_anchor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            ts INTEGER NOT NULL
        )""")


def _m0005_observed_times(db: sqlite_utils.Database) -> None:
    # When a run's outcome was observed and whether it fell in a planned start; when an
    # incident's fault began (its time to detect and recover are measured from there).
    db.execute("ALTER TABLE probe_runs ADD COLUMN end_ts INTEGER")
    db.execute("ALTER TABLE probe_runs ADD COLUMN planned INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE incidents ADD COLUMN began_ms INTEGER")


def _m0006_alerts(db: sqlite_utils.Database) -> None:
    # Alert occurrences (pending -> firing -> resolved) and silences (see storage.alerts).
    from storage.alerts import create_tables

    create_tables(db.conn)


def _m0007_outbox(db: sqlite_utils.Database) -> None:
    # Notifications are written here before they are sent (see storage.outbox).
    from storage.outbox import create_table

    create_table(db.conn)


def _m0008_deploys(db: sqlite_utils.Database) -> None:
    # Versions and their lineage, deployments (the deploy state machine's durable state) and
    # the artifact hash cache (see storage.versions, storage.deployments, storage.hashcache).
    from storage import deployments, hashcache, versions

    hashcache.create_table(db.conn)
    versions.create_table(db.conn)
    deployments.create_table(db.conn)


def _m0009_environment(db: sqlite_utils.Database) -> None:
    # The serving-environment fingerprint's history: one row per item change (see
    # storage.environment).
    from storage import environment

    environment.create_table(db.conn)


def _m0010_remote_write(db: sqlite_utils.Database) -> None:
    # How far each series has been forwarded by remote_write (see storage.forwardcursor).
    from storage.forwardcursor import create_tables

    create_tables(db.conn)


MIGRATIONS: tuple[tuple[str, Migration], ...] = (
    ("0001_initial", _m0001_initial),
    ("0002_incidents", _m0002_incidents),
    ("0003_sample_tiers", _m0003_sample_tiers),
    ("0004_audit_anchor", _m0004_audit_anchor),
    ("0005_observed_times", _m0005_observed_times),
    ("0006_alerts", _m0006_alerts),
    ("0007_outbox", _m0007_outbox),
    ("0008_deploys", _m0008_deploys),
    ("0009_environment", _m0009_environment),
    ("0010_remote_write", _m0010_remote_write),
)
"""Applied in order; a name, once released, never changes meaning."""


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with Vigil's pragmas.

    Args:
        path: the database file (``:memory:`` for tests).
        readonly: open with ``mode=ro`` so a reader can never take the write lock.
    """
    if readonly and str(path) != ":memory:":
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class _MigrationDatabase:
    """What a migration is handed: ``execute`` and ``conn`` directly, the rest of a
    ``sqlite_utils.Database`` (``table.transform()``, ``add_column`` ...) on first use.

    sqlite-utils, with click, dateutil, pluggy and tabulate, costs the agent ~50 modules and
    ~2 MB of RSS that it would keep for its whole life after creating a database; the
    migrations so far need only SQL, so they never load it.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._db: Any = None

    def execute(self, sql: str, parameters: Any = None) -> sqlite3.Cursor:
        """Run one statement on the migration's connection (as ``Database.execute``)."""
        return self.conn.execute(sql) if parameters is None else self.conn.execute(sql, parameters)

    def _database(self) -> Any:
        if self._db is None:
            import sqlite_utils  # deferred: only a migration that asks for more than SQL

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database(), name)

    def __getitem__(self, table: str) -> Any:
        return self._database()[table]


def migrate(
    conn: sqlite3.Connection,
    migrations: tuple[tuple[str, Migration], ...] = MIGRATIONS,
) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied now.

    Each migration and its record commit together, so a crash mid-migration leaves the database
    at the previous version rather than half-changed.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations "
        "(name TEXT PRIMARY KEY, applied_ms INTEGER NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    applied: list[str] = []
    pending = [(name, fn) for name, fn in migrations if name not in done]
    if not pending:
        return applied
    db: Any = _MigrationDatabase(conn)
    for name, fn in pending:
        conn.execute("BEGIN IMMEDIATE")
        try:
            fn(db)
            conn.execute(
                "INSERT INTO _migrations (name, applied_ms) VALUES (?, ?)",
                (name, time.time_ns() // 1_000_000),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def open_database(path: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) and migrate a database; the writer's entry point."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    migrate(conn)
    return conn
