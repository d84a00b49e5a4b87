"""The report's alerting section and planned incidents, from a real database (real writer, real
migrations) with known contents; every number asserted follows from ``fill``."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.report import load_schema, render, write_csv
from storage.alerts import AlertRow, SilenceRow, save_alert, save_silence
from storage.db import connect
from storage.incidents import save_incident
from storage.outbox import OutboxEntry, enqueue, mark_delivered, mark_failed
from storage.records import Event, Incident, make_labels
from storage.report import build_report
from storage.report_model import SCHEMA_VERSION, Report
from storage.writer import Writer
from tests.schema_subset import errors

H = 3_600_000
T0 = 1_700_006_400_000
UNTIL = T0 + 24 * H
FP = {"model:alpha": "fp-a", "model:beta": "fp-b", "host": "fp-d"}


def _alert(aid: int, rule: str, sev: str, subject: str, firing: int | None) -> AlertRow:
    return AlertRow(
        id=aid,
        fingerprint=FP[subject],
        rule=rule,
        subject=subject,
        labels=make_labels(subject=subject),
        severity=sev,
        state="firing" if firing is not None else "pending",
        value=1.0,
        summary=f"{rule} on {subject}",
        runbook_url="",
        pending_ms=(firing or T0 + 6 * H) - 30_000,
        firing_ms=firing,
        resolved_ms=None,
        flapping=False,
        updated_ms=firing or T0 + 6 * H,
    )


def _note(
    nid: str, channel: str, subject: str | None, created: int, kind: str = "firing"
) -> OutboxEntry:
    alerts = (
        [{"fingerprint": FP[subject], "rule": "r", "status": "firing", "severity": "critical"}]
        if subject
        else []
    )
    return OutboxEntry(
        id=nid,
        channel=channel,
        kind=kind,
        dedup_key=f"d-{nid}",
        payload={"notification_id": nid, "kind": kind, "alerts": alerts},
        created_ms=created,
    )


def _inc(
    iid: int, subject: str, opened: int, began: int, resolved: int | None = None, **ev: object
) -> Incident:
    return Incident(
        id=iid,
        subject=subject,
        kind="model_down",
        severity="critical",
        cause="cause",
        state="resolved" if resolved is not None else "open",
        opened_ms=opened,
        resolved_ms=resolved,
        ttr_ms=(resolved - began) if resolved is not None else None,
        evidence=ev,
        began_ms=began,
    )


def fill(writer: Writer) -> None:
    alerts = [
        _alert(1, "model_down", "critical", "model:alpha", T0 + H),
        _alert(2, "model_down", "critical", "model:alpha", T0 + 5 * H),
        _alert(3, "model_down", "critical", "model:beta", T0 + 2 * H),
        _alert(4, "disk_filling", "warning", "host", T0 + 3 * H),
        _alert(5, "model_down", "critical", "model:alpha", T0 - H),  # fired before the window
        _alert(6, "disk_filling", "warning", "host", None),  # pending only: never fired
    ]
    for a in alerts:
        writer.run_task(lambda conn, a=a: save_alert(conn, a))
    incidents = [
        # alpha: the fault began 40 s before it opened; notified on slack 36 s after it began.
        _inc(1, "model:alpha", T0 + H, T0 + H - 40_000, T0 + H + 600_000),
        # beta: its only notification was never delivered.
        _inc(2, "model:beta", T0 + 2 * H, T0 + 2 * H - 10_000),
        # Inside maintenance: counted apart, left out of MTTD/MTTR and time to notify.
        _inc(
            3,
            "model:alpha",
            T0 + 10 * H,
            T0 + 10 * H - 5_000,
            T0 + 10 * H + 60_000,
            planned="maintenance: upgrade",
        ),
        _inc(4, "process:srv", T0 + 15 * H, T0 + 15 * H, planned="maintenance: ghost"),
    ]
    for i in incidents:
        writer.run_task(lambda conn, i=i: save_incident(conn, i))
    notes = [
        _note("n0", "slack", "model:alpha", T0 + H - 60_000),  # before the fault began
        _note("n1", "slack", "model:alpha", T0 + H - 5_000),
        _note("n1", "pager", "model:alpha", T0 + H - 5_000),
        _note("n2", "slack", "model:beta", T0 + 2 * H),
        _note("n3", "pager", "host", T0 + 3 * H),
        _note("n4", "slack", "model:alpha", T0 + H + 600_000, kind="resolved"),
        _note("t1", "slack", None, T0 + 4 * H, kind="test"),
        _note("old", "slack", "model:alpha", T0 - H),  # before the window
    ]
    writer.run_task(lambda conn: enqueue(conn, notes))
    delivered = {
        ("n0", "slack"): T0 + H - 59_000,
        ("n1", "slack"): T0 + H - 4_000,
        ("n1", "pager"): T0 + H - 2_000,
        ("n4", "slack"): T0 + H + 601_000,
        ("t1", "slack"): T0 + 4 * H,
        ("old", "slack"): T0 - H + 1,
    }
    for key, at in delivered.items():
        writer.run_task(
            lambda conn, k=key, t=at: mark_delivered(conn, k, attempts=1, delivered_ms=t)
        )
    writer.run_task(
        lambda conn: mark_failed(
            conn,
            ("n2", "slack"),
            attempts=5,
            attempted_ms=T0 + 2 * H + 60_000,
            error="HTTP 500",
            next_attempt_ms=None,
        )
    )
    silences = [
        SilenceRow(
            "s1", (("rule", "=", "disk_filling"),), T0 + 2 * H, T0 + 4 * H, "ops", "disk", T0
        ),
        SilenceRow("s2", (("rule", "=", "x"),), T0 - 2 * H, T0 - H, "ops", "", T0 - 2 * H),
        SilenceRow(
            "s3",
            (("subject", "=~", "model:.*"),),
            T0 + 20 * H,
            T0 + 30 * H,
            "ann",
            "",
            T0,
            expired_ms=T0 + 21 * H,
            expired_by="ann",
        ),
        SilenceRow(
            "s4",
            (("rule", "=", "y"),),
            T0 - 3 * H,
            T0 + 48 * H,
            "bob",
            "",
            T0 - 3 * H,
            expired_ms=T0 - H,
            expired_by="bob",
        ),
    ]
    for s in silences:
        writer.run_task(lambda conn, s=s: save_silence(conn, s))

    def mw(ts: int, what: str, name: str, ends: int, subjects: list[str]) -> Event:
        return Event(
            ts_ms=ts,
            kind=f"maintenance.{what}",
            subject="alerts",
            message=f"maintenance {name} {what}",
            data={"window": name, "subjects": subjects, "ends_ms": ends},
        )

    writer.submit(
        [
            mw(T0 - 5 * H, "started", "old", T0 - 4 * H, []),
            mw(T0 - 4 * H, "ended", "old", T0 - 4 * H, []),
            mw(T0 - H, "started", "nightly", T0 + H, []),
            mw(T0 + 1_800_000, "ended", "nightly", T0 + H, []),
            mw(T0 + 9 * H, "started", "upgrade", T0 + 11 * H, ["model:alpha"]),
            mw(T0 + 11 * H, "ended", "upgrade", T0 + 11 * H, ["model:alpha"]),
        ]
    )
    assert writer.flush()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    writer = Writer(tmp_path / "data" / "vigil.db", flush_interval_s=0.01)
    writer.start()
    try:
        fill(writer)
    finally:
        writer.close()
    yield tmp_path / "data" / "vigil.db"


@pytest.fixture
def report(db: Path) -> Report:
    conn = connect(db, readonly=True)
    try:
        return build_report(conn, since_ms=T0, until_ms=UNTIL, generated_ms=UNTIL)
    finally:
        conn.close()


def test_alerts_fired_by_rule_and_noisiest(report: Report) -> None:
    al = report.alerting
    assert al.fired == 4
    assert [(f.rule, f.severity, f.fired) for f in al.by_rule] == [
        ("model_down", "critical", 3),
        ("disk_filling", "warning", 1),
    ]
    assert [(f.rule, f.fired) for f in al.noisiest] == [("model_down", 3), ("disk_filling", 1)]
    assert al.note is None


def test_pages_per_channel(report: Report) -> None:
    al = report.alerting
    rows = {c.channel: (c.delivered, c.undelivered, c.pending, c.last_error) for c in al.channels}
    # The test message and the notification before the window are not counted.
    assert rows == {"pager": (1, 0, 1, None), "slack": (3, 1, 0, "HTTP 500")}
    assert (al.pages_delivered, al.pages_undelivered, al.pages_pending) == (4, 1, 1)


def test_time_to_first_notification(report: Report) -> None:
    al = report.alerting
    firsts = {f.incident_id: f for f in al.first_notifications}
    assert set(firsts) == {1, 2}  # 3 and 4 opened inside maintenance
    alpha = firsts[1]
    # n0 was delivered earlier but created before the fault began; n1 reached slack first.
    assert (alpha.began_ms, alpha.notified_ms, alpha.channel) == (
        T0 + H - 40_000,
        T0 + H - 4_000,
        "slack",
    )
    assert alpha.latency_ms == 36_000
    beta = firsts[2]
    assert (beta.notified_ms, beta.channel, beta.latency_ms) == (None, None, None)
    assert al.mean_time_to_notify_ms == 36_000
    assert al.median_time_to_notify_ms == 36_000


def test_silences_and_maintenance(report: Report) -> None:
    al = report.alerting
    assert [s.id for s in al.silences] == ["s1", "s3"]
    assert al.silences[1].matchers == "subject=~model:.*"
    assert al.silences[1].expired_ms == T0 + 21 * H
    got = [
        (m.name, m.starts_ms, m.ends_ms, m.subjects, m.incidents, m.source) for m in al.maintenance
    ]
    assert got == [
        ("nightly", T0 - H, T0 + 1_800_000, "the whole host", 0, "events"),
        ("upgrade", T0 + 9 * H, T0 + 11 * H, "model:alpha", 1, "events"),
        ("ghost", T0 + 15 * H, None, "", 1, "incidents"),
    ]


def test_planned_incidents_apart(report: Report) -> None:
    inc = report.incidents
    assert (inc.total, inc.in_maintenance, inc.unplanned) == (4, 2, 2)
    assert {r.id: r.maintenance for r in inc.rows} == {1: None, 2: None, 3: "upgrade", 4: "ghost"}
    assert inc.mttd_ms == (40_000 + 10_000) / 2  # incidents 3 and 4 left out
    assert inc.mttr_ms == 640_000 and inc.max_ttr_ms == 640_000  # not incident 3's 65 s
    assert inc.resolved_in_window == 2


def test_json_schema_and_renderings(report: Report, tmp_path: Path) -> None:
    doc = report.to_json()
    assert doc["schema_version"] == SCHEMA_VERSION == 5
    assert errors(doc, load_schema()) == []
    assert doc["alerting"]["first_notifications"][0]["latency_ms"] == 36_000
    md = render(report, "md")
    assert "Time from incident to first notification" in md and "| slack | 36.00 s |" in md
    html = render(report, "html")
    assert "<h2>Alerting</h2>" in html and "Noisiest rules" in html
    write_csv(report, tmp_path / "csv")
    pages = list(csv.DictReader((tmp_path / "csv" / "pages.csv").open()))
    assert [(r["channel"], r["delivered"]) for r in pages] == [("pager", "1"), ("slack", "3")]
    summary = dict(csv.reader((tmp_path / "csv" / "summary.csv").open()))
    assert summary["alerts_fired"] == "4" and summary["incidents_in_maintenance"] == "2"


def test_database_without_alert_tables(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE outbox")
    conn.close()
    ro = connect(db, readonly=True)
    try:
        r = build_report(ro, since_ms=T0, until_ms=UNTIL, generated_ms=UNTIL)
    finally:
        ro.close()
    assert r.alerting.fired == 0 and r.alerting.channels == ()
    assert "no alert tables" in (r.alerting.note or "")
    assert [m.name for m in r.alerting.maintenance] == ["nightly", "upgrade", "ghost"]
    assert errors(r.to_json(), load_schema()) == []
