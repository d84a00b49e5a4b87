"""The fleet screen, driven by Pilot against fake agents: rows, sorting, filtering, opening a
host, and staying responsive while an agent hangs or is gone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.fakes.agent_api import TOKEN
from tests.fakes.fleet_agents import FleetFake, gpu_status
from tui.app import FleetApp
from tui.fleet import FleetEntry
from tui.screens.fleet import FleetScreen
from tui.screens.host import HostScreen
from tui.view.fleetview import FleetMember

REFRESH_S = 0.25


@pytest.fixture
async def fakes() -> AsyncIterator[list[FleetFake]]:
    agents = [
        FleetFake(status=gpu_status("host-a", util=10.0, cpu=70.0), ttft_p95={"m": 300.0}),
        FleetFake(status=gpu_status("host-b", util=90.0, cpu=10.0), ttft_p95={"m": 100.0}),
        FleetFake(status=gpu_status("host-c", util=50.0, cpu=40.0), open_incidents=3),
    ]
    for agent in agents:
        await agent.start()
    try:
        yield agents
    finally:
        for agent in agents:
            await agent.stop()


def make_app(fakes: list[FleetFake], *extra: FleetEntry, timeout_s: float = 2.0) -> FleetApp:
    entries = [
        FleetEntry(f"agent-{'abc'[i]}", f.url, TOKEN, timeout_s=timeout_s)
        for i, f in enumerate(fakes)
    ]
    return FleetApp([FleetMember(e) for e in [*entries, *extra]], refresh_s=REFRESH_S)


async def wait_for(pilot: Pilot[None], cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.02)


def fleet(app: FleetApp) -> FleetScreen:
    screen = app.screen
    assert isinstance(screen, FleetScreen)
    return screen


def rows(app: FleetApp) -> dict[str, list[str]]:
    table = fleet(app).table
    return {key: [c.plain for c in table.get_row(key)] for key in table.keys()}  # noqa: SIM118 - not a dict


def state(app: FleetApp, key: str) -> str | None:
    """The status cell of a row, None while the row is not shown yet."""
    row = rows(app).get(key)
    return None if row is None else row[1]


def order(app: FleetApp) -> list[str]:
    return fleet(app).table.keys()


def summary(app: FleetApp) -> str:
    return str(fleet(app).query_one("#summary").render())


def all_answered(app: FleetApp, n: int) -> bool:
    shown = {k: r for k, r in rows(app).items() if k.startswith("agent-")}
    return len(shown) >= n and all(r[3] != "-" for r in shown.values())


async def test_rows_show_each_agent(fakes: list[FleetFake]) -> None:
    dead = FleetEntry("dead", "http://127.0.0.1:9", TOKEN, timeout_s=1.0)
    app = make_app(fakes, dead)
    async with app.run_test(size=(160, 20)) as pilot:
        await wait_for(
            pilot, lambda: all_answered(app, 3) and state(app, "dead") not in (None, "connecting")
        )
        got = rows(app)
        assert got["agent-a"][:10] == [
            "agent-a",
            "failing",
            "?",  # an agent that does not count its alerts
            "1/4",
            "300",
            "7.5%",  # the mean of its two GPUs (10% and 5%)
            "80.0/160.0GiB",
            "0",
            "70.0%",
            got["agent-a"][9],
        ]
        assert got["agent-c"][7] == "3"
        assert got["dead"][1] == "unreachable"
        assert got["dead"][10] == "never"
        assert "connection refused" in got["dead"][11]
        assert summary(app).startswith("4 agents  3 failing  1 unreachable")


async def test_sort_keys_and_header_clicks(fakes: list[FleetFake]) -> None:
    app = make_app(fakes)
    async with app.run_test(size=(160, 20)) as pilot:
        await wait_for(pilot, lambda: all_answered(app, 3))
        assert order(app) == ["agent-a", "agent-b", "agent-c"]
        await pilot.press("s")  # status: all failing, then by name
        assert fleet(app).sort_key == "status"
        await pilot.press("s")  # alerts: none counted, so by name
        assert (fleet(app).sort_key, order(app)) == ("alerts", ["agent-a", "agent-b", "agent-c"])
        await pilot.press("s")  # worst p95 TTFT first
        assert order(app) == ["agent-a", "agent-c", "agent-b"]
        await pilot.press("s")  # GPU utilisation, highest first
        assert order(app) == ["agent-b", "agent-c", "agent-a"]
        await pilot.press("S")
        assert order(app) == ["agent-a", "agent-c", "agent-b"]
        await pilot.press("s", "s")  # incidents, then cpu (still reversed)
        assert fleet(app).sort_key == "cpu"
        assert order(app) == ["agent-b", "agent-c", "agent-a"]
        assert "sort: cpu ↓" in summary(app)
        # The cursor follows its agent through a re-sort.
        fleet(app).table.move_cursor(row=0)
        await pilot.press("S")
        assert order(app) == ["agent-a", "agent-c", "agent-b"]
        assert fleet(app).table.selected_key == "agent-b"
        # Clicking a header sorts by it; clicking again reverses.
        await pilot.click("FleetTable", offset=(3, 1))  # inside the border, on "agent"
        assert (fleet(app).sort_key, order(app)[0]) == ("name", "agent-a")


async def test_filter(fakes: list[FleetFake]) -> None:
    app = make_app(fakes, FleetEntry("gone", "http://127.0.0.1:9", TOKEN, timeout_s=1.0))
    async with app.run_test(size=(160, 20)) as pilot:
        await wait_for(pilot, lambda: all_answered(app, 3))
        field = fleet(app).query_one("#filter", Input)
        assert not field.has_focus
        await pilot.press("slash")
        assert field.has_focus
        await pilot.press("minus", "b")
        assert order(app) == ["agent-b"]
        assert "filter: -b (1 shown)" in summary(app)
        await pilot.press("enter")  # keep the filter, back to the table
        assert fleet(app).table.has_focus and order(app) == ["agent-b"]
        await pilot.press("escape")
        assert order(app) == ["agent-a", "agent-b", "agent-c", "gone"]
        await pilot.press("slash", *"refus")  # "s" is text here, not the sort key
        await wait_for(pilot, lambda: order(app) == ["gone"])
        assert fleet(app).sort_key == "name"
        await pilot.press("escape")
        assert not field.has_focus and field.value == ""


async def test_enter_opens_the_host_and_escape_comes_back(fakes: list[FleetFake]) -> None:
    app = make_app(fakes)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: all_answered(app, 3))
        await pilot.press("down", "enter")
        assert isinstance(app.screen, HostScreen)
        member = next(m for m in app.members if m.name == "agent-b")
        assert app.screen.client is member.client
        await wait_for(pilot, lambda: app.screen.status is not None)  # type: ignore[attr-defined]
        assert app.screen.status.host == "host-b"  # type: ignore[attr-defined]
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)
        await pilot.press("q")
    assert all(m.client is None or m.client._session is None for m in app.members)


async def test_a_hung_agent_is_shown_slow_and_never_blocks(fakes: list[FleetFake]) -> None:
    """(Its timeout turning it unreachable is in test_fleet_real, with a slow server.)"""
    fakes[1].hang_s = 60.0
    app = make_app(fakes, timeout_s=60.0)
    async with app.run_test(size=(160, 20)) as pilot:
        hung = next(m for m in app.members if m.name == "agent-b")
        await wait_for(pilot, lambda: state(app, "agent-b") == "slow")
        # Keys are answered while the poll waits: the table re-sorts at once.
        assert hung.busy
        await pilot.press("s")
        assert fleet(app).sort_key == "status" and hung.busy
        assert order(app)[-1] == "agent-b"  # slow ranks after failing
        # The others kept updating meanwhile.
        others = [m for m in app.members if m is not hung]
        polls = [m.polls for m in others]
        await wait_for(pilot, lambda: all(m.polls > n for m, n in zip(others, polls, strict=True)))
        assert hung.busy and hung.polls == 0


async def test_an_agent_that_goes_away_shows_its_last_data_and_age(
    fakes: list[FleetFake],
) -> None:
    app = make_app(fakes, timeout_s=1.0)
    async with app.run_test(size=(160, 20)) as pilot:
        await wait_for(pilot, lambda: all_answered(app, 3))
        fleet(app).stale_after_s = 0.5
        await fakes[2].stop()
        await wait_for(pilot, lambda: state(app, "agent-c") == "unreachable")
        await wait_for(pilot, lambda: rows(app)["agent-c"][10] not in ("now", "0s"))
        row = rows(app)["agent-c"]
        assert row[3] == "1/4" and row[7] == "3"  # the last data, kept
        assert row[10].endswith("s")
        assert "cannot connect" in row[11]


async def test_enter_on_an_agent_never_reached_says_so(fakes: list[FleetFake]) -> None:
    ssh_entry = FleetEntry("far", "ssh://nohost.invalid", None, connect_timeout_s=5.0)
    app = FleetApp([FleetMember(ssh_entry)], refresh_s=REFRESH_S)
    async with app.run_test(size=(120, 20)) as pilot:
        await wait_for(pilot, lambda: state(app, "far") not in (None, "connecting"), timeout_s=15)
        assert rows(app)["far"][1] == "unreachable"
        await pilot.press("enter")
        assert isinstance(app.screen, FleetScreen)
