"""What the API and the CLI read about deploys: deployments with their versions and live
progress, and a model's versions with which one serves and which are known-good."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage import deployments as deps
from storage import versions as vers
from storage.deployments import Deployment

__all__ = ["deployment_json", "deployments_json", "versions_json"]


def deployment_json(
    conn: sqlite3.Connection, dep: Deployment, progress: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A deployment with the versions it names (``from``, ``to``, ``rollback``) and, while it
    bakes, its progress (canaries seen, ok in a row, when the bake ends)."""
    out = dep.to_json()
    named = {
        "from": dep.from_version_id,
        "to": dep.to_version_id,
        "rollback": dep.rollback_version_id,
    }
    versions: dict[str, Any] = {}
    for role, vid in named.items():
        if vid is not None:
            v = vers.get_version(conn, vid)
            versions[role] = None if v is None else v.to_json()
    out["versions"] = versions
    out["progress"] = progress or {}
    return out


def deployments_json(
    conn: sqlite3.Connection, model: str | None, limit: int
) -> list[dict[str, Any]]:
    """Deployments newest first (of one model, or all), each with its new version's hash."""
    out = []
    for dep in deps.list_deployments(conn, model=model, limit=limit):
        row = dep.to_json()
        v = vers.get_version(conn, dep.to_version_id) if dep.to_version_id is not None else None
        row["version_hash"] = None if v is None else v.hash
        out.append(row)
    return out


def versions_json(conn: sqlite3.Connection, model: str) -> dict[str, Any]:
    """A model's versions, newest first, with the one serving now (the last deployed)."""
    current = deps.current_version_id(conn, model)
    listed = [v.to_json() for v in vers.list_versions(conn, model=model, limit=500)]
    for v in listed:
        v["current"] = v["id"] == current
    return {"model": model, "current_version_id": current, "versions": listed}
