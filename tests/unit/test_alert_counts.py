"""``alert_counts`` of ``/api/v1/status``: a host's alerts in disjoint groups (firing and
paging, silenced, in maintenance, pending), over a real silence book and maintenance calendar."""

from __future__ import annotations

from collections.abc import Iterable

from agent.alerting.maintenance import MaintenanceCalendar, MaintenanceWindow
from agent.alerting.silences import Matcher, SilenceBook
from agent.serve.alertsummary import AlertCounts, count_alerts
from storage.alerts import AlertRow
from storage.records import Event, make_labels

T0 = 1_700_000_000_000


def alert(
    n: int, state: str, severity: str = "warning", subject: str = "model:m1", **labels: str
) -> AlertRow:
    return AlertRow(
        id=n,
        fingerprint=f"fp{n}",
        rule="model_down",
        subject=subject,
        labels=make_labels({"alertname": "model_down", "severity": severity, **labels}),
        severity=severity,
        state=state,
        value=None,
        summary="",
        runbook_url="",
        pending_ms=T0,
        firing_ms=T0 if state != "pending" else None,
        resolved_ms=T0 if state == "resolved" else None,
        flapping=False,
        updated_ms=T0,
    )


def books(
    silenced: Iterable[str] = (), windows: Iterable[MaintenanceWindow] = ()
) -> tuple[SilenceBook, MaintenanceCalendar, list[Event]]:
    events: list[Event] = []
    silences = SilenceBook(None, events.append)
    for model in silenced:
        silences.create(
            [Matcher("model", "=", model)], duration_s=600, author="ann", comment="x", now_ms=T0
        )
    return silences, MaintenanceCalendar(windows, events.append), events


def test_nothing_counts_zero() -> None:
    silences, calendar, _ = books()
    counts = count_alerts([], silences, calendar, T0)
    assert counts == AlertCounts()
    assert counts.to_json() == {
        "firing": 0,
        "critical": 0,
        "silenced": 0,
        "maintenance": 0,
        "pending": 0,
    }


def test_groups_are_disjoint_and_critical_counts_only_what_pages() -> None:
    window = MaintenanceWindow(
        name="swap-gpu", duration_s=3600, starts_ms=T0 - 1000, subjects=("model:m4",)
    )
    silences, calendar, _ = books(silenced=["m2"], windows=[window])
    alerts = [
        alert(1, "firing", "critical", model="m1"),
        alert(2, "firing", "warning", subject="model:m5", model="m5"),
        # Muted: a silence on m2 (critical, still not paging), a window over m4.
        alert(3, "firing", "critical", subject="model:m2", model="m2"),
        alert(4, "firing", "critical", subject="model:m4", model="m4"),
        # Both a silence and a window: counted once, as silenced.
        alert(5, "firing", "warning", subject="model:m4", model="m2"),
        alert(6, "pending", "critical", model="m1"),
        alert(7, "resolved", "critical", model="m1"),  # not live: ignored
    ]
    counts = count_alerts(alerts, silences, calendar, T0)
    assert counts == AlertCounts(firing=2, critical=1, silenced=2, maintenance=1, pending=1)
    # Together the firing groups are what GET /api/v1/alerts?state=firing lists.
    firing = sum(1 for a in alerts if a.state == "firing")
    assert counts.firing + counts.silenced + counts.maintenance == firing


def test_a_silence_counts_only_while_in_force() -> None:
    silences, calendar, _ = books(silenced=["m1"])
    rows = [alert(1, "firing", "critical", model="m1")]
    assert count_alerts(rows, silences, calendar, T0).silenced == 1
    # Ten minutes on, the silence is over: the alert pages again.
    later = count_alerts(rows, silences, calendar, T0 + 600_000)
    assert (later.firing, later.critical, later.silenced) == (1, 1, 0)
    # Before it starts, too.
    assert count_alerts(rows, silences, calendar, T0 - 1).firing == 1


def test_a_window_covers_only_its_subjects_and_its_time() -> None:
    window = MaintenanceWindow(name="w", duration_s=60, starts_ms=T0, subjects=("process:*",))
    silences, calendar, _ = books(windows=[window])
    rows = [
        alert(1, "firing", subject="process:vllm", process="vllm"),
        alert(2, "firing", subject="model:m1", model="m1"),
    ]
    assert count_alerts(rows, silences, calendar, T0) == AlertCounts(firing=1, maintenance=1)
    assert count_alerts(rows, silences, calendar, T0 + 60_000) == AlertCounts(firing=2)
