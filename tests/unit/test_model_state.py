"""Model state rules and the incidents they open and resolve (real writer, real SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import ModelConfig
from agent.health.incidents import IncidentBook
from agent.health.monitor import ModelMonitor
from storage.db import connect
from storage.incidents import list_incidents
from storage.records import Event, ProbeRun
from storage.writer import Writer


@pytest.fixture
def book(tmp_path: Path) -> Iterator[tuple[IncidentBook, Writer, list[Event]]]:
    writer = Writer(tmp_path / "v.db")
    writer.start()
    events: list[Event] = []

    def emit(e: Event) -> None:
        events.append(e)
        writer.submit_one(e)

    yield IncidentBook(writer, emit), writer, events
    writer.close()


def run(ts: int, category: str = "ok", error: str | None = None, took_ms: int = 0) -> ProbeRun:
    """A run sent at ``ts`` whose outcome was observed ``took_ms`` later."""
    return ProbeRun(
        model="m",
        ts_ms=ts,
        ok=category == "ok",
        category=category,
        e2e_ms=5.0,
        error=error,
        end_ms=ts + took_ms,
    )


def monitor(**kw: object) -> ModelMonitor:
    return ModelMonitor(ModelConfig(name="m", protocol="tcp", url="tcp://127.0.0.1:9", **kw))  # type: ignore[arg-type]


def test_one_failure_degrades_two_mean_down_and_ok_recovers(book) -> None:
    inc, writer, events = book
    mon = monitor()
    states = []
    for ts, cat in [
        (1000, "ok"),
        (2000, "refused"),
        (3000, "timeout"),
        (4000, "timeout"),
        (5000, "ok"),
    ]:
        mon.record(run(ts, cat, None if cat == "ok" else f"{cat} happened"), events.append, inc)
        states.append(mon.state)
    assert states == ["up", "degraded", "down", "down", "up"]
    changes = [(e.data["from"], e.data["to"]) for e in events if e.kind == "model.state_changed"]
    assert changes == [("unknown", "up"), ("up", "degraded"), ("degraded", "down"), ("down", "up")]
    assert writer.flush()
    conn = connect(writer.path, readonly=True)
    [incident] = list_incidents(conn)
    conn.close()
    assert incident.kind == "model_down" and incident.severity == "critical"
    assert incident.state == "resolved" and incident.resolved_by == "auto"
    assert incident.opened_ms == 3000 and incident.resolved_ms == 5000
    # Recovery is measured from the first failed request, when the fault was there to be seen.
    assert incident.began_ms == 2000 and incident.ttr_ms == 3000
    assert incident.evidence["failing_since_ms"] == 2000
    assert "timeout happened" in incident.cause
    kinds = [e.kind for e in events if e.kind.startswith("incident.")]
    assert kinds == ["incident.opened", "incident.resolved"]


def test_down_threshold_is_configurable(book) -> None:
    inc, _, events = book
    mon = monitor(down_after_failures=1)
    mon.record(run(1, "refused", "x"), events.append, inc)
    assert mon.state == "down"
    assert [i.kind for i in inc.open_incidents()] == ["model_down"]


def test_degraded_opens_an_incident_only_when_it_lasts(book) -> None:
    inc, _, events = book
    mon = monitor(incident_after_degraded_s=60.0)
    mon.record(run(0, "ok"), events.append, inc)
    mon.record(run(10_000, "slow", "12.0 ms, over max_latency (5 ms)"), events.append, inc)
    mon.record(run(40_000, "slow", "again"), events.append, inc)
    assert mon.state == "degraded" and inc.open_incidents() == []
    mon.record(run(70_000, "wrong_output", "output does not contain 'x'"), events.append, inc)
    [opened] = inc.open_incidents()
    assert opened.kind == "model_degraded" and opened.severity == "warning"
    # Opened when it was judged; the degradation began with the first slow request.
    assert opened.opened_ms == 70_000 and opened.began_ms == 10_000
    mon.record(run(80_000, "ok"), events.append, inc)
    assert inc.open_incidents() == []


def test_soft_failures_never_count_towards_down(book) -> None:
    inc, _, events = book
    mon = monitor()
    for ts, cat in [(1, "refused"), (2, "slow"), (3, "refused")]:
        mon.record(run(ts, cat, "e"), events.append, inc)
    assert mon.state == "degraded"


def test_operator_acknowledges_and_resolves(book) -> None:
    inc, writer, _ = book
    opened = inc.open("model:m", "model_down", severity="critical", cause="refused")
    again = inc.open("model:m", "model_down", severity="critical", cause="refused again")
    assert again.id == opened.id  # one incident per subject and kind while it lasts
    acked = inc.acknowledge(opened.id, "alice@laptop")
    assert acked is not None and acked.state == "acknowledged"
    assert acked.acknowledged_by == "alice@laptop"
    done = inc.resolve_by_id(opened.id, "alice@laptop")
    assert done is not None and done.state == "resolved" and done.ttr_ms is not None
    assert inc.resolve_by_id(opened.id, "bob") is None
    assert writer.flush()
    # A restarted agent picks up the id counter and the open incidents.
    second = inc.open("model:n", "model_down", severity="critical", cause="x")
    assert writer.flush()
    fresh = IncidentBook(writer, lambda e: None)
    conn = connect(writer.path, readonly=True)
    fresh.load(conn)
    conn.close()
    assert [i.id for i in fresh.open_incidents()] == [second.id]
    assert fresh.open("model:o", "model_down", severity="critical", cause="y").id == second.id + 1


async def test_api_key_is_scrubbed_from_errors() -> None:
    mon = ModelMonitor(
        ModelConfig(
            name="m",
            protocol="http",
            url="http://127.0.0.1:9/",
            timeout_s=0.5,
            api_key="sk-secret-123",
        )
    )

    class Echo:
        async def run(self, session: object) -> ProbeRun:
            return run(1, "http_error", "401: bad key sk-secret-123 for user")

    mon.probe.run = Echo().run  # type: ignore[method-assign]
    result = await mon.run_once(None)  # type: ignore[arg-type]
    assert "sk-secret-123" not in (result.error or "")
    assert "***" in (result.error or "")


def test_state_changes_and_incidents_are_stamped_when_observed(book) -> None:
    """A frozen server: requests hang until their timeout (5 s) and the one out when the
    server wakes is answered then. Times are the observations, not the requests' starts."""
    inc, writer, events = book
    mon = monitor()
    mon.record(run(0, "ok", took_ms=10), events.append, inc)
    mon.record(run(1_000, "timeout", "no answer", took_ms=5_000), events.append, inc)
    mon.record(run(7_000, "timeout", "no answer", took_ms=5_000), events.append, inc)
    assert mon.state == "down" and mon.since_ms == 12_000
    mon.record(run(13_000, "ok", took_ms=3_000), events.append, inc)  # woke at 16 s
    assert mon.state == "up" and mon.since_ms == 16_000
    changes = [(e.ts_ms, e.data["to"]) for e in events if e.kind == "model.state_changed"]
    assert changes == [(10, "up"), (6_000, "degraded"), (12_000, "down"), (16_000, "up")]
    assert writer.flush()
    conn = connect(writer.path, readonly=True)
    [incident] = list_incidents(conn)
    conn.close()
    assert (incident.began_ms, incident.opened_ms, incident.resolved_ms) == (1_000, 12_000, 16_000)
    assert incident.ttr_ms == 15_000  # the outage: first unanswered request to the answer
    stamps = {e.kind: e.ts_ms for e in events if e.kind.startswith("incident.")}
    assert stamps == {"incident.opened": 12_000, "incident.resolved": 16_000}


def test_planned_start_failures_open_nothing_and_are_marked(book) -> None:
    inc, _, events = book
    mon = monitor()
    mon.begin_planned("agent start", False, 100, events.append)
    assert mon.state == "starting" and mon.status().planned == "agent start"
    stored = [
        mon.record(run(ts, "refused", "cannot connect"), events.append, inc)
        for ts in (200, 450, 700, 950)
    ]
    assert all(r.planned for r in stored)
    assert mon.state == "starting" and inc.open_incidents() == []
    good = mon.record(run(1_200, "ok", took_ms=30), events.append, inc)
    assert not good.planned and mon.state == "up" and mon.since_ms == 1_230
    mon.end_planned(1_230, events.append, book=inc)
    changes = [(e.ts_ms, e.data["to"]) for e in events if e.kind == "model.state_changed"]
    assert changes == [(100, "starting"), (1_230, "up")]
    # After the window, failures count again.
    mon.record(run(2_000, "refused", "x"), events.append, inc)
    mon.record(run(3_000, "refused", "x"), events.append, inc)
    assert mon.state == "down" and [i.kind for i in inc.open_incidents()] == ["model_down"]


def test_a_start_that_misses_its_gate_is_an_outage_from_the_deadline(book) -> None:
    inc, _, events = book
    mon = monitor()
    mon.begin_planned("restart by alice", False, 1_000, events.append)
    mon.record(run(1_100, "refused", "x"), events.append, inc)
    mon.end_planned(31_000, events.append, failed="not ready within 30s", book=inc)
    assert mon.state == "down" and mon.since_ms == 31_000
    [opened] = inc.open_incidents()
    assert opened.kind == "model_down" and opened.began_ms == opened.opened_ms == 31_000
    later = mon.record(run(32_000, "refused", "x"), events.append, inc)
    assert not later.planned
    mon.record(run(40_000, "ok", took_ms=5), events.append, inc)
    assert inc.open_incidents() == []


def test_a_planned_restart_does_not_hide_an_outage_in_progress(book) -> None:
    inc, _, events = book
    mon = monitor()
    mon.record(run(0, "ok"), events.append, inc)
    mon.record(run(1_000, "refused", "x"), events.append, inc)
    mon.record(run(2_000, "refused", "x"), events.append, inc)
    assert mon.state == "down"
    mon.begin_planned("restart by bob", False, 2_500, events.append)
    assert mon.state == "down"
    assert not mon.record(run(3_000, "refused", "x"), events.append, inc).planned
    [still] = inc.open_incidents()
    mon.record(run(4_000, "ok", took_ms=10), events.append, inc)
    assert inc.open_incidents() == [] and still.began_ms == 1_000


def test_an_operator_stop_is_planned_and_slow_answers_are_not_masked(book) -> None:
    inc, _, events = book
    mon = monitor()
    mon.record(run(0, "ok"), events.append, inc)
    mon.begin_planned("stop by carol", True, 500, events.append)
    assert mon.state == "stopped"
    assert mon.record(run(1_000, "refused", "x"), events.append, inc).planned
    assert mon.state == "stopped" and inc.open_incidents() == []
    # An answer, even a bad one, is the server speaking: judged as usual.
    assert not mon.record(run(2_000, "slow", "slow"), events.append, inc).planned
    assert mon.state == "degraded"
