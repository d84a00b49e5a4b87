"""Unit tests for the deploy records in storage: versions (idempotent registration, lineage,
known-good), deployments (state round trips, one in flight per model, compare-and-set updates),
the artifact hash cache, and migration 0008 on a database made by 0007."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import deployments as deps
from storage import hashcache, versions
from storage.db import MIGRATIONS, connect, migrate, open_database
from storage.deployments import DeployInFlight, Deployment, DeployStateChanged
from storage.hashcache import CachedHash
from storage.records import (
    FINAL_DEPLOY_STATES,
    ArtifactKind,
    DeployKind,
    DeployState,
    DeployStrategy,
    Event,
)
from storage.versions import Version
from storage.writer import Writer

T0 = 1_700_000_000_000


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_database(tmp_path / "vigil.db")
    yield c
    c.close()


def version(model: str = "m", n: int = 1, **kw: object) -> Version:
    fields: dict[str, object] = {
        "id": 0,
        "model": model,
        "hash": f"sha256:{n:064x}",
        "path": f"/models/{model}/v{n}",
        "kind": ArtifactKind.DIR,
        "size_bytes": 1000 * n,
        "files": 3,
        "created_ms": T0 + n,
        "registered_ms": T0 + 10 * n,
    }
    fields.update(kw)
    return Version(**fields)  # type: ignore[arg-type]


def deployment(model: str = "m", **kw: object) -> Deployment:
    fields: dict[str, object] = {
        "id": 0,
        "model": model,
        "kind": DeployKind.ARTIFACT,
        "strategy": DeployStrategy.IN_PLACE,
        "state": DeployState.REQUESTED,
        "requested_by": "alice",
        "requested_ms": T0,
        "state_since_ms": T0,
        "process": f"{model}-server",
    }
    fields.update(kw)
    return Deployment(**fields)  # type: ignore[arg-type]


# --- versions ---------------------------------------------------------------------------------


def test_register_version_round_trips_and_is_idempotent(conn: sqlite3.Connection) -> None:
    first = version(actor="ci", pipeline_id="gh-123", git_sha="abc123", notes="q4 weights")
    stored, created = versions.register_version(conn, first)
    assert created and stored.id > 0
    assert dataclasses.replace(stored, id=0) == first
    assert not stored.known_good and stored.outcome is None
    # The same content again (a retried pipeline step, another actor): the first row, unchanged.
    again, created = versions.register_version(conn, version(actor="bob", notes="retry"))
    assert not created and again == stored
    # The same content found at a new path: same row and lineage, the path brought up to date.
    moved, created = versions.register_version(conn, version(path="/srv/copy"))
    assert not created and moved.id == stored.id
    assert (moved.path, moved.actor, moved.pipeline_id) == ("/srv/copy", "ci", "gh-123")
    assert conn.execute("SELECT count(*) FROM versions").fetchone()[0] == 1
    # Unique per model: another model may hold the same bytes as a version of its own.
    other, created = versions.register_version(conn, version(model="other"))
    assert created and other.id != stored.id
    assert versions.find_version(conn, "m", first.hash) == moved
    assert versions.get_version(conn, 999) is None
    assert Version.from_json(moved.to_json()) == moved
    assert moved.to_json()["kind"] == "dir" and moved.short_hash == "0" * 12


def test_the_database_refuses_a_duplicate_version_row(conn: sqlite3.Connection) -> None:
    versions.register_version(conn, version())
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO versions (model, hash, path, kind, size_bytes, files, created_ms, "
            "registered_ms) VALUES ('m', ?, '/x', 'dir', 1, 1, 1, 1)",
            (version().hash,),
        )


def test_known_good_lineage_and_listing(conn: sqlite3.Connection) -> None:
    v1, _ = versions.register_version(conn, version(n=1))
    v2, _ = versions.register_version(conn, version(n=2, replaced_version_id=v1.id))
    v3, _ = versions.register_version(conn, version(n=3, replaced_version_id=v2.id))
    assert v3.replaced_version_id == v2.id
    assert versions.last_known_good(conn, "m") is None
    assert versions.mark_known_good(conn, v1.id, T0 + 100).known_good
    v2g = versions.mark_known_good(conn, v2.id, T0 + 200)
    assert (v2g.known_good_ms, v2g.outcome) == (T0 + 200, DeployState.PROMOTED)
    assert versions.last_known_good(conn, "m") == v2g
    # Rolling back from v2: the last known-good other than v2 is v1.
    lkg = versions.last_known_good(conn, "m", exclude_id=v2.id)
    assert lkg is not None and lkg.id == v1.id
    assert versions.set_outcome(conn, v3.id, DeployState.ROLLED_BACK).outcome == "rolled_back"
    revoked = versions.revoke_known_good(conn, v2.id)
    assert not revoked.known_good and revoked.outcome == DeployState.PROMOTED
    assert versions.last_known_good(conn, "m") == versions.get_version(conn, v1.id)
    assert versions.last_known_good(conn, "other") is None
    assert [v.id for v in versions.list_versions(conn, model="m")] == [v3.id, v2.id, v1.id]
    assert [v.id for v in versions.list_versions(conn, limit=1)] == [v3.id]
    with pytest.raises(LookupError, match="no version with id 999"):
        versions.mark_known_good(conn, 999, T0)


# --- deployments ------------------------------------------------------------------------------


def test_deployment_round_trip_and_state_machine_moves(conn: sqlite3.Connection) -> None:
    v1, _ = versions.register_version(conn, version(n=1))
    v2, _ = versions.register_version(conn, version(n=2))
    d = deps.insert_deployment(
        conn,
        deployment(
            strategy=DeployStrategy.BLUE_GREEN,
            from_version_id=v1.id,
            to_version_id=v2.id,
            approval_required=True,
            state=DeployState.AWAITING_APPROVAL,
            bake_s=600.0,
            pipeline_id="gl-7",
            git_sha="deadbeef",
            notes="new tokenizer",
            addresses={"blue": "127.0.0.1:8000", "green": "127.0.0.1:8001"},
        ),
    )
    assert d.id > 0 and d.in_flight and d.finished_ms is None
    assert deps.get_deployment(conn, d.id) == d
    assert Deployment.from_json(d.to_json()) == d
    assert d.to_json()["state"] == "awaiting_approval" and d.to_json()["in_flight"] is True

    approved = d.moved(DeployState.SWITCHING, T0 + 5, approved_by="bob", approved_ms=T0 + 5)
    d = deps.update_deployment(conn, approved, expect_state=DeployState.AWAITING_APPROVAL)
    assert (d.state, d.approved_by, d.state_since_ms, d.step) == ("switching", "bob", T0 + 5, "")
    d = deps.update_deployment(conn, d.moved(DeployState.SWITCHING, T0 + 6, step="proxy_switched"))
    assert d.step == "proxy_switched"
    evidence = {"checks": [{"name": "golden", "ok": True}], "ttft_p95_ratio": 1.02}
    d = deps.update_deployment(conn, d.moved(DeployState.BAKING, T0 + 7, checks=evidence))
    assert d.checks == evidence
    done = deps.update_deployment(conn, d.moved(DeployState.PROMOTED, T0 + 9))
    assert (done.finished_ms, done.in_flight) == (T0 + 9, False)
    assert deps.active_deployment(conn, "m") is None
    assert deps.current_version_id(conn, "m") == v2.id


def test_one_deployment_in_flight_per_model(conn: sqlite3.Connection) -> None:
    first = deps.insert_deployment(conn, deployment(requested_by="alice"))
    with pytest.raises(DeployInFlight) as caught:
        deps.insert_deployment(conn, deployment(requested_by="bob"))
    assert caught.value.deployment == first
    msg = str(caught.value)
    assert f"deployment {first.id} in flight" in msg and "'m'" in msg and "alice" in msg
    # Another model is independent; a recorded deployment that is already final is allowed.
    deps.insert_deployment(conn, deployment(model="other"))
    recorded = deps.insert_deployment(
        conn,
        deployment(strategy=DeployStrategy.RECORD, state=DeployState.PROMOTED, finished_ms=T0),
    )
    assert not recorded.in_flight
    assert deps.active_deployment(conn, "m") == first
    assert {d.model for d in deps.in_flight(conn)} == {"m", "other"}
    # Once the first is over, the next one may start.
    deps.update_deployment(conn, first.moved(DeployState.CANCELLED, T0 + 1))
    second = deps.insert_deployment(conn, deployment(requested_by="bob"))
    assert deps.active_deployment(conn, "m") == second
    # Bringing an old one back into flight beside it is refused too.
    with pytest.raises(DeployInFlight):
        deps.update_deployment(conn, recorded.moved(DeployState.ROLLING_BACK, T0 + 2))


def test_concurrent_inserts_from_two_connections_start_one(tmp_path: Path) -> None:
    path = tmp_path / "vigil.db"
    open_database(path).close()
    results: list[object] = []
    barrier = threading.Barrier(2)

    def request(who: str) -> None:
        c = connect(path)
        try:
            barrier.wait()
            results.append(deps.insert_deployment(c, deployment(requested_by=who)))
        except DeployInFlight as exc:
            results.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=request, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(type(r).__name__ for r in results) == ["DeployInFlight", "Deployment"]


def test_compare_and_set_refuses_a_stale_update(conn: sqlite3.Connection) -> None:
    d = deps.insert_deployment(conn, deployment(state=DeployState.AWAITING_APPROVAL))
    by_bob = d.moved(DeployState.SWITCHING, T0 + 1, approved_by="bob", approved_ms=T0 + 1)
    deps.update_deployment(conn, by_bob, expect_state=DeployState.AWAITING_APPROVAL)
    by_carol = d.moved(DeployState.SWITCHING, T0 + 2, approved_by="carol", approved_ms=T0 + 2)
    with pytest.raises(DeployStateChanged, match="is switching, not awaiting_approval") as caught:
        deps.update_deployment(conn, by_carol, expect_state=DeployState.AWAITING_APPROVAL)
    assert caught.value.current.approved_by == "bob"
    stored = deps.get_deployment(conn, d.id)
    assert stored is not None and stored.approved_by == "bob"
    # A set of acceptable states.
    baking = stored.moved(DeployState.BAKING, T0 + 3)
    expect = (DeployState.SWITCHING, DeployState.STARTING)
    assert deps.update_deployment(conn, baking, expect_state=expect).state == "baking"
    with pytest.raises(LookupError):
        deps.update_deployment(conn, dataclasses.replace(baking, id=999))


def test_listing_and_current_version_after_a_rollback(conn: sqlite3.Connection) -> None:
    v1, _ = versions.register_version(conn, version(n=1))
    v2, _ = versions.register_version(conn, version(n=2))
    assert deps.current_version_id(conn, "m") is None
    a = deps.insert_deployment(conn, deployment(to_version_id=v1.id, requested_ms=T0))
    deps.update_deployment(conn, a.moved(DeployState.PROMOTED, T0 + 10))
    b = deps.insert_deployment(
        conn,
        deployment(from_version_id=v1.id, to_version_id=v2.id, requested_ms=T0 + 20),
    )
    rolled = b.moved(
        DeployState.ROLLED_BACK, T0 + 30, rollback_version_id=v1.id, error="golden mismatch"
    )
    deps.update_deployment(conn, rolled)
    assert deps.current_version_id(conn, "m") == v1.id
    # A configuration change leaves the artifact where it was.
    c = deps.insert_deployment(
        conn,
        deployment(kind=DeployKind.CONFIG, config_diff="-a\n+b", requested_ms=T0 + 40),
    )
    deps.update_deployment(conn, c.moved(DeployState.PROMOTED, T0 + 50))
    assert deps.current_version_id(conn, "m") == v1.id
    ids = [d.id for d in deps.list_deployments(conn, model="m")]
    assert ids == [c.id, b.id, a.id]
    assert [d.id for d in deps.list_deployments(conn, states=[DeployState.ROLLED_BACK])] == [b.id]
    assert [d.id for d in deps.list_deployments(conn, since_ms=T0 + 20, limit=1)] == [c.id]
    assert deps.list_deployments(conn, model="nobody") == []


def test_final_states() -> None:
    assert {s for s in DeployState if s.final} == FINAL_DEPLOY_STATES
    assert not DeployState.AWAITING_APPROVAL.final and DeployState.CANCELLED.final


# --- the artifact hash cache ------------------------------------------------------------------


def test_hash_cache_round_trip(conn: sqlite3.Connection) -> None:
    rows = [
        CachedHash(f"/m/f{i}", 10 + i, 1_000 + i, 77 + i, 2_000 + i, f"sha256:{i:064x}", T0)
        for i in range(600)  # more than one lookup chunk
    ]
    assert hashcache.store(conn, rows) == 600
    got = hashcache.lookup(conn, [r.path for r in rows] + ["/m/none"])
    assert len(got) == 600 and got["/m/f5"] == rows[5]
    assert got["/m/f5"].matches(15, 1_005, 82, 2_005)
    assert not got["/m/f5"].matches(15, 1_005, 82, 2_006)  # ctime moved: a different file
    newer = dataclasses.replace(rows[5], size_bytes=99, hash="sha256:" + "f" * 64)
    hashcache.store(conn, [newer])
    assert hashcache.lookup(conn, ["/m/f5"])["/m/f5"] == newer
    assert hashcache.forget(conn, ["/m/f5", "/m/f6"]) == 2
    assert len(hashcache.paths(conn)) == 598


# --- migration 0008 on an older database ------------------------------------------------------


def test_upgrading_a_database_made_by_schema_0007(tmp_path: Path) -> None:
    path = tmp_path / "vigil.db"
    old = MIGRATIONS[:7]
    assert old[-1][0] == "0007_outbox"
    conn = connect(path)
    try:
        assert migrate(conn, old)[-1] == "0007_outbox"
        conn.execute(
            "INSERT INTO incidents (subject, kind, severity, cause, state, opened_ms) "
            "VALUES ('m', 'model_down', 'critical', 'x', 'open', ?)",
            (T0,),
        )
        assert "versions" not in {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    finally:
        conn.close()
    w = Writer(path, flush_interval_s=0.01)  # the writer's open runs the new migration
    w.start()
    try:
        w.submit_one(Event(T0, "agent.started", "agent", "upgraded"))
        assert w.flush()
    finally:
        w.close()
    conn = connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
        assert names == [n for n, _ in MIGRATIONS] and "0008_deploys" in names
        assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 1
        v, created = versions.register_version(conn, version())
        assert created
        d = deps.insert_deployment(conn, deployment(to_version_id=v.id))
        assert deps.active_deployment(conn, "m") == d
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
