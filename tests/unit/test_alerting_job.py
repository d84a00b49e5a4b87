"""The daemon's alerting job: restart continuity of groups, planned incidents, reloads."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from agent.alerting.engine import AlertEngine
from agent.alerting.maintenance import MaintenanceCalendar
from agent.alerting.notifier import Notifier
from agent.alerting.outbox_store import entry_for
from agent.alerting.router import Route
from agent.alerting.silences import SilenceBook
from agent.alerting.snapshot import Snapshot
from agent.config import AlertingConfig
from agent.config.alerting.builtin import BUILTIN_RULES
from agent.config.alerting.channels import WebhookSettings
from agent.config.alerting.windows import MaintenanceWindow
from agent.runtime.alerting_job import AlertingJob, Heartbeat, PlannedIncidents
from storage import outbox as outbox_sql
from storage.db import connect
from storage.records import AgentStatus, Event
from storage.writer import Writer
from tests.alerting_support import T0, model

ROUTE = Route(channel="ops", group_wait_s=0.0, group_interval_s=1.0)
DOWN = [r for r in BUILTIN_RULES if r.name == "model_down"]


def restarted(path: Path, *, with_outbox: bool) -> tuple[Notifier, AlertEngine, Writer, str]:
    """A first agent fires model_down for m1 and notifies (optionally writing the outbox); a
    second one loads the database and regroups."""
    writer = Writer(path, flush_interval_s=0.05)
    writer.start()
    events: list[Event] = []
    engine = AlertEngine(DOWN, writer, events.append)
    book = SilenceBook(writer, events.append)
    notifier = Notifier([ROUTE], book, MaintenanceCalendar((), events.append))
    snap = Snapshot(models=(model("m1", "down"),))
    (sent,) = notifier.step(T0, engine.evaluate(T0, snap), engine, snap)
    if with_outbox:
        writer.run_task(lambda conn: outbox_sql.enqueue(conn, [entry_for(sent)]))
    assert writer.flush()
    engine2 = AlertEngine(DOWN, writer, events.append)
    notifier2 = Notifier([ROUTE], book, MaintenanceCalendar((), events.append))
    conn = connect(path, readonly=True)
    try:
        engine2.load(conn)
        entries = outbox_sql.list_entries(conn)
    finally:
        conn.close()
    notifier2.restore(engine2.active(), (e.payload for e in entries), T0 + 5000)
    return notifier2, engine2, writer, sent.notification_id


def test_a_resolution_after_a_restart_is_delivered(tmp_path: Path) -> None:
    notifier, engine, writer, _ = restarted(tmp_path / "v.db", with_outbox=True)
    try:
        up = Snapshot(models=(model("m1", "up"),))
        at = T0 + 6000
        out = notifier.step(at, engine.evaluate(at, up), engine, up)
        assert [r.kind for r in out] == ["resolved"]  # not announced again: it was in the outbox
    finally:
        writer.close()


def test_a_firing_decided_but_not_written_is_announced_with_its_first_id(tmp_path: Path) -> None:
    notifier, engine, writer, first_id = restarted(tmp_path / "v.db", with_outbox=False)
    try:
        down = Snapshot(models=(model("m1", "down"),))
        at = T0 + 6000
        (again,) = notifier.step(at, engine.evaluate(at, down), engine, down)
        assert again.kind == "firing"
        assert again.notification_id == first_id
    finally:
        writer.close()


def test_an_evaluation_before_the_first_probe_after_a_restart_keeps_the_alert(
    tmp_path: Path,
) -> None:
    """A restarted agent's models are ``unknown`` until their first probe answers; an
    evaluation in between (a probe slower than the first evaluation: a timeout, jitter, a
    loaded host) must not take that for a recovery. It did: the loaded alert resolved (a
    resolved page), the probe's ``down`` opened a new occurrence, and the model was paged
    again under another id (issue 15, tests/integration/test_alerting_agent.py's kill -9 test:
    48 pages for 24 models)."""
    notifier, engine, writer, _ = restarted(tmp_path / "v.db", with_outbox=True)
    try:
        (loaded,) = engine.active()
        sent = []
        for i, state in enumerate(["unknown", "unknown", "down", "down"]):
            at = T0 + 6000 + i * 200
            snap = Snapshot(models=(model("m1", state),))
            transitions = engine.evaluate(at, snap)
            assert transitions == [], (state, transitions)
            sent += notifier.step(at, transitions, engine, snap)
        assert sent == []
        assert [(r.id, r.state, r.firing_ms) for r in engine.active()] == [
            (loaded.id, "firing", loaded.firing_ms)
        ]
        # The first probe's answer still decides: up resolves the same occurrence.
        up = Snapshot(models=(model("m1", "up"),))
        at = T0 + 7000
        (t,) = engine.evaluate(at, up)
        assert (t.kind, t.alert.id) == ("resolved", loaded.id)
        assert [r.kind for r in notifier.step(at, [t], engine, up)] == ["resolved"]
    finally:
        writer.close()


def test_an_unknown_model_opens_no_alert_unless_the_rule_asks_for_unknown(tmp_path: Path) -> None:
    """Not probed yet is no evidence either way; a rule that names ``unknown`` among its states
    (a model never answering its first probe) still sees it."""
    writer = Writer(tmp_path / "v.db", flush_interval_s=0.05)
    writer.start()
    try:
        stuck = dataclasses.replace(DOWN[0], name="model_unknown", states=("unknown",))
        engine = AlertEngine([*DOWN, stuck], writer, lambda e: None)
        snap = Snapshot(models=(model("m1", "unknown"),))
        assert [(t.kind, t.alert.rule) for t in engine.evaluate(T0, snap)] == [
            ("firing", "model_unknown")
        ]
    finally:
        writer.close()


def job(tmp_path: Path, config: AlertingConfig) -> tuple[AlertingJob, Writer]:
    writer = Writer(tmp_path / "v.db", flush_interval_s=0.05)
    writer.start()
    status = AgentStatus(host="h", version="1", started_ms=T0, now_ms=T0)
    incidents = PlannedIncidents(writer, writer.submit_one, lambda s, t: None)
    j = AlertingJob(
        config,
        writer=writer,
        emit=writer.submit_one,
        db_path=tmp_path / "v.db",
        status=lambda: status,
        incidents=incidents,
        links=lambda: {"m1": "srv"},
    )
    return j, writer


def test_incidents_inside_a_window_are_planned(tmp_path: Path) -> None:
    window = MaintenanceWindow(
        name="upgrade", duration_s=3600, starts_ms=T0, subjects=("process:srv",)
    )
    j, writer = job(tmp_path, AlertingConfig(maintenance=(window,)))
    try:
        # A model served by the process in maintenance is covered too.
        assert j.planned_reason("model:m1", T0 + 1000) == "maintenance: upgrade"
        assert j.planned_reason("model:m1", T0 + 3_600_000) is None
        assert j.planned_reason("model:other", T0 + 1000) is None
        book = PlannedIncidents(writer, writer.submit_one, j.planned_reason)
        inc = book.open("model:m1", "model_down", severity="critical", cause="x", opened_ms=T0 + 5)
        assert inc.evidence["planned"] == "maintenance: upgrade"
        later = book.open("model:m2", "model_down", severity="critical", cause="x", opened_ms=T0)
        assert "planned" not in later.evidence
    finally:
        writer.close()


def test_a_reload_keeps_unchanged_channels_and_takes_new_rules(tmp_path: Path) -> None:
    hook = WebhookSettings(name="hook", url="http://127.0.0.1:9/x")
    other = WebhookSettings(name="other", url="http://127.0.0.1:9/y")
    j, writer = job(tmp_path, AlertingConfig(channels=(hook, other)))

    async def reload() -> None:
        kept = j.sender.channels["hook"]
        await j.apply(
            AlertingConfig(
                rules=tuple(DOWN),
                channels=(hook,),
                routes=(Route(channel="hook"),),
                flap_transitions=6,
            )
        )
        assert j.sender.channels == {"hook": kept}
        assert set(j.sender.health) == {"hook"}
        assert [r.name for r in j.engine.rules] == ["model_down"]
        assert j.engine.flap_transitions == 6
        assert [r.channel for r in j.notifier.router.routes] == ["hook"]
        await j.sender.close()

    try:
        asyncio.run(reload())
    finally:
        writer.close()


def test_the_heartbeat_measures_a_blocked_loop() -> None:
    async def main() -> float:
        beat = Heartbeat(period_s=0.05)
        task = asyncio.create_task(beat.run())
        await asyncio.sleep(0.06)
        time.sleep(0.3)  # the loop is held: the tick due meanwhile wakes late
        await asyncio.sleep(0.1)
        task.cancel()
        return beat.take()

    late = asyncio.run(main())
    assert 0.2 <= late < 1.0
