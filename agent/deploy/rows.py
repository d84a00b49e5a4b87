"""What an accepted request writes, in one transaction each, on the writer thread: the version
with its lineage (registered once per model and hash) and the deployment row.

Both run inside :meth:`~agent.deploy.store.DeployStore.write`, so the version the deployment
names and the version it replaced are read and written by the one writer, with nothing between.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.deploy.artifacts import ArtifactDigest
from agent.deploy.support import current_version
from storage import deployments as deps
from storage import versions as vers
from storage.deployments import Deployment
from storage.records import ArtifactKind, DeployKind, DeployState, DeployStrategy
from storage.versions import Version

__all__ = ["Lineage", "insert_record", "insert_request"]


@dataclass(frozen=True, slots=True)
class Lineage:
    """Who deploys (``actor``: ``--actor``, else the operator) and from where."""

    actor: str
    operator: str
    """Who sent the request (``X-Vigil-Operator``)."""
    pipeline_id: str | None = None
    git_sha: str | None = None
    notes: str = ""


def _register(
    conn: sqlite3.Connection,
    model: str,
    content_hash: str,
    digest: ArtifactDigest | None,
    who: Lineage,
    now: int,
    replaced: Version | None,
) -> Version:
    version, _ = vers.register_version(
        conn,
        Version(
            id=0,
            model=model,
            hash=content_hash,
            path=digest.path if digest else "",
            kind=digest.kind if digest else ArtifactKind.FILE,
            size_bytes=digest.size_bytes if digest else 0,
            files=digest.files if digest else 0,
            created_ms=digest.created_ms if digest else now,
            registered_ms=now,
            actor=who.actor,
            pipeline_id=who.pipeline_id,
            git_sha=who.git_sha,
            notes=who.notes,
            replaced_version_id=None if replaced is None else replaced.id,
        ),
    )
    return version


def insert_request(
    conn: sqlite3.Connection,
    *,
    model: str,
    digest: ArtifactDigest,
    who: Lineage,
    strategy: str,
    process: str,
    link: Path,
    previous: Path | None,
    bake_s: float,
    approval: bool,
    rollback: bool,
    now: int,
) -> Deployment:
    """Register the version and store the deployment, ``requested`` (or awaiting approval).

    Raises:
        DeployInFlight: the model has a deployment in flight.
    """
    current = current_version(conn, model, previous)
    version = _register(conn, model, digest.hash, digest, who, now, current)
    return deps.insert_deployment(
        conn,
        Deployment(
            id=0,
            model=model,
            kind=DeployKind.ARTIFACT,
            strategy=DeployStrategy(strategy),
            state=DeployState.AWAITING_APPROVAL if approval else DeployState.REQUESTED,
            requested_by=who.actor,
            requested_ms=now,
            state_since_ms=now,
            process=process,
            from_version_id=None if current is None else current.id,
            to_version_id=version.id,
            approval_required=approval,
            bake_s=bake_s,
            pipeline_id=who.pipeline_id,
            git_sha=who.git_sha,
            notes=who.notes,
            checks={
                "operation": "rollback" if rollback else "deploy",
                "operator": who.operator,
                "link": str(link),
                "target": digest.path,
                "previous_target": None if previous is None else str(previous),
                "hash": digest.hash,
            },
        ),
    )


def insert_record(
    conn: sqlite3.Connection,
    *,
    model: str,
    content_hash: str,
    digest: ArtifactDigest | None,
    who: Lineage,
    now: int,
) -> Deployment:
    """Store a deployment another tool made: promoted, its version known-good.

    Raises:
        DeployInFlight: the model has a deployment in flight.
    """
    current = current_version(conn, model, None)
    version = vers.find_version(conn, model, content_hash)
    if version is None or digest is not None:
        version = _register(conn, model, content_hash, digest, who, now, current)
    vers.mark_known_good(conn, version.id, now)
    return deps.insert_deployment(
        conn,
        Deployment(
            id=0,
            model=model,
            kind=DeployKind.ARTIFACT,
            strategy=DeployStrategy.RECORD,
            state=DeployState.PROMOTED,
            requested_by=who.actor,
            requested_ms=now,
            state_since_ms=now,
            finished_ms=now,
            from_version_id=None if current is None else current.id,
            to_version_id=version.id,
            pipeline_id=who.pipeline_id,
            git_sha=who.git_sha,
            notes=who.notes,
            checks={"operation": "record", "operator": who.operator, "hash": content_hash},
        ),
    )
