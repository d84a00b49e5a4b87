"""Notifications: one per transition per route, grouped, folded, silenced, muted in
maintenance, and flap-controlled. The counts are the issue's acceptance checks."""

from __future__ import annotations

from pathlib import Path

from agent.alerting.builtin import effective_rules
from agent.alerting.maintenance import MaintenanceWindow
from agent.alerting.model import NotificationRequest
from agent.alerting.router import Route
from agent.alerting.rules import Aggregation, Rule, SourceKind
from agent.alerting.silences import Matcher
from agent.alerting.snapshot import Snapshot
from storage.records import Incident
from tests.alerting_support import T0, Bench, FnSeries, model, process

S = 1000
HOUR_S = 3600


def kinds(sent: list[NotificationRequest]) -> list[str]:
    return [n.kind.value for n in sent]


def test_a_flapping_signal_sends_at_most_two_notifications_in_an_hour(tmp_path: Path) -> None:
    rule = Rule(
        name="mem",
        kind=SourceKind.SERIES,
        series="host.mem.percent",
        aggregation=Aggregation.LAST,
        window_s=10,
        op=">",
        threshold=90,
    )
    route = Route(channel="ops", group_wait_s=10, group_interval_s=300)
    bench = Bench(tmp_path, [rule], routes=[route])

    def signal(t: int) -> float:  # crosses its threshold every 30 s
        return 95.0 if ((t - T0) // (30 * S)) % 2 == 0 else 50.0

    hot = Snapshot(series=FnSeries("host.mem.percent", (), signal))
    try:
        for s in range(0, HOUR_S, 10):
            bench.tick(T0 + s * S, hot)
        # A naive rule notifies each firing: 60 in the hour. This one: the first firing, then
        # "flapping" once, and nothing more while it flaps.
        assert bench.kinds("alert.firing").count("alert.firing") == 60
        assert kinds(bench.sent) == ["firing", "flapping"]
        # Once it settles (a quiet window), its state then is said once: resolved.
        calm = Snapshot(series=FnSeries("host.mem.percent", (), lambda _t: 50.0))
        for s in range(HOUR_S, HOUR_S + 1800, 10):
            bench.tick(T0 + s * S, calm)
        assert kinds(bench.sent) == ["firing", "flapping", "resolved"]
        ids = [n.notification_id for n in bench.sent]
        assert len(set(ids)) == 3
        assert len({n.dedup_key for n in bench.sent}) == 1
    finally:
        bench.close()


def outage(at_s: int, down: bool) -> Snapshot:
    """A process crashed (or back) with three models on it, and the incidents it opened."""
    models = ("a", "b", "c")
    incidents: tuple[Incident, ...] = ()
    if down:
        root = Incident(1, "process:srv", "process_exited", "warning", "exit 1", "open", T0)
        incidents = (
            root,
            *(
                Incident(
                    2 + i, f"model:{m}", "model_down", "critical", "refused", "open", T0, root_id=1
                )
                for i, m in enumerate(models)
            ),
        )
    return Snapshot(
        models=tuple(model(m, "down" if down and at_s >= 5 else "up") for m in models),
        processes=(process("srv", "backoff" if down else "running", restarts=1),),
        incidents=incidents,
        links={m: "srv" for m in models},
    )


def test_a_dependency_outage_is_one_grouped_message_and_its_resolution(tmp_path: Path) -> None:
    rules, _ = effective_rules()
    route = Route(channel="ops", group_wait_s=30, group_interval_s=60)
    bench = Bench(tmp_path, rules, routes=[route])
    try:
        for s in range(0, 180, 5):
            bench.tick(T0 + s * S, outage(s, down=s < 60))
        assert kinds(bench.sent) == ["firing", "resolved"]
        first, last = bench.sent
        root = next(a for a in first.alerts if a.folded_under is None)
        assert root.rule == "process_down"
        folded = [a for a in first.alerts if a.folded_under is not None]
        assert sorted(dict(a.labels)["model"] for a in folded) == ["a", "b", "c"]
        assert {a.folded_under for a in folded} == {root.fingerprint}
        assert first.title.endswith("(+3 depending on it)")
        assert {a.status for a in last.alerts} == {"resolved"} and len(last.alerts) == 4
        # Folding changed the messages only: every alert was recorded and resolved.
        rows = bench.read("SELECT rule, state FROM alerts ORDER BY id")
        assert rows == [("process_down", "resolved")] + [("model_down", "resolved")] * 3
    finally:
        bench.close()


def test_without_the_incidents_the_models_are_their_own_group(tmp_path: Path) -> None:
    rules, _ = effective_rules()
    bench = Bench(tmp_path, rules, routes=[Route(channel="ops", group_wait_s=30)])
    try:
        for s in range(0, 60, 5):
            snap = outage(s, down=True)
            bench.tick(T0 + s * S, Snapshot(models=snap.models, processes=snap.processes))
        assert [n.title for n in bench.sent] == [
            "[FIRING:1] alertname=process_down",
            "[FIRING:3] alertname=model_down",
        ]
    finally:
        bench.close()


def test_a_silence_mutes_and_expires_by_itself(tmp_path: Path) -> None:
    rule = Rule(name="model_down", kind=SourceKind.MODEL_STATE, states=("down",))
    bench = Bench(tmp_path, [rule], routes=[Route(channel="ops", group_wait_s=30)])
    try:
        silence = bench.silences.create(
            [Matcher.parse("alertname=model_down"), Matcher.parse("model=~ll.*")],
            duration_s=600,
            author="alice",
            comment="upgrading llama",
            now_ms=T0,
        )
        for s in range(0, 1500, 10):
            bench.tick(T0 + s * S, Snapshot(models=(model("llama", "down" if s < 1200 else "up"),)))
            if s < 600:
                assert bench.sent == []
        # The silence ended at 600 s; the alert, still firing, went out at the group's next
        # tick (630 s), and its resolution after the model came back.
        assert kinds(bench.sent) == ["firing", "resolved"]
        assert bench.sent[0].created_ms == T0 + 630 * S
        expired = [e for e in bench.events if e.kind == "silence.expired"]
        assert [(e.ts_ms, e.data["by"]) for e in expired] == [(T0 + 600 * S, "time")]
        assert bench.kinds("silence.") == ["silence.created", "silence.expired"]
        rows = bench.read("SELECT id, author, expired_ms, expired_by FROM silences")
        assert rows == [(silence.id, "alice", T0 + 600 * S, "time")]
        assert bench.kinds("alert.") == ["alert.firing", "alert.resolved"]  # still recorded
    finally:
        bench.close()


def test_a_maintenance_window_mutes_and_its_incidents_are_planned(tmp_path: Path) -> None:
    window = MaintenanceWindow(
        name="upgrade", duration_s=600, starts_ms=T0, subjects=("process:srv",), notify=True
    )
    rules, _ = effective_rules()
    bench = Bench(tmp_path, rules, routes=[Route(channel="ops", group_wait_s=30)], windows=[window])
    try:
        for s in range(0, 900, 5):
            bench.tick(T0 + s * S, outage(s, down=60 <= s < 300))
        # The daemon asks this when it opens an incident: inside, the incident is planned.
        assert bench.calendar.in_maintenance("process:srv", T0 + 120 * S) is window
        assert bench.calendar.in_maintenance("process:other", T0 + 120 * S) is None
        assert bench.calendar.in_maintenance("process:srv", T0 + 600 * S) is None
        # Only the window's own notices went out; the alerts (the process's, and its models'
        # through the dependency) were muted, yet recorded.
        assert kinds(bench.sent) == ["maintenance_start", "maintenance_end"]
        assert [n.created_ms for n in bench.sent] == [T0, T0 + 600 * S]
        assert bench.kinds("alert.firing") == ["alert.firing"] * 4
        assert bench.kinds("maintenance.") == ["maintenance.started", "maintenance.ended"]
    finally:
        bench.close()


def test_groups_follow_alertmanager_timers(tmp_path: Path) -> None:
    rule = Rule(name="model_down", kind=SourceKind.MODEL_STATE, states=("down",))
    route = Route(
        channel="ops",
        group_wait_s=30,
        group_interval_s=300,
        repeat_interval_s=3600,
        severities=("warning",),
    )
    pager = Route(channel="pager", severities=("critical",))
    bench = Bench(tmp_path, [rule], routes=[route, pager])
    try:
        for s in range(0, 2 * HOUR_S, 10):
            states = ["down" if s >= 0 else "up", "down" if s >= 100 else "up"]
            bench.tick(T0 + s * S, Snapshot(models=(model("a", states[0]), model("b", states[1]))))
        at = [((n.created_ms - T0) // S, len(n.alerts)) for n in bench.sent]
        # group_wait 30 s: a alone; b joined at 100 s, sent at the next interval (330 s);
        # then unchanged: repeated after repeat_interval (3930 s); the next tick past 2 h ends it.
        assert at == [(30, 1), (330, 2), (3930, 2)]
        assert all(n.channel == "ops" for n in bench.sent)  # warning: not the pager's
    finally:
        bench.close()
