"""The fleet screen's k9s keys, driven by Pilot at 80x24 against fake agents: ``?`` lists the
fleet's keys, ``:`` jumps to a host by name or address, hostile host names stay text; and a
snapshot of the fleet screen at 80x24."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input

from tests.fakes.agent_api import TOKEN
from tests.fakes.fleet_agents import FleetFake, gpu_status
from tests.tui.test_fleet_screen import REFRESH_S, all_answered, fakes, fleet, make_app, wait_for
from tui.app import FleetApp
from tui.fleet import FleetEntry
from tui.screens.fleet import FleetScreen
from tui.screens.help import HelpScreen
from tui.screens.host import HostScreen
from tui.view.fleetview import FleetMember

__all__ = ["fakes"]  # the fixture, shared with test_fleet_screen

SIZE = (80, 24)
EVIL = "[@click=app.quit]"


def palette_lines(app: FleetApp) -> list[str]:
    """The palette's options as shown: the text of each rendered line of its list."""
    listing = app.screen.query_one(CommandList)
    return [
        "".join(segment.text for segment in listing.render_line(y)).strip()
        for y in range(listing.size.height)
    ]


def palette_prompts(app: FleetApp) -> list[str]:
    """The first line of every option of the palette, shown or scrolled away."""
    listing = app.screen.query_one(CommandList)
    return [
        str(listing.get_option_at_index(i).prompt).split("\n")[0]
        for i in range(listing.option_count)
    ]


async def open_palette(pilot: Pilot[None], app: FleetApp, query: str) -> None:
    await pilot.press("colon")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*query)
    await wait_for(pilot, lambda: app.screen.query_one(CommandList).option_count > 0)
    await pilot.pause(0.3)  # the palette gathers hits in batches


async def test_question_mark_lists_the_fleet_keys_and_escape_closes(
    fakes: list[FleetFake],
) -> None:
    app = make_app(fakes)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: all_answered(app, 3))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        text = help_screen.text.plain
        this_view = text.split("Everywhere")[0]
        for key, what in [
            ("s", "Sort"),
            ("S", "Reverse"),
            ("/", "Filter"),
            ("esc", "Clear filter"),
            ("r", "Refresh"),
            ("?", "Help"),
            (":", "Jump to a host"),
            ("q", "Quit"),
        ]:
            assert f"  {key:<10}{what}\n" in this_view, (key, what)
        assert "Open" not in this_view  # the table's enter is a convention, listed below
        assert "enter" in text.split("Everywhere")[1]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, FleetScreen))
        # In the filter line, ? and : are text, not keys.
        await pilot.press("slash", "question_mark", "colon")
        assert fleet(app).query_one("#filter", Input).value == "?:"
        assert isinstance(app.screen, FleetScreen)


async def test_colon_then_a_name_opens_that_host(fakes: list[FleetFake]) -> None:
    app = make_app(fakes)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: all_answered(app, 3))
        await open_palette(pilot, app, "agent-b")
        lines = palette_lines(app)
        assert any(line.startswith(f"agent-b  {fakes[1].url}") for line in lines), lines
        assert not any(line.startswith(("agent-a", "agent-c")) for line in lines), lines
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))
        host = app.screen
        assert isinstance(host, HostScreen)
        member = next(m for m in app.members if m.name == "agent-b")
        assert host.client is member.client
        await wait_for(pilot, lambda: host.status is not None)
        assert host.status is not None and host.status.host == "host-b"
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, FleetScreen))


async def test_colon_finds_a_host_by_address(fakes: list[FleetFake]) -> None:
    gone = FleetEntry("gone", "http://localhost:9", TOKEN, timeout_s=1.0)
    app = make_app(fakes, gone)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: all_answered(app, 3))
        # Before anything is typed: every host, with its address.
        await pilot.press("colon")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        # (The app's own commands are listed too, before or after: the palette keeps the
        # order in which its providers answer.)
        wanted = [f"agent-{c}  {f.url}" for c, f in zip("abc", fakes, strict=True)]
        wanted.append("gone  http://localhost:9")
        await wait_for(pilot, lambda: all(w in palette_prompts(app) for w in wanted))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, FleetScreen))
        # Not in any name: the address matches, and picking it opens that host (whose
        # screen then says it cannot be reached), as enter on its row does.
        await open_palette(pilot, app, "localhost")
        assert palette_lines(app)[0].startswith("gone  http://localhost:9")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))
        member = next(m for m in app.members if m.name == "gone")
        assert app.screen.client is member.client  # type: ignore[attr-defined]


async def test_a_hostile_host_name_shows_literally_in_the_palette(
    fakes: list[FleetFake],
) -> None:
    # The fleet file refuses such names; the screen must not rely on it.
    evil = FleetEntry(EVIL, fakes[2].url, TOKEN, timeout_s=2.0)
    markup = FleetEntry("[b]bold[/b] [$accent]x", fakes[0].url, TOKEN, timeout_s=2.0)
    app = FleetApp([FleetMember(evil), FleetMember(markup)], refresh_s=REFRESH_S)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: all(m.summary is not None for m in app.members), timeout_s=10)
        await open_palette(pilot, app, "click")
        lines = palette_lines(app)
        assert lines[0] == f"{EVIL}  {fakes[2].url}", lines
        await pilot.press("escape")
        await open_palette(pilot, app, "bold")
        assert palette_lines(app)[0] == f"[b]bold[/b] [$accent]x  {fakes[0].url}"
        await pilot.press("escape")
        # Picking it opens that host; nothing in the name is a link or an action.
        await open_palette(pilot, app, "click")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))
        host = app.screen
        assert isinstance(host, HostScreen)
        await wait_for(pilot, lambda: host.status is not None)
        assert host.status is not None and host.status.host == "host-c"
        assert app.is_running and app.return_code is None


# --- snapshot --------------------------------------------------------------------------


@contextmanager
def agents_in_thread(agents: list[FleetFake]) -> Iterator[list[FleetFake]]:
    """Serve the fakes from a loop of their own: a snapshot runs the app with ``App.run`` in
    the test's thread (as ``triage_agent.agent_in_thread`` does for one agent)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        for agent in agents:
            loop.run_until_complete(agent.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "the fake agents did not start"
    try:
        yield agents
    finally:
        for agent in agents:
            asyncio.run_coroutine_threadsafe(agent.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_fleet_screen_80x24(snap_compare: Callable[..., bool]) -> None:
    agents = [
        FleetFake(
            status=gpu_status("host-a", util=10.0, cpu=70.0),
            ttft_p95={"m": 300.0},
            alert_counts={"firing": 0, "critical": 0, "silenced": 0},
        ),
        # Paging: two alerts firing, one critical (a red badge), and one silenced (apart).
        FleetFake(
            status=gpu_status("host-b", util=90.0, cpu=10.0),
            ttft_p95={"m": 100.0},
            alert_counts={"firing": 2, "critical": 1, "silenced": 1},
        ),
        # Older than alerting: its alerts cell says "?".
        FleetFake(status=gpu_status("host-c", util=50.0, cpu=40.0), open_incidents=3),
    ]
    with agents_in_thread(agents):
        # One poll each: a later one would only add to the CPU history, and timing must not
        # matter.
        app = make_app(agents)
        app.refresh_s = 3600.0

        async def run_before(pilot: Pilot[None]) -> None:
            await wait_for(pilot, lambda: all_answered(app, 3))
            await pilot.pause()

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
