"""Persisting and reading model versions: an artifact's content hash and its lineage.

A ``versions`` row is one artifact (a file or a directory, identified by its content hash) that a
model was given: where it was, how big, how many files, when it was created (the newest file's
mtime), when and by whom it was registered (``actor``, a CI pipeline id, a git sha, free notes),
the version it replaced, whether it proved good (``known_good_ms``, set when a deploy of it is
promoted) and the outcome of its last deploy. ``(model, hash)`` is unique: registering the same
content again returns the row already there, so a retried pipeline step makes no duplicate.

Every write here runs on the writer thread in the agent (``Writer.run_task``, as the outbox
does), each in its own short transaction; reads may run anywhere.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from storage.records import ArtifactKind, DeployState


@dataclass(frozen=True, slots=True)
class Version:
    """One version of one model's artifact, with its lineage.

    ``hash`` is ``sha256:<hex>`` (see ``agent.deploy.artifacts``); ``created_ms`` is the newest
    mtime among the artifact's files, ``registered_ms`` when Vigil recorded it. ``id`` is 0
    until the row is stored.
    """

    id: int
    model: str
    hash: str
    path: str
    kind: ArtifactKind
    size_bytes: int
    files: int
    created_ms: int
    registered_ms: int
    actor: str = ""
    pipeline_id: str | None = None
    git_sha: str | None = None
    notes: str = ""
    replaced_version_id: int | None = None
    known_good_ms: int | None = None
    outcome: DeployState | None = None

    @property
    def known_good(self) -> bool:
        """True once a deploy of this version was promoted (and not since revoked)."""
        return self.known_good_ms is not None

    @property
    def short_hash(self) -> str:
        """The first 12 hex digits, for tables and messages."""
        return self.hash.partition(":")[2][:12] or self.hash[:12]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        out = asdict(self)
        out["kind"] = str(self.kind)
        out["outcome"] = None if self.outcome is None else str(self.outcome)
        out["known_good"] = self.known_good
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Version:
        """Rebuild from :meth:`to_json` output."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["kind"] = ArtifactKind(data["kind"])
        outcome = data.get("outcome")
        kwargs["outcome"] = None if outcome is None else DeployState(outcome)
        return cls(**kwargs)


def create_table(conn: sqlite3.Connection) -> None:
    """The ``versions`` table (migration ``0008_deploys``)."""
    conn.execute("""
        CREATE TABLE versions (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            hash TEXT NOT NULL,
            path TEXT NOT NULL,
            kind TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            files INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            registered_ms INTEGER NOT NULL,
            actor TEXT NOT NULL DEFAULT '',
            pipeline_id TEXT,
            git_sha TEXT,
            notes TEXT NOT NULL DEFAULT '',
            replaced_version_id INTEGER REFERENCES versions (id),
            known_good_ms INTEGER,
            outcome TEXT,
            UNIQUE (model, hash)
        )""")
    conn.execute("CREATE INDEX versions_model ON versions (model, registered_ms)")
    conn.execute("CREATE INDEX versions_known_good ON versions (model, known_good_ms)")


_COLUMNS = (
    "id, model, hash, path, kind, size_bytes, files, created_ms, registered_ms, actor, "
    "pipeline_id, git_sha, notes, replaced_version_id, known_good_ms, outcome"
)


def register_version(conn: sqlite3.Connection, version: Version) -> tuple[Version, bool]:
    """Record a version (its ``id`` is ignored); idempotent on ``(model, hash)``.

    The same content registered again keeps its first lineage (who, when, which pipeline) and
    gets only its ``path`` brought up to date, so a rollback switches to where the content is
    now, not to a copy since deleted.

    Returns:
        The stored row, and True when it was new.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = find_version(conn, version.model, version.hash)
        if old is None:
            cur = conn.execute(
                f"INSERT INTO versions ({_COLUMNS}) "  # noqa: S608 - fixed columns
                "VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    version.model,
                    version.hash,
                    version.path,
                    str(version.kind),
                    version.size_bytes,
                    version.files,
                    version.created_ms,
                    version.registered_ms,
                    version.actor,
                    version.pipeline_id,
                    version.git_sha,
                    version.notes,
                    version.replaced_version_id,
                    version.known_good_ms,
                    None if version.outcome is None else str(version.outcome),
                ),
            )
            vid = int(cur.lastrowid or 0)
        else:
            vid = old.id
            if old.path != version.path:
                conn.execute("UPDATE versions SET path = ? WHERE id = ?", (version.path, vid))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    stored = get_version(conn, vid)
    assert stored is not None
    return stored, old is None


def get_version(conn: sqlite3.Connection, version_id: int) -> Version | None:
    """One version by id."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM versions WHERE id = ?",  # noqa: S608 - fixed columns
        (version_id,),
    ).fetchone()
    return None if row is None else _row(row)


def find_version(conn: sqlite3.Connection, model: str, content_hash: str) -> Version | None:
    """A model's version with this content hash, if registered."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM versions WHERE model = ? AND hash = ?",  # noqa: S608
        (model, content_hash),
    ).fetchone()
    return None if row is None else _row(row)


def list_versions(
    conn: sqlite3.Connection, *, model: str | None = None, limit: int = 100
) -> list[Version]:
    """Versions newest registered first, of one model or of all."""
    sql = f"SELECT {_COLUMNS} FROM versions"  # noqa: S608 - fixed columns
    args: list[object] = []
    if model is not None:
        sql += " WHERE model = ?"
        args.append(model)
    sql += " ORDER BY registered_ms DESC, id DESC LIMIT ?"
    args.append(limit)
    return [_row(r) for r in conn.execute(sql, args)]


def last_known_good(
    conn: sqlite3.Connection, model: str, *, exclude_id: int | None = None
) -> Version | None:
    """The version of ``model`` most recently proved good (promoted), other than
    ``exclude_id`` (the version being rolled back from)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM versions "  # noqa: S608 - fixed columns
        "WHERE model = ? AND known_good_ms IS NOT NULL AND id IS NOT ? "
        "ORDER BY known_good_ms DESC, id DESC LIMIT 1",
        (model, exclude_id),
    ).fetchone()
    return None if row is None else _row(row)


def mark_known_good(conn: sqlite3.Connection, version_id: int, at_ms: int) -> Version:
    """Record that a deploy of this version was promoted: known-good since ``at_ms``."""
    return _update(
        conn,
        version_id,
        "known_good_ms = ?, outcome = ?",
        (at_ms, str(DeployState.PROMOTED)),
    )


def revoke_known_good(conn: sqlite3.Connection, version_id: int) -> Version:
    """Take known-good away (an operator rolled back from it, or found it bad later), so
    :func:`last_known_good` no longer offers it."""
    return _update(conn, version_id, "known_good_ms = NULL", ())


def set_outcome(conn: sqlite3.Connection, version_id: int, outcome: DeployState) -> Version:
    """Record the outcome of this version's latest deploy (known-good is left as it is)."""
    return _update(conn, version_id, "outcome = ?", (str(outcome),))


def _update(
    conn: sqlite3.Connection, version_id: int, assignments: str, args: tuple[object, ...]
) -> Version:
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            f"UPDATE versions SET {assignments} WHERE id = ?",  # noqa: S608 - callers' fixed SQL
            (*args, version_id),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if cur.rowcount == 0:
        raise LookupError(f"no version with id {version_id}")
    stored = get_version(conn, version_id)
    assert stored is not None
    return stored


def _row(row: tuple[Any, ...]) -> Version:
    (
        vid,
        model,
        content_hash,
        path,
        kind,
        size,
        files,
        created,
        registered,
        actor,
        pipeline,
        git_sha,
        notes,
        replaced,
        known_good,
        outcome,
    ) = row
    return Version(
        id=int(vid),
        model=str(model),
        hash=str(content_hash),
        path=str(path),
        kind=ArtifactKind(kind),
        size_bytes=int(size),
        files=int(files),
        created_ms=int(created),
        registered_ms=int(registered),
        actor=str(actor),
        pipeline_id=pipeline,
        git_sha=git_sha,
        notes=str(notes),
        replaced_version_id=None if replaced is None else int(replaced),
        known_good_ms=None if known_good is None else int(known_good),
        outcome=None if outcome is None else DeployState(outcome),
    )
