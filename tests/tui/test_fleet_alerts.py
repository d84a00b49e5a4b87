"""Alerts in the fleet view: each row's count of firing alerts (critical ones badged, muted ones
apart), read from the ``alert_counts`` of ``/api/v1/status``; sorting by it; the summary line's
hosts alerting. Unit tests of the pieces, then Pilot against fake agents."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from storage.records import ModelStatus, ProcessStatus
from tests.fakes.agent_api import TOKEN, sample_status
from tests.fakes.fleet_agents import FleetFake, gpu_status
from tests.tui.test_fleet_screen import fleet, order, rows, summary, wait_for
from tui.app import FleetApp
from tui.fleet import FleetEntry
from tui.remote.client import AgentError
from tui.view.fleetcells import CRITICAL_STYLE, MUTED_STYLE, alerting_text, alerts_text
from tui.view.fleetsummary import HostAlerts, read_alerts, summarize
from tui.view.fleetview import FleetMember, filter_words, matches, sort_members

PAGING = {"firing": 2, "critical": 1, "silenced": 1, "maintenance": 0, "pending": 0}
"""Two alerts firing, one of them critical, and one more firing under a silence."""


def healthy(host: str = "h", counts: Any = None) -> dict[str, Any]:
    """A status with nothing wrong but its alerts (``counts``: the ``alert_counts``)."""
    now = sample_status().now_ms
    status = replace(
        sample_status(host),
        models=(ModelStatus("m", "http", "u", "up", now),),
        processes=(ProcessStatus("p", "running", now),),
    ).to_json()
    if counts is not None:
        status["alert_counts"] = counts
    return status


# --- reading the counts -------------------------------------------------------------------


def test_counts_are_read_from_the_status() -> None:
    assert read_alerts(healthy(counts=PAGING)) == HostAlerts(2, 1, 1, 0, 0)
    assert HostAlerts(2, 1, 1, 3, 0).muted == 4
    # Groups a later agent may leave out count as none; firing and critical are required.
    assert read_alerts({"alert_counts": {"firing": 1, "critical": 0}}) == HostAlerts(firing=1)


@pytest.mark.parametrize(
    "counts",
    [
        None,  # an agent older than alerting
        [1, 0],
        "[b]2[/b]",
        {"firing": 1},
        {"critical": 0},
        {"firing": "2", "critical": 0},
        {"firing": 2.0, "critical": 0},
        {"firing": True, "critical": False},
        {"firing": -1, "critical": 0},
        {"firing": 1, "critical": 2},  # more critical than firing: not a count we trust
        {"firing": 1, "critical": 0, "silenced": "[red]x"},
    ],
)
def test_anything_but_whole_counts_is_unknown(counts: Any) -> None:
    status = healthy(counts=counts) if counts is not None else healthy()
    assert read_alerts(status) is None
    s = summarize(status)
    assert (s.alerts, s.health) == (None, "ok")  # the row stays; the cell says "?"
    assert alerts_text(s.alerts).plain == "?"


def test_a_host_with_alerts_firing_is_degraded_and_muted_ones_leave_it_ok() -> None:
    s = summarize(healthy(counts=PAGING))
    assert (s.health, s.reasons) == ("degraded", ("2 alerts firing (1 critical)",))
    one = summarize(healthy(counts={"firing": 1, "critical": 0}))
    assert one.reasons == ("1 alert firing",)
    muted = summarize(healthy(counts={"firing": 0, "critical": 0, "silenced": 3}))
    assert (muted.health, muted.reasons) == ("ok", ())
    assert muted.alerts == HostAlerts(silenced=3)


# --- the cell, the sort, the summary line -------------------------------------------------


def spans(text: Any) -> dict[str, str]:
    """Each styled piece of a cell: its text -> its style."""
    return {text.plain[s.start : s.end]: str(s.style) for s in text.spans}


def test_the_cell() -> None:
    assert (alerts_text(None).plain, str(alerts_text(None).style)) == ("?", "dim")
    nothing = alerts_text(HostAlerts())
    assert (nothing.plain, str(nothing.style), nothing.justify) == ("0", "dim", "right")
    warn = alerts_text(HostAlerts(firing=3))
    assert (warn.plain, spans(warn)) == ("3", {"3": "bold yellow"})
    paging = alerts_text(HostAlerts(2, 1, 1, 0, 0))
    assert (paging.plain, paging.justify) == ("2 !1 +1", "right")
    assert spans(paging) == {"2": "bold red", "!1": CRITICAL_STYLE, " +1": MUTED_STYLE}
    assert not str(paging.style)  # nothing styles the whole cell: the muted part stays dim
    muted = alerts_text(HostAlerts(silenced=1, maintenance=1))
    assert (muted.plain, spans(muted)) == ("0 +2", {"0": "dim", " +2": MUTED_STYLE})


def member(name: str, counts: Any = None, error: bool = False) -> FleetMember:
    m = FleetMember(FleetEntry(name, "http://127.0.0.1:9", TOKEN, timeout_s=1.0))
    m.summary = summarize(healthy(name, counts))
    if error:
        m.error = AgentError("down", "unreachable")
    return m


def test_sorting_by_alerts_puts_critical_then_firing_then_muted_first() -> None:
    members = [
        member("none", {"firing": 0, "critical": 0}),
        member("old"),  # does not count its alerts: last
        member("muted", {"firing": 0, "critical": 0, "silenced": 2}),
        member("warn", {"firing": 5, "critical": 0}),
        member("crit", {"firing": 1, "critical": 1}),
        member("crit2", {"firing": 2, "critical": 2}),
    ]
    got = [m.name for m in sort_members(members, "alerts", 0.0)]
    assert got == ["crit2", "crit", "warn", "muted", "none", "old"]
    reverse = [m.name for m in sort_members(members, "alerts", 0.0, reverse=True)]
    assert reverse == ["none", "muted", "warn", "crit", "crit2", "old"]


def test_the_summary_line_counts_hosts_alerting_now() -> None:
    assert alerting_text([member("a"), member("b", {"firing": 0, "critical": 0})]).plain == ""
    text = alerting_text(
        [
            member("crit", PAGING),
            member("warn", {"firing": 1, "critical": 0}),
            member("muted", {"firing": 0, "critical": 0, "silenced": 1}),
            # Unreachable now: its last counts are not news, its state is.
            member("gone", PAGING, error=True),
        ]
    )
    assert text.plain == "  2 alerting (1 critical)"
    assert spans(text)["2 alerting"] == "bold red"
    assert spans(text)["1 critical"] == CRITICAL_STYLE
    warn_only = alerting_text([member("warn", {"firing": 1, "critical": 0})])
    assert (warn_only.plain, spans(warn_only)["1 alerting"]) == ("  1 alerting", "bold yellow")


def test_the_filter_finds_hosts_by_their_alerts() -> None:
    crit, calm = member("a", PAGING), member("b", {"firing": 0, "critical": 0})
    words = filter_words("critical")
    assert matches(crit, words, 0.0) and not matches(calm, words, 0.0)


# --- the screen against fake agents -------------------------------------------------------


async def test_a_row_shows_its_hosts_firing_alerts() -> None:
    agents = [
        FleetFake(status=gpu_status("host-a"), alert_counts=PAGING),
        FleetFake(status=gpu_status("host-b"), alert_counts={"firing": 0, "critical": 0}),
        FleetFake(status=gpu_status("host-c")),  # older than alerting
    ]
    for agent in agents:
        await agent.start()
    try:
        entries = [
            FleetEntry(f"agent-{'abc'[i]}", f.url, TOKEN, timeout_s=2.0)
            for i, f in enumerate(agents)
        ]
        app = FleetApp([FleetMember(e) for e in entries], refresh_s=0.25)
        async with app.run_test(size=(160, 20)) as pilot:
            await wait_for(pilot, lambda: len(rows(app)) == 3 and rows(app)["agent-c"][3] != "-")
            got = rows(app)
            assert [got[k][2] for k in ("agent-a", "agent-b", "agent-c")] == ["2 !1 +1", "0", "?"]
            cell = fleet(app).table.get_row("agent-a")[2]
            assert spans(cell) == {"2": "bold red", "!1": CRITICAL_STYLE, " +1": MUTED_STYLE}
            first = app.members[0].summary
            assert first is not None and first.reasons[-1] == "2 alerts firing (1 critical)"
            assert "1 alerting (1 critical)" in summary(app)

            # Sorting by alerts (the third key) puts the paging host first.
            fleet(app).sort_key = "alerts"
            assert order(app) == ["agent-a", "agent-b", "agent-c"]
            fleet(app).sort_reverse = True
            assert order(app) == ["agent-b", "agent-a", "agent-c"]  # unknown stays last

            # It resolves: the next poll says so, and the summary line drops it.
            agents[0].alert_counts = {"firing": 0, "critical": 0, "silenced": 1}
            await wait_for(pilot, lambda: rows(app)["agent-a"][2] == "0 +1")
            assert "alerting" not in summary(app)
            # Counts that are not counts (here markup) show as unknown, never as markup.
            agents[0].alert_counts = {"firing": "[@click=app.quit]", "critical": 0}
            await wait_for(pilot, lambda: rows(app)["agent-a"][2] == "?")
            assert app.is_running
    finally:
        for agent in agents:
            await agent.stop()
