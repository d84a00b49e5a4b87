"""The DORA four keys (storage/deploykpi.py) against injected truth: deployment rows with known
times give exact figures, per model and for the host; the same rows stored in a real database
give the same figures through load_kpis; the window's end decides what was known."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.serve.deploymetrics import deploy_families
from agent.serve.exposition import render
from storage import deployments as deps
from storage import versions as vers
from storage.db import open_database
from storage.deploykpi import deploy_counts, deploy_kpis, in_flight_states, load_kpis
from storage.deployments import Deployment
from storage.incidents import save_incident
from storage.records import ArtifactKind, DeployKind, DeployState, DeployStrategy, Incident
from storage.versions import Version

S = DeployState
T0 = 1_700_000_000_000
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
UNTIL = T0 + 10 * DAY


def v(vid: int, created_ms: int, model: str = "m", path: str | None = None) -> Version:
    return Version(
        id=vid,
        model=model,
        hash=f"sha256:{vid:064x}",
        path=f"/models/{model}/v{vid}" if path is None else path,
        kind=ArtifactKind.FILE,
        size_bytes=1,
        files=1,
        created_ms=created_ms,
        registered_ms=created_ms,
    )


def d(did: int, state: DeployState, done: int | None, **kw: Any) -> Deployment:
    """A deployment finished (or not: ``done`` None) at ``done``, requested 5 minutes before."""
    requested = kw.pop("requested_ms", (done if done is not None else T0) - 5 * MIN)
    fields: dict[str, Any] = {
        "id": did,
        "model": "m",
        "kind": DeployKind.ARTIFACT,
        "strategy": DeployStrategy.IN_PLACE,
        "state": state,
        "requested_by": "alice",
        "requested_ms": requested,
        "state_since_ms": done if done is not None else requested,
        "finished_ms": done,
        "process": "srv",
        "to_version_id": did,
        "checks": {"operation": "deploy"},
    }
    fields.update(kw)
    return Deployment(**fields)


def incident(iid: int, began: int, resolved: int | None, **kw: Any) -> Incident:
    fields: dict[str, Any] = {
        "id": iid,
        "subject": "model:m",
        "kind": "model_down",
        "severity": "critical",
        "cause": "refused",
        "state": "resolved" if resolved else "open",
        "opened_ms": began + 10_000,
        "resolved_ms": resolved,
        "began_ms": began,
    }
    fields.update(kw)
    return Incident(**fields)


def history() -> tuple[list[Deployment], dict[int, Version], list[Incident]]:
    """Model m over ten days (and model n once), each row's fate known; see the figures in
    test_four_keys_per_model_and_for_the_host."""
    rows = [
        # Before the window: not counted.
        d(1, S.PROMOTED, T0 - DAY),
        # A record with its files (lead 2 h) and a deploy (lead 6 h), both promoted.
        d(2, S.PROMOTED, T0 + DAY, strategy=DeployStrategy.RECORD, checks={"operation": "record"}),
        d(3, S.PROMOTED, T0 + 2 * DAY, checks={"operation": "deploy", "bake_started_ms": 0}),
        # Rolled back by the gate: failed at +3d, serving the old version 90 s later.
        d(
            4,
            S.ROLLED_BACK,
            T0 + 3 * DAY + 95_000,
            checks={
                "operation": "deploy",
                "switched_ms": T0 + 3 * DAY - MIN,
                "failed_ms": T0 + 3 * DAY,
                "restored_ms": T0 + 3 * DAY + 90_000,
            },
        ),
        # Cancelled: changed nothing.
        d(5, S.CANCELLED, T0 + 4 * DAY),
        # Promoted (lead 1 h), but an outage began inside its bake: restored 15 min later.
        d(
            6,
            S.PROMOTED,
            T0 + 5 * DAY,
            checks={"operation": "deploy", "bake_started_ms": T0 + 5 * DAY - 10 * MIN},
        ),
        # Promoted (lead 4 h), then undone by an operator's rollback one hour later (2 min).
        d(7, S.PROMOTED, T0 + 6 * DAY, from_version_id=3),
        d(
            8,
            S.PROMOTED,
            T0 + 6 * DAY + HOUR + 2 * MIN,
            requested_ms=T0 + 6 * DAY + HOUR,
            from_version_id=7,
            to_version_id=3,
            checks={"operation": "rollback"},
        ),
        # Failed before the switch (nothing changed): failed, no time to restore.
        d(9, S.FAILED, T0 + 7 * DAY, checks={"operation": "deploy"}),
        # Failed after the switch (no rollback target); the next promotion restores: 30 min.
        d(
            10,
            S.FAILED,
            T0 + 8 * DAY,
            checks={"operation": "deploy", "switched_ms": T0 + 8 * DAY - MIN},
        ),
        d(11, S.PROMOTED, T0 + 8 * DAY + 30 * MIN),
        # A record by hash alone: no creation time, no lead time.
        d(12, S.PROMOTED, T0 + 9 * DAY, checks={"operation": "record"}),
        # A config change: counted with the changes, no lead time.
        d(13, S.PROMOTED, T0 + 9 * DAY + HOUR, kind=DeployKind.CONFIG, to_version_id=None),
        # In flight at the window's end.
        d(14, S.BAKING, None, requested_ms=T0 + 9 * DAY + 12 * HOUR),
        # Another model, lead 10 h.
        d(15, S.PROMOTED, T0 + DAY, model="n", process="srv-n"),
    ]
    versions = {
        1: v(1, T0 - 2 * DAY),
        2: v(2, T0 + DAY - 2 * HOUR),
        3: v(3, T0 + 2 * DAY - 6 * HOUR),
        4: v(4, T0 + 3 * DAY - HOUR),
        5: v(5, T0),
        6: v(6, T0 + 5 * DAY - HOUR),
        7: v(7, T0 + 6 * DAY - 4 * HOUR),
        9: v(9, T0),
        10: v(10, T0),
        11: v(11, T0 + 8 * DAY),
        12: v(12, T0 + 9 * DAY, path=""),
        14: v(14, T0),
        15: v(15, T0 + DAY - 10 * HOUR, model="n"),
    }
    bake = T0 + 5 * DAY - 5 * MIN
    incidents = [
        incident(1, bake, bake + 15 * MIN),
        # Not a fault of d6: an earlier deploy's failure, one in maintenance, another model's.
        incident(2, bake + MIN, None, kind="deploy_failed"),
        incident(3, bake + MIN, None, evidence={"planned": "maintenance: patch"}),
        incident(4, bake + MIN, None, subject="model:other"),
    ]
    return rows, versions, incidents


def test_four_keys_per_model_and_for_the_host() -> None:
    rows, versions, incidents = history()
    k = deploy_kpis(rows, versions, incidents, since_ms=T0, until_ms=UNTIL)
    m = next(x for x in k.models if x.model == "m")
    # Finished changes: 2, 3, 4, 6, 7, 9, 10, 11, 12, 13; promoted: 2, 3, 6, 7, 11, 12, 13.
    assert (m.changes, m.promoted, m.failed_changes) == (10, 7, 5)
    assert (m.artifact_changes, m.config_changes, m.cancelled, m.rollbacks) == (9, 1, 1, 1)
    assert m.per_day == pytest.approx(0.7)
    assert m.change_failure_rate == pytest.approx(0.5)
    # Lead times 2 h, 6 h, 1 h, 4 h, 30 min: median 2 h, p90 4 h + 0.6 x 2 h.
    assert m.lead_times == 5
    assert m.lead_time_median_ms == 2 * HOUR
    assert m.lead_time_p90_ms == pytest.approx(5.2 * HOUR)
    # Restores: 90 s (rolled back), 15 min (incident), 2 min (rollback), 30 min (next deploy).
    assert (m.restored, m.not_restored) == (4, 0)
    assert m.time_to_restore_median_ms == pytest.approx((2 * MIN + 15 * MIN) / 2)
    by_id = {r.id: r for r in k.rows}
    assert 1 not in by_id  # finished before the window
    assert by_id[4].failure == "rolled back" and by_id[4].time_to_restore_ms == 90_000
    assert by_id[6].failure == "incident #1 (model_down) during the bake"
    assert by_id[6].time_to_restore_ms == 15 * MIN and by_id[6].lead_time_ms == HOUR
    assert by_id[7].failure == "rolled back by deployment #8"
    assert by_id[7].time_to_restore_ms == 2 * MIN
    assert by_id[8].operation == "rollback" and by_id[8].change_failed is None
    assert by_id[9].change_failed and by_id[9].time_to_restore_ms is None
    assert by_id[10].time_to_restore_ms == 30 * MIN
    assert by_id[12].lead_time_ms is None and by_id[12].created_ms is None
    assert by_id[13].operation == "config" and by_id[13].lead_time_ms is None
    assert by_id[14].state == "baking" and by_id[14].change_failed is None
    assert by_id[5].state == "cancelled" and by_id[5].change_failed is None
    assert not by_id[3].change_failed and by_id[3].failure is None
    # The host pools both models: lead times 30 min, 1, 2, 4, 6, 10 h.
    h = k.host
    assert h.model is None and (h.changes, h.promoted, h.failed_changes) == (11, 8, 5)
    assert h.per_day == pytest.approx(0.8)
    assert h.change_failure_rate == pytest.approx(5 / 11)
    assert h.lead_time_median_ms == 3 * HOUR
    assert h.lead_time_p90_ms == pytest.approx(8 * HOUR)
    n = next(x for x in k.models if x.model == "n")
    assert (n.changes, n.lead_time_median_ms, n.change_failure_rate) == (1, 10 * HOUR, 0.0)
    assert n.time_to_restore_median_ms is None


def test_only_what_was_known_at_the_windows_end_counts() -> None:
    rows, versions, incidents = history()
    # Ending 30 min after d7's promotion: the rollback that undid it had not been asked for.
    until = T0 + 6 * DAY + 30 * MIN
    k = deploy_kpis(rows, versions, incidents, since_ms=T0, until_ms=until)
    by_id = {r.id: r for r in k.rows}
    assert not by_id[7].change_failed
    assert 8 not in by_id and 9 not in by_id
    # Ending between d10's failure and the promotion that restored it: failed, not restored.
    until = T0 + 8 * DAY + 10 * MIN
    k = deploy_kpis(rows, versions, incidents, since_ms=T0 + 7 * DAY + HOUR, until_ms=until)
    (only,) = k.rows
    assert only.id == 10 and only.change_failed and only.restored_ms is None
    assert (k.host.restored, k.host.not_restored, k.host.change_failure_rate) == (0, 1, 1.0)
    # A deploy in flight at the window's end is listed, however long ago it was asked for.
    k = deploy_kpis(rows, versions, (), since_ms=T0 + 9 * DAY + 13 * HOUR, until_ms=UNTIL)
    assert [(r.id, r.state) for r in k.rows] == [(14, "baking")]
    # A deploy finished after the window's end was in flight as the window saw it.
    k = deploy_kpis(rows, versions, (), since_ms=T0 + 5 * DAY - HOUR, until_ms=T0 + 5 * DAY - 1)
    (row,) = k.rows
    assert row.id == 6 and row.state == "in_flight" and row.change_failed is None
    assert k.host.changes == 0 and k.host.change_failure_rate is None
    assert k.host.per_day == 0 and k.host.lead_time_median_ms is None


def test_an_mtime_after_the_promotion_is_no_creation_time() -> None:
    rows = [d(1, S.PROMOTED, T0 + HOUR)]
    k = deploy_kpis(rows, {1: v(1, T0 + 2 * HOUR)}, since_ms=T0, until_ms=T0 + DAY)
    assert k.rows[0].lead_time_ms is None and k.host.lead_times == 0
    assert k.host.promoted == 1


def test_a_bad_window_is_refused() -> None:
    with pytest.raises(ValueError, match="since_ms"):
        deploy_kpis((), {}, since_ms=2, until_ms=1)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_database(tmp_path / "vigil.db")
    yield c
    c.close()


def store_history(conn: sqlite3.Connection) -> tuple[list[Deployment], dict[int, Version]]:
    """history() stored in a real database: its rows and versions as stored (new ids)."""
    rows, versions, incidents = history()
    ids: dict[int, int] = {}
    for vid, ver in sorted(versions.items()):
        stored, _ = vers.register_version(conn, ver)
        ids[vid] = stored.id
    for inc in incidents:
        save_incident(conn, inc)
    stored_rows = []
    for row in rows:
        mapped = dataclasses.replace(
            row,
            to_version_id=ids.get(row.to_version_id or -1),
            from_version_id=ids.get(row.from_version_id or -1),
        )
        # Stored in flight first (one per model at a time), then moved to its end.
        new = deps.insert_deployment(
            conn, dataclasses.replace(mapped, state=S.REQUESTED, finished_ms=None)
        )
        stored_rows.append(deps.update_deployment(conn, dataclasses.replace(mapped, id=new.id)))
    return stored_rows, {ids[k]: dataclasses.replace(x, id=ids[k]) for k, x in versions.items()}


def test_load_kpis_reads_the_same_figures_from_a_database(conn: sqlite3.Connection) -> None:
    stored_rows, stored_versions = store_history(conn)
    rows, _, incidents = history()
    want = deploy_kpis(
        stored_rows,
        stored_versions,
        incidents,
        since_ms=T0,
        until_ms=UNTIL,
    )
    got = load_kpis(conn, since_ms=T0, until_ms=UNTIL)
    assert got == want
    assert got.host.changes == 11 and got.host.failed_changes == 5
    only_n = load_kpis(conn, since_ms=T0, until_ms=UNTIL, model="n")
    assert [m.model for m in only_n.models] == ["n"] and only_n.host.changes == 1
    counts = deploy_counts(conn)
    assert counts[("m", "deploy", "promoted")] == 5  # 1, 3, 6, 7, 11 (all time)
    assert counts[("m", "rollback", "promoted")] == 1
    assert counts[("m", "record", "promoted")] == 2
    assert counts[("m", "config", "promoted")] == 1
    assert counts[("m", "deploy", "failed")] == 2
    assert counts[("m", "deploy", "rolled_back")] == 1
    assert counts[("m", "deploy", "cancelled")] == 1
    assert sum(counts.values()) == len(rows) - 1  # all but the one in flight
    assert in_flight_states(conn) == {"m": "baking"}


def test_a_database_without_deploy_tables_gives_empty_figures() -> None:
    conn = sqlite3.connect(":memory:")
    k = load_kpis(conn, since_ms=T0, until_ms=UNTIL)
    assert k.rows == () and k.host.changes == 0 and k.models == ()
    assert deploy_counts(conn) == {} and in_flight_states(conn) == {}


def test_the_metrics_families_read_the_same_figures(conn: sqlite3.Connection) -> None:
    store_history(conn)
    text = render(deploy_families(conn, ["m", "n", "quiet"], UNTIL)).decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return got.get((name, tuple(sorted(labels.items()))))

    total = "vigil_deployments_total"
    assert value(total, model="m", operation="deploy", outcome="promoted") == 5
    assert value(total, model="m", operation="rollback", outcome="promoted") == 1
    assert value(total, model="m", operation="deploy", outcome="rolled_back") == 1
    assert value("vigil_deploy_in_progress", model="m", state="baking") == 1
    assert value("vigil_deploy_in_progress", model="m", state="switching") == 0
    assert value("vigil_deploy_in_progress", model="quiet", state="baking") == 0
    # The 30 days before UNTIL hold the whole history: the figures of the first test, with
    # d1 too (promoted a day before T0, lead time 24 h).
    assert value("vigil_deploy_frequency_per_day", model="m") == pytest.approx(8 / 30)
    assert value("vigil_deploy_frequency_per_day", model="quiet") == 0
    assert value("vigil_deploy_lead_time_seconds", model="m", quantile="0.5") == 3 * 3600
    assert value("vigil_deploy_lead_time_seconds", model="m", quantile="0.9") == 15 * 3600
    assert value("vigil_deploy_change_failure_ratio", model="m") == pytest.approx(5 / 11)
    assert value("vigil_deploy_change_failure_ratio", model="quiet") is None  # no changes
    restore = value("vigil_deploy_time_to_restore_seconds", model="m", quantile="0.5")
    assert restore == pytest.approx(8.5 * 60)
