"""The alert engine: lifecycle, for/clear_for, hysteresis, flapping, storage and audit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from agent.alerting.builtin import effective_rules
from agent.alerting.engine import AlertEngine
from agent.alerting.rules import Aggregation, Rule, SourceKind
from agent.alerting.snapshot import AgentSignals, Snapshot
from storage.db import open_database
from storage.records import make_labels
from tests.alerting_support import T0, Bench, FnSeries, model

S = 1000


def mem_rule(**kw: object) -> Rule:
    return Rule(
        name="mem",
        kind=SourceKind.SERIES,
        series="host.mem.percent",
        aggregation=Aggregation.LAST,
        window_s=10,
        op=">",
        threshold=90,
        summary="memory {value:.0f}% > {threshold:.0f}%",
        **kw,  # type: ignore[arg-type]
    )


def constant(value: float) -> Callable[[int], float]:
    return lambda _t: value


def run(bench: Bench, values: Sequence[float], step_s: int = 10) -> list[tuple[int, str]]:
    """Feed one value per step; the (second, transition) pairs decided."""
    out = []
    for i, v in enumerate(values):
        at = T0 + i * step_s * S
        snap = Snapshot(series=FnSeries("host.mem.percent", (), constant(v)))
        out += [((t.at_ms - T0) // S, t.kind) for t in bench.tick(at, snap)]
    return out


def test_for_holds_pending_then_fires_and_clear_for_holds_the_resolution(tmp_path: Path) -> None:
    bench = Bench(tmp_path, [mem_rule(for_s=30, clear_for_s=20)])
    try:
        got = run(bench, [95, 95, 95, 95, 50, 95, 50, 50, 50, 50])
        # pending at 0, firing once it held 30 s; the dip at 40 s is shorter than clear_for.
        assert got == [(0, "pending"), (30, "firing"), (80, "resolved")]
        rows = bench.read("SELECT state, pending_ms, firing_ms, resolved_ms FROM alerts")
        assert rows == [("resolved", T0, T0 + 30 * S, T0 + 80 * S)]
        assert bench.kinds("alert.") == ["alert.pending", "alert.firing", "alert.resolved"]
        firing = next(e for e in bench.events if e.kind == "alert.firing")
        assert firing.ts_ms == T0 + 30 * S  # stamped when decided
        assert firing.message == "mem firing: memory 95% > 90%"
    finally:
        bench.close()


def test_a_tick_that_wakes_a_few_ms_early_still_fires_on_time(tmp_path: Path) -> None:
    bench = Bench(tmp_path, [mem_rule(for_s=30)])
    try:
        snap = Snapshot(series=FnSeries("host.mem.percent", (), constant(95)))
        assert [t.kind for t in bench.tick(T0, snap)] == ["pending"]
        # The tick meant for 30 s woke 3 ms early: `for` has held, within the tolerance.
        assert [t.kind for t in bench.tick(T0 + 30 * S - 3, snap)] == ["firing"]
    finally:
        bench.close()


def test_a_pending_alert_that_lapses_never_fires(tmp_path: Path) -> None:
    bench = Bench(tmp_path, [mem_rule(for_s=30)])
    try:
        assert run(bench, [95, 95, 50, 50]) == [(0, "pending"), (20, "resolved")]
        assert bench.sent == []
    finally:
        bench.close()


def test_hysteresis_keeps_firing_between_the_thresholds(tmp_path: Path) -> None:
    bench = Bench(tmp_path, [mem_rule(clear_threshold=85)])
    try:
        got = run(bench, [95, 88, 86, 91, 87, 84, 88, 89])
        # Fires above 90; 86-89 is above the clear threshold, so it stays; 84 clears it;
        # 88-89 do not pass 90 again, so it does not fire again.
        assert got == [(0, "firing"), (50, "resolved")]
    finally:
        bench.close()


def test_flapping_is_marked_and_settles(tmp_path: Path) -> None:
    bench = Bench(tmp_path, [mem_rule()], flap_window_s=600, flap_transitions=4)
    try:
        got = run(bench, [95, 50] * 3 + [50] * 70, step_s=30)
        assert got[:5] == [
            (0, "firing"),
            (30, "resolved"),
            (60, "firing"),
            (90, "resolved"),
            (90, "flapping"),
        ]
        assert got[-1] == (150 + 600, "settled")  # a whole window without a flip
        flags = [e.data["state"] for e in bench.events if e.kind == "alert.flapping"]
        assert flags == ["flapping", "settled"]
    finally:
        bench.close()


def test_alerts_survive_an_agent_restart(tmp_path: Path) -> None:
    bench = Bench(tmp_path, [mem_rule(for_s=60)])
    try:
        run(bench, [95, 95])
        assert bench.writer.flush()
    finally:
        bench.close()
    conn = open_database(tmp_path / "vigil.db")
    again = AlertEngine([mem_rule(for_s=60)], None, lambda e: None)
    again.load(conn)
    [row] = again.active()
    assert row.state == "pending" and row.pending_ms == T0
    snap = Snapshot(series=FnSeries("host.mem.percent", (), lambda _t: 95.0))
    [t] = again.evaluate(T0 + 60 * S, snap)
    assert (t.kind, t.alert.id) == ("firing", row.id)  # the same occurrence, not a new one


def test_state_drift_agent_and_series_sources(tmp_path: Path) -> None:
    rules, _ = effective_rules()
    bench = Bench(tmp_path, rules)
    try:
        used = {0: 50.0, 600: 60.0, 1200: 70.0}

        def disk(t: int) -> float:
            return used.get((t - T0) // S, 70.0)

        class Disk(FnSeries):
            def points(self, name, labels, since_ms, until_ms):  # type: ignore[no-untyped-def]
                if name == "host.disk.total_bytes":
                    return [(until_ms, 100.0)]
                return [(T0 + s * S, v) for s, v in used.items()]

        series = Disk("host.disk.used_bytes", make_labels(mount="/"), disk)
        m = model("llama", "up")
        m = type(m)(**{**m.to_json(), "last_run": None, "drift": {"latency": T0}})
        snap = Snapshot(
            models=(m,),
            agent=AgentSignals(storage_ok=False, storage_error="disk I/O error", watchdog_late_s=9),
            series=series,
        )
        got = {(t.alert.rule, t.kind) for t in bench.tick(T0 + 1200 * S, snap)}
        assert got == {
            ("drift_detected", "firing"),
            ("watchdog_late", "firing"),
            ("storage_failing", "pending"),
            ("disk_filling", "pending"),  # 30 left at 10 per 600 s: full in 1800 s < 6 h
        }
        disk_alert = next(a for a in bench.engine.active() if a.rule == "disk_filling")
        assert dict(disk_alert.labels)["mount"] == "/"
        assert disk_alert.value == 1800.0
        assert disk_alert.subject == "host"
    finally:
        bench.close()
