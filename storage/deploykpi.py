"""The deployment KPIs, the DORA four keys, computed in one place for reports, ``/metrics`` and
the API.

:func:`deploy_kpis` is a pure function over deployment rows, the versions they name and the
incidents about their models: no clock, no I/O, so the tests give it rows with known times and
check exact figures. :func:`load_kpis` reads what it needs from a database and calls it.
docs/kpi.md defines every figure for users; in short, over a window ``[since_ms, until_ms]``:

- A **change** is a deployment whose operation is ``deploy``, ``record`` or ``config`` (a
  config deploy is a change like an artifact deploy and counts with them; the count of each kind
  is kept beside). An operator's ``vigil rollback`` (operation ``rollback``) is the remedy for a
  failed change, not a change: it counts in none of the four keys, only as the restore of the
  change it undid. ``cancelled`` deployments changed nothing and count nowhere; refused ones were
  never stored. A change is *finished in the window* when its ``finished_ms`` is in it, and
  only those count.
- **Deployment frequency**: promoted changes finished in the window / the window in days.
- **Lead time for changes**: for each promoted *artifact* change whose version has a creation
  time, ``finished_ms`` (promoted) - the version's ``created_ms`` (the newest file's mtime when
  it was hashed). A version recorded by hash alone (no files: ``path`` empty) has no creation
  time, nor has a config change, and one created after it was promoted (a clock or an mtime
  from the future) is no creation time either: left out. Median and p90, linear interpolation.
- **Change-failure rate**: failed changes / finished changes. Failed: ended ``rolled_back`` or
  ``failed``; or promoted, and then an unplanned incident about the model or its process (not a
  ``deploy_failed``, not in maintenance) began inside its bake (``bake_started_ms`` to
  ``finished_ms``); or promoted and then undone by an operator's rollback *away from its
  version* (the rollback's ``from_version_id`` is its ``to_version_id``, requested by the
  window's end, with no other change of the model promoted between them).
- **Time to restore**: per failed change restored by the window's end, from the failure to
  service restored: rolled back, ``checks.failed_ms`` -> ``checks.restored_ms``; ``failed``
  (after the switch: the rollback could not run or did not come up), ``failed_ms`` -> the
  ``finished_ms`` of the model's next promoted deployment; an incident in the bake, its
  ``began_ms`` -> ``resolved_ms``; undone by a rollback, the rollback's ``requested_ms`` -> its
  ``finished_ms`` (promoted). A change that ``failed`` before it switched anything degraded
  nothing: it counts as failed, with no time to restore. Median.

Each figure is given per model and for the host (all models pooled: the median of all lead
times, not a median of medians).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from storage import deployments as deps
from storage import versions as vers
from storage.deployments import Deployment
from storage.incidents import list_incidents
from storage.records import DeployKind, DeployState, DeployStrategy, Incident
from storage.report_events import began_of, maintenance_of
from storage.stats import percentile
from storage.versions import Version

__all__ = [
    "CHANGES",
    "DeployKpiRow",
    "DeployKpis",
    "DoraKeys",
    "deploy_kpis",
    "load_kpis",
    "operation_of",
]

DAY_MS = 86_400_000
S = DeployState
CHANGES = frozenset({"deploy", "record", "config"})
"""The operations that are changes (``rollback`` is a remedy)."""
FINISHED = frozenset({S.PROMOTED, S.ROLLED_BACK, S.FAILED})
"""The final states of a change that changed something (``cancelled`` did not)."""
NOT_A_FAULT = frozenset({"deploy_failed"})
"""Incident kinds that are no fault of a later deploy: an earlier deploy's failure."""


@dataclass(frozen=True, slots=True)
class DeployKpiRow:
    """One deployment as the KPIs see it (the report's deploy list).

    ``change_failed`` is None for what is not a finished change (a rollback, a cancelled or
    unfinished deploy); ``failure`` says why a failed change counts as failed; ``failed_ms`` and
    ``restored_ms`` bound its time to restore (``restored_ms`` None: not restored by the
    window's end, or it never degraded anything).
    """

    id: int
    model: str
    operation: str
    strategy: str
    state: str
    requested_by: str
    requested_ms: int
    approved_by: str | None
    approved_ms: int | None
    finished_ms: int | None
    version_id: int | None
    version_hash: str | None
    created_ms: int | None
    lead_time_ms: int | None
    change_failed: bool | None
    failure: str | None
    failed_ms: int | None
    restored_ms: int | None
    time_to_restore_ms: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DoraKeys:
    """The four keys over one window, for one model (``model``) or the host (``model`` None).

    ``changes`` are finished changes (promoted + rolled back + failed), of which ``promoted``,
    ``failed_changes``, ``artifact_changes`` and ``config_changes``; ``cancelled`` and
    ``rollbacks`` (operators' rollbacks finished in the window) are counted apart.
    ``restored`` failed changes have a time to restore, ``not_restored`` are still waiting at
    the window's end (a change that failed before switching is in neither).
    """

    model: str | None
    changes: int
    promoted: int
    failed_changes: int
    artifact_changes: int
    config_changes: int
    cancelled: int
    rollbacks: int
    per_day: float
    lead_times: int
    lead_time_median_ms: float | None
    lead_time_p90_ms: float | None
    change_failure_rate: float | None
    restored: int
    not_restored: int
    time_to_restore_median_ms: float | None


@dataclass(frozen=True, slots=True)
class DeployKpis:
    """The keys per model and for the host, and the window's deployments: those finished in
    it and those in flight at its end."""

    since_ms: int
    until_ms: int
    host: DoraKeys
    models: tuple[DoraKeys, ...]
    rows: tuple[DeployKpiRow, ...]


def operation_of(dep: Deployment) -> str:
    """``deploy``, ``rollback``, ``record`` or ``config``: what the deployment was asked to do."""
    if dep.kind == DeployKind.CONFIG:
        return "config"
    op = dep.checks.get("operation")
    if op in ("deploy", "rollback", "record"):
        return str(op)
    return "record" if dep.strategy == DeployStrategy.RECORD else "deploy"


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def deploy_kpis(
    deployments: Iterable[Deployment],
    versions: Mapping[int, Version],
    incidents: Iterable[Incident] = (),
    *,
    since_ms: int,
    until_ms: int,
) -> DeployKpis:
    """The four keys over ``[since_ms, until_ms]`` (see the module docstring).

    Args:
        deployments: every deployment that may matter: those finished in the window, and the
            later ones of the same models up to ``until_ms`` (a rollback that undid a change,
            the promotion that restored a failed one). Others are ignored.
        versions: the versions the deployments name, by id.
        incidents: incidents about the models and their processes.
    """
    if since_ms > until_ms:
        raise ValueError("since_ms must not be after until_ms")
    known = sorted(
        (d for d in deployments if d.requested_ms <= until_ms),
        key=lambda d: (d.finished_ms if d.finished_ms is not None else d.requested_ms, d.id),
    )
    by_model: dict[str, list[Deployment]] = defaultdict(list)
    for d in known:
        by_model[d.model].append(d)
    faults = [i for i in incidents if i.kind not in NOT_A_FAULT and maintenance_of(i) is None]
    rows: list[DeployKpiRow] = []
    for _, history in sorted(by_model.items()):
        for d in history:
            if _in_window(d, since_ms, until_ms):
                rows.append(_row(d, history, versions, faults, until_ms))
    rows.sort(key=lambda r: (r.requested_ms, r.id))
    models = tuple(
        _keys(name, [r for r in rows if r.model == name], since_ms, until_ms)
        for name in sorted({r.model for r in rows})
    )
    return DeployKpis(
        since_ms=since_ms,
        until_ms=until_ms,
        host=_keys(None, rows, since_ms, until_ms),
        models=models,
        rows=tuple(rows),
    )


def _in_window(d: Deployment, since_ms: int, until_ms: int) -> bool:
    """Finished in the window, or requested by its end and not finished by then (in flight
    at the window's end, however long ago it was asked for)."""
    if d.finished_ms is not None and since_ms <= d.finished_ms <= until_ms:
        return True
    unfinished = d.finished_ms is None or d.finished_ms > until_ms
    return unfinished and d.requested_ms <= until_ms


def _row(
    d: Deployment,
    history: Sequence[Deployment],
    versions: Mapping[int, Version],
    faults: Sequence[Incident],
    until_ms: int,
) -> DeployKpiRow:
    op = operation_of(d)
    v = versions.get(d.to_version_id) if d.to_version_id is not None else None
    finished = d.finished_ms if d.finished_ms is not None and d.finished_ms <= until_ms else None
    is_change = op in CHANGES and finished is not None and d.state in FINISHED
    created = v.created_ms if v is not None and v.path else None
    lead = None
    if is_change and d.state == S.PROMOTED and created is not None and finished is not None:
        lead = finished - created if created <= finished else None
    failure = failed_at = restored_at = None
    if is_change:
        failure, failed_at, restored_at = _failure(d, history, faults, until_ms)
    return DeployKpiRow(
        id=d.id,
        model=d.model,
        operation=op,
        strategy=str(d.strategy),
        # Finished only after the window's end: in flight as the window saw it.
        state=str(d.state) if finished is not None or not d.state.final else "in_flight",
        requested_by=d.requested_by,
        requested_ms=d.requested_ms,
        approved_by=d.approved_by,
        approved_ms=d.approved_ms,
        finished_ms=finished,
        version_id=d.to_version_id,
        version_hash=v.hash if v is not None else None,
        created_ms=created,
        lead_time_ms=lead,
        change_failed=(failure is not None) if is_change else None,
        failure=failure,
        failed_ms=failed_at,
        restored_ms=restored_at,
        time_to_restore_ms=(
            restored_at - failed_at if failed_at is not None and restored_at is not None else None
        ),
        error=d.error,
    )


def _failure(
    d: Deployment, history: Sequence[Deployment], faults: Sequence[Incident], until_ms: int
) -> tuple[str | None, int | None, int | None]:
    """(why it failed, when, when service was restored) for a finished change; all None when
    it did not fail."""
    assert d.finished_ms is not None
    checks = d.checks
    done = d.finished_ms

    def known(ts: int | None) -> int | None:
        return ts if ts is not None and ts <= until_ms else None

    if d.state == S.ROLLED_BACK:
        failed = _int(checks.get("failed_ms")) or done
        restored = _int(checks.get("restored_ms")) or done
        return "rolled back", failed, known(restored)
    if d.state == S.FAILED:
        if _int(checks.get("switched_ms")) is None:
            return "failed before switching: nothing changed", None, None
        failed = _int(checks.get("failed_ms")) or done
        later = [
            o.finished_ms
            for o in history
            if o.state == S.PROMOTED and o.finished_ms is not None and o.finished_ms > failed
        ]
        return "failed: not rolled back", failed, known(min(later, default=None))
    # Promoted: an incident that began inside its bake, or an operator's rollback away from it.
    start = _int(checks.get("bake_started_ms")) or _int(checks.get("switched_ms")) or d.requested_ms
    subjects = {f"model:{d.model}"} | ({f"process:{d.process}"} if d.process else set())
    inside = sorted(
        (b, i.id, i)
        for i in faults
        if i.subject in subjects and (b := began_of(i) or i.opened_ms) and start <= b <= done
    )
    if inside:
        began, _, inc = inside[0]
        return f"incident #{inc.id} ({inc.kind}) during the bake", began, known(inc.resolved_ms)
    undo = _undone_by(d, history, until_ms)
    if undo is not None:
        back = undo.finished_ms if undo.state == S.PROMOTED else None
        return f"rolled back by deployment #{undo.id}", undo.requested_ms, known(back)
    return None, None, None


def _undone_by(d: Deployment, history: Sequence[Deployment], until_ms: int) -> Deployment | None:
    """The operator's rollback away from ``d``'s version before any other change was
    promoted, if one was requested by ``until_ms``."""
    assert d.finished_ms is not None
    for o in sorted(history, key=lambda x: (x.requested_ms, x.id)):
        if o.id == d.id or o.requested_ms < d.finished_ms or o.requested_ms > until_ms:
            continue
        op = operation_of(o)
        if op == "rollback" and o.from_version_id == d.to_version_id:
            return o
        if op in CHANGES and o.state == S.PROMOTED:
            return None  # another change replaced it first: a rollback later undoes that one
    return None


def _keys(
    model: str | None, rows: Sequence[DeployKpiRow], since_ms: int, until_ms: int
) -> DoraKeys:
    changes = [r for r in rows if r.change_failed is not None]
    promoted = [r for r in changes if r.state == S.PROMOTED]
    failed = [r for r in changes if r.change_failed]
    leads = sorted(float(r.lead_time_ms) for r in promoted if r.lead_time_ms is not None)
    restores = sorted(
        float(r.time_to_restore_ms) for r in failed if r.time_to_restore_ms is not None
    )
    days = max(until_ms - since_ms, 1) / DAY_MS
    return DoraKeys(
        model=model,
        changes=len(changes),
        promoted=len(promoted),
        failed_changes=len(failed),
        artifact_changes=sum(1 for r in changes if r.operation != "config"),
        config_changes=sum(1 for r in changes if r.operation == "config"),
        cancelled=sum(1 for r in rows if r.state == S.CANCELLED),
        rollbacks=sum(1 for r in rows if r.operation == "rollback" and r.finished_ms is not None),
        per_day=len(promoted) / days,
        lead_times=len(leads),
        lead_time_median_ms=percentile(leads, 50),
        lead_time_p90_ms=percentile(leads, 90),
        change_failure_rate=(len(failed) / len(changes)) if changes else None,
        restored=len(restores),
        not_restored=sum(1 for r in failed if r.failed_ms is not None and r.restored_ms is None),
        time_to_restore_median_ms=percentile(restores, 50),
    )


# --- reading them from a database ---------------------------------------------------------


def load_kpis(
    conn: sqlite3.Connection, *, since_ms: int, until_ms: int, model: str | None = None
) -> DeployKpis:
    """:func:`deploy_kpis` over what a database holds (of one model, or all). A database from
    before deploys existed gives empty figures."""
    if not _has_deploy_tables(conn):
        return deploy_kpis((), {}, since_ms=since_ms, until_ms=until_ms)
    sql = (
        "SELECT id FROM deployments WHERE requested_ms <= ? "
        "AND (finished_ms IS NULL OR finished_ms >= ?)"
    )
    args: list[object] = [until_ms, since_ms]
    if model is not None:
        sql += " AND model = ?"
        args.append(model)
    rows = [deps.get_deployment(conn, int(i)) for (i,) in conn.execute(sql, args)]
    found = [d for d in rows if d is not None]
    ids = {d.to_version_id for d in found if d.to_version_id is not None}
    versions = {i: v for i in ids if (v := vers.get_version(conn, i)) is not None}
    first = min((d.requested_ms for d in found), default=until_ms)
    subjects = {f"model:{d.model}" for d in found} | {
        f"process:{d.process}" for d in found if d.process
    }
    incidents = [
        i
        for s in sorted(subjects)
        for i in list_incidents(conn, subject=s, since_ms=first, limit=10_000)
    ]
    return deploy_kpis(found, versions, incidents, since_ms=since_ms, until_ms=until_ms)


def deploy_counts(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
    """Every finished deployment ever, counted by (model, operation, final state): what
    ``vigil_deployments_total`` exports (a count that only grows)."""
    if not _has_deploy_tables(conn):
        return {}
    out: dict[tuple[str, str, str], int] = defaultdict(int)
    for model, kind, strategy, checks, state, n in conn.execute(
        "SELECT model, kind, strategy, checks, state, count(*) FROM deployments "
        "WHERE in_flight = 0 GROUP BY model, kind, strategy, json_extract(checks, '$.operation'), "
        "state"
    ):
        dep = Deployment(
            id=0,
            model=str(model),
            kind=DeployKind(kind),
            strategy=DeployStrategy(strategy),
            state=S(state),
            requested_by="",
            requested_ms=0,
            state_since_ms=0,
            checks=json.loads(checks or "{}"),
        )
        out[(dep.model, operation_of(dep), str(dep.state))] += int(n)
    return dict(out)


def in_flight_states(conn: sqlite3.Connection) -> dict[str, str]:
    """Each model with a deployment in flight -> its state."""
    if not _has_deploy_tables(conn):
        return {}
    return {d.model: str(d.state) for d in deps.in_flight(conn)}


def _has_deploy_tables(conn: sqlite3.Connection) -> bool:
    found = {
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('deployments', 'versions')"
        )
    }
    return found == {"deployments", "versions"}
