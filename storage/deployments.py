"""Persisting and reading deployments: the deploy state machine's durable state and its record.

A ``deployments`` row is one change of one model: of its artifact (``from_version_id`` ->
``to_version_id``) or of its process's configuration (``config_diff``). The row is the state
machine's memory: ``state``, ``step`` (how far inside the state it got, e.g. which switch is
done) and ``state_since_ms`` are written before each move takes effect, so an agent killed
mid-deploy finds where it was and resumes or rolls back. It is also the change record auditors
sample: who asked and when, who approved and when, the gate's evidence (``checks``), the error,
the outcome.

One deployment per model is in flight at a time, enforced by the database itself: a partial
unique index over ``model`` for rows whose ``in_flight`` is 1, so two requests racing through
two connections cannot both start. ``in_flight`` is derived from ``state`` here, from
``DeployState.final``, so the set of final states lives in one place.

Every write here runs on the writer thread in the agent (``Writer.run_task``, as the outbox
does), each in its own short transaction; reads may run anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from storage.records import DeployKind, DeployState, DeployStrategy


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment of one model, as stored and served.

    ``process`` is the supervised process it restarts (None for ``record``); ``rollback_version_id``
    the version it rolled back (or is rolling back) to; ``checks`` the canary gate's evidence
    (the state machine's JSON object: checks passed and failed, canary answers, latencies);
    ``addresses`` the blue and green copies' addresses (``{"blue": "127.0.0.1:8000", ...}``);
    ``incident_id`` the ``deploy_failed`` incident it opened. Times are UTC epoch milliseconds
    of the decisions; ``bake_s`` is the bake window asked for. ``id`` is 0 until stored.
    """

    id: int
    model: str
    kind: DeployKind
    strategy: DeployStrategy
    state: DeployState
    requested_by: str
    requested_ms: int
    state_since_ms: int
    step: str = ""
    process: str | None = None
    from_version_id: int | None = None
    to_version_id: int | None = None
    rollback_version_id: int | None = None
    approval_required: bool = False
    approved_by: str | None = None
    approved_ms: int | None = None
    finished_ms: int | None = None
    bake_s: float = 0.0
    checks: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    config_diff: str = ""
    pipeline_id: str | None = None
    git_sha: str | None = None
    notes: str = ""
    addresses: Mapping[str, str] = field(default_factory=dict)
    incident_id: int | None = None

    @property
    def in_flight(self) -> bool:
        """True until the deployment reaches a final state."""
        return not self.state.final

    def moved(
        self, state: DeployState, at_ms: int, *, step: str = "", **changes: Any
    ) -> Deployment:
        """This deployment in ``state`` since ``at_ms`` (finished then, if ``state`` is final),
        with ``changes`` applied: the record the state machine saves before acting."""
        finished = at_ms if state.final else self.finished_ms
        return dataclasses.replace(
            self,
            state=state,
            state_since_ms=at_ms,
            step=step,
            finished_ms=finished,
            **changes,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        out = dataclasses.asdict(self)
        out["kind"] = str(self.kind)
        out["strategy"] = str(self.strategy)
        out["state"] = str(self.state)
        out["checks"] = dict(self.checks)
        out["addresses"] = dict(self.addresses)
        out["in_flight"] = self.in_flight
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deployment:
        """Rebuild from :meth:`to_json` output."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["kind"] = DeployKind(data["kind"])
        kwargs["strategy"] = DeployStrategy(data["strategy"])
        kwargs["state"] = DeployState(data["state"])
        kwargs["checks"] = dict(data.get("checks") or {})
        kwargs["addresses"] = dict(data.get("addresses") or {})
        return cls(**kwargs)


class DeployInFlight(RuntimeError):
    """A model already has a deployment in flight; ``deployment`` is that one."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(
            f"model {deployment.model!r} already has deployment {deployment.id} in flight "
            f"(state {deployment.state}, requested by {deployment.requested_by or 'unknown'}); "
            "wait for it to finish, or roll it back"
        )
        self.deployment = deployment


class DeployStateChanged(RuntimeError):
    """An update expected the deployment in one state and found it in another (someone else
    moved it: a second approver, an agent resuming); ``current`` is the row as it is now."""

    def __init__(self, current: Deployment, expected: Collection[DeployState]) -> None:
        want = " or ".join(sorted(str(s) for s in expected))
        super().__init__(
            f"deployment {current.id} is {current.state}, not {want}; it changed meanwhile"
        )
        self.current = current
        self.expected = tuple(expected)


def create_table(conn: sqlite3.Connection) -> None:
    """The ``deployments`` table (migration ``0008_deploys``)."""
    conn.execute("""
        CREATE TABLE deployments (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            kind TEXT NOT NULL,
            strategy TEXT NOT NULL,
            state TEXT NOT NULL,
            in_flight INTEGER NOT NULL,
            step TEXT NOT NULL DEFAULT '',
            state_since_ms INTEGER NOT NULL,
            process TEXT,
            from_version_id INTEGER REFERENCES versions (id),
            to_version_id INTEGER REFERENCES versions (id),
            rollback_version_id INTEGER REFERENCES versions (id),
            requested_by TEXT NOT NULL,
            requested_ms INTEGER NOT NULL,
            approval_required INTEGER NOT NULL DEFAULT 0,
            approved_by TEXT,
            approved_ms INTEGER,
            finished_ms INTEGER,
            bake_s REAL NOT NULL DEFAULT 0,
            checks TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            config_diff TEXT NOT NULL DEFAULT '',
            pipeline_id TEXT,
            git_sha TEXT,
            notes TEXT NOT NULL DEFAULT '',
            addresses TEXT NOT NULL DEFAULT '{}',
            incident_id INTEGER
        )""")
    conn.execute(
        "CREATE UNIQUE INDEX deployments_one_in_flight ON deployments (model) WHERE in_flight = 1"
    )
    conn.execute("CREATE INDEX deployments_model ON deployments (model, requested_ms)")
    conn.execute("CREATE INDEX deployments_requested ON deployments (requested_ms)")


_MUTABLE = (
    "state",
    "in_flight",
    "step",
    "state_since_ms",
    "process",
    "from_version_id",
    "to_version_id",
    "rollback_version_id",
    "approval_required",
    "approved_by",
    "approved_ms",
    "finished_ms",
    "bake_s",
    "checks",
    "error",
    "config_diff",
    "pipeline_id",
    "git_sha",
    "notes",
    "addresses",
    "incident_id",
)
_FIXED = ("model", "kind", "strategy", "requested_by", "requested_ms")
_COLUMNS = ", ".join(("id", *_FIXED, *_MUTABLE))


def _values(dep: Deployment) -> dict[str, object]:
    return {
        "model": dep.model,
        "kind": str(dep.kind),
        "strategy": str(dep.strategy),
        "requested_by": dep.requested_by,
        "requested_ms": dep.requested_ms,
        "state": str(dep.state),
        "in_flight": int(dep.in_flight),
        "step": dep.step,
        "state_since_ms": dep.state_since_ms,
        "process": dep.process,
        "from_version_id": dep.from_version_id,
        "to_version_id": dep.to_version_id,
        "rollback_version_id": dep.rollback_version_id,
        "approval_required": int(dep.approval_required),
        "approved_by": dep.approved_by,
        "approved_ms": dep.approved_ms,
        "finished_ms": dep.finished_ms,
        "bake_s": float(dep.bake_s),
        "checks": json.dumps(dict(dep.checks), sort_keys=True, default=str),
        "error": dep.error,
        "config_diff": dep.config_diff,
        "pipeline_id": dep.pipeline_id,
        "git_sha": dep.git_sha,
        "notes": dep.notes,
        "addresses": json.dumps(dict(dep.addresses), sort_keys=True),
        "incident_id": dep.incident_id,
    }


def insert_deployment(conn: sqlite3.Connection, dep: Deployment) -> Deployment:
    """Store a new deployment (its ``id`` is ignored) and return it with its id.

    Raises:
        DeployInFlight: ``dep`` is in flight and the model already has one in flight.
    """
    values = _values(dep)
    names = [*_FIXED, *_MUTABLE]
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            f"INSERT INTO deployments ({', '.join(names)}) "  # noqa: S608 - fixed columns
            f"VALUES ({', '.join('?' * len(names))})",
            [values[n] for n in names],
        )
        conn.execute("COMMIT")
    except sqlite3.IntegrityError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        active = active_deployment(conn, dep.model) if dep.in_flight else None
        if active is not None:
            raise DeployInFlight(active) from None
        raise
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    stored = get_deployment(conn, int(cur.lastrowid or 0))
    assert stored is not None
    return stored


def update_deployment(
    conn: sqlite3.Connection,
    dep: Deployment,
    *,
    expect_state: DeployState | Collection[DeployState] | None = None,
) -> Deployment:
    """Write ``dep``'s mutable fields (not its model, kind, strategy or request) over its row.

    With ``expect_state``, only if the row is still in that state (or one of those states):
    a compare-and-set, so two approvers, or an operator's rollback racing the bake, cannot both
    move the same deployment.

    Raises:
        DeployStateChanged: the row is in another state than ``expect_state``.
        DeployInFlight: ``dep`` would put a second deployment of its model in flight.
        LookupError: there is no deployment ``dep.id``.
    """
    values = _values(dep)
    assignments = ", ".join(f"{n} = ?" for n in _MUTABLE)
    sql = f"UPDATE deployments SET {assignments} WHERE id = ?"  # noqa: S608 - fixed columns
    args: list[object] = [values[n] for n in _MUTABLE]
    args.append(dep.id)
    expected: tuple[DeployState, ...] = ()
    if expect_state is not None:
        expected = (expect_state,) if isinstance(expect_state, DeployState) else tuple(expect_state)
        sql += f" AND state IN ({', '.join('?' * len(expected))})"
        args.extend(str(s) for s in expected)
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(sql, args)
        conn.execute("COMMIT")
    except sqlite3.IntegrityError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        active = active_deployment(conn, dep.model)
        if active is not None and active.id != dep.id:
            raise DeployInFlight(active) from None
        raise
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    current = get_deployment(conn, dep.id)
    if current is None:
        raise LookupError(f"no deployment with id {dep.id}")
    if cur.rowcount == 0:
        raise DeployStateChanged(current, expected)
    return current


def get_deployment(conn: sqlite3.Connection, deployment_id: int) -> Deployment | None:
    """One deployment by id."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM deployments WHERE id = ?",  # noqa: S608 - fixed columns
        (deployment_id,),
    ).fetchone()
    return None if row is None else _row(row)


def active_deployment(conn: sqlite3.Connection, model: str) -> Deployment | None:
    """The model's deployment in flight, if any (there is at most one)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM deployments WHERE model = ? AND in_flight = 1",  # noqa: S608
        (model,),
    ).fetchone()
    return None if row is None else _row(row)


def in_flight(conn: sqlite3.Connection) -> list[Deployment]:
    """Every deployment in flight, oldest first: what a starting agent resumes or rolls back."""
    sql = f"SELECT {_COLUMNS} FROM deployments WHERE in_flight = 1 ORDER BY requested_ms, id"  # noqa: S608
    return [_row(r) for r in conn.execute(sql)]


def list_deployments(
    conn: sqlite3.Connection,
    *,
    model: str | None = None,
    states: Collection[DeployState] = (),
    since_ms: int | None = None,
    limit: int = 100,
) -> list[Deployment]:
    """Deployments newest requested first, optionally of one model, in some states, or
    requested since ``since_ms``."""
    sql = f"SELECT {_COLUMNS} FROM deployments WHERE 1=1"  # noqa: S608 - fixed columns
    args: list[object] = []
    if model is not None:
        sql += " AND model = ?"
        args.append(model)
    if states:
        sql += f" AND state IN ({', '.join('?' * len(states))})"
        args.extend(str(s) for s in states)
    if since_ms is not None:
        sql += " AND requested_ms >= ?"
        args.append(since_ms)
    sql += " ORDER BY requested_ms DESC, id DESC LIMIT ?"
    args.append(limit)
    return [_row(r) for r in conn.execute(sql, args)]


def current_version_id(conn: sqlite3.Connection, model: str) -> int | None:
    """The version the model was last left running by a finished artifact deployment: the new
    version of a promoted one, the version a rolled-back one returned to (None if none did)."""
    row = conn.execute(
        "SELECT state, to_version_id, rollback_version_id, from_version_id FROM deployments "
        "WHERE model = ? AND kind = ? AND state IN (?, ?) "
        "ORDER BY finished_ms DESC, id DESC LIMIT 1",
        (model, str(DeployKind.ARTIFACT), str(DeployState.PROMOTED), str(DeployState.ROLLED_BACK)),
    ).fetchone()
    if row is None:
        return None
    state, to_id, rollback_id, from_id = row
    if state == DeployState.PROMOTED:
        return None if to_id is None else int(to_id)
    back = rollback_id if rollback_id is not None else from_id
    return None if back is None else int(back)


def _row(row: tuple[Any, ...]) -> Deployment:
    v = dict(zip(("id", *_FIXED, *_MUTABLE), row, strict=True))
    return Deployment(
        id=int(v["id"]),
        model=str(v["model"]),
        kind=DeployKind(v["kind"]),
        strategy=DeployStrategy(v["strategy"]),
        state=DeployState(v["state"]),
        requested_by=str(v["requested_by"]),
        requested_ms=int(v["requested_ms"]),
        state_since_ms=int(v["state_since_ms"]),
        step=str(v["step"]),
        process=v["process"],
        from_version_id=v["from_version_id"],
        to_version_id=v["to_version_id"],
        rollback_version_id=v["rollback_version_id"],
        approval_required=bool(v["approval_required"]),
        approved_by=v["approved_by"],
        approved_ms=v["approved_ms"],
        finished_ms=v["finished_ms"],
        bake_s=float(v["bake_s"]),
        checks=json.loads(v["checks"] or "{}"),
        error=v["error"],
        config_diff=str(v["config_diff"]),
        pipeline_id=v["pipeline_id"],
        git_sha=v["git_sha"],
        notes=str(v["notes"]),
        addresses=json.loads(v["addresses"] or "{}"),
        incident_id=v["incident_id"],
    )
