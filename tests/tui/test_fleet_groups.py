"""Labels in the fleet view, driven by Pilot against fake agents: ``b`` groups by a label with a
rollup row per group, ``/region=eu`` filters by label, the fleet file's labels win over the
agent's, and the grouping is remembered from one run to the next."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.fakes.agent_api import TOKEN
from tests.fakes.fleet_agents import FleetFake, labelled_status
from tests.tui.test_fleet_screen import fleet, order, rows, summary, wait_for
from tui.app import FleetApp
from tui.fleet import FleetEntry
from tui.screens.help import HelpScreen
from tui.view.fleetgroups import GROUP_PREFIX, NO_LABEL_KEY, member_labels
from tui.view.fleetview import FleetMember
from tui.view.uistate import state_path

REFRESH_S = 0.25


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FleetFake]]:
    agents = {
        # Degraded: one alert firing, critical.
        "a": FleetFake(
            status=labelled_status("host-a", {"region": "eu-west", "team": "search"}, up=2),
            alert_counts={"firing": 1, "critical": 1, "silenced": 0},
        ),
        # Failing: a model down; and two incidents open.
        "b": FleetFake(
            status=labelled_status("host-b", {"region": "eu-north", "team": "search"}, down=1),
            open_incidents=2,
            alert_counts={"firing": 0, "critical": 0, "silenced": 1},
        ),
        "c": FleetFake(
            status=labelled_status("host-c", {"region": "us-east", "team": "ads"}, up=3),
            alert_counts={"firing": 0, "critical": 0},
        ),
        # The agent says us-east; the fleet file says eu-west, and wins.
        "d": FleetFake(
            status=labelled_status("host-d", {"region": "us-east", "team": "ads"}, up=1),
            alert_counts={"firing": 0, "critical": 0},
        ),
        # No labels at all.
        "f": FleetFake(status=labelled_status("host-f", {}, up=1)),
    }
    for agent in agents.values():
        await agent.start()
    try:
        yield agents
    finally:
        for agent in agents.values():
            await agent.stop()


def make_app(fakes: dict[str, FleetFake], remember_as: str | None = None) -> FleetApp:
    entries = [
        FleetEntry(f"agent-{key}", fake.url, TOKEN, timeout_s=2.0)
        for key, fake in fakes.items()
        if key != "d"
    ]
    entries.append(
        FleetEntry("agent-d", fakes["d"].url, TOKEN, timeout_s=2.0, labels=(("region", "eu-west"),))
    )
    # Unreachable, known only by the fleet file's label.
    entries.append(
        FleetEntry(
            "agent-e",
            f"http://127.0.0.1:{closed_port()}",
            TOKEN,
            timeout_s=1.0,
            labels=(("region", "eu-west"),),
        )
    )
    members = [FleetMember(e) for e in entries]
    return FleetApp(members, refresh_s=REFRESH_S, remember_as=remember_as)


def settled(app: FleetApp) -> bool:
    """Every agent has answered (its models cell filled), and agent-e has failed."""
    got = rows(app)
    hosts = [f"agent-{k}" for k in "abcdf"]
    return (
        all(k in got and got[k][3] != "-" for k in hosts)
        and got.get("agent-e", ["", ""])[1] == "unreachable"
    )


async def test_group_by_label_with_rollup_rows(fakes: dict[str, FleetFake]) -> None:
    app = make_app(fakes)
    async with app.run_test(size=(200, 30)) as pilot:
        await wait_for(pilot, lambda: settled(app))
        assert order(app) == [f"agent-{k}" for k in "abcdef"]
        member_d = next(m for m in app.members if m.name == "agent-d")
        assert member_labels(member_d) == {"region": "eu-west", "team": "ads"}

        await pilot.press("b")  # the first label seen, A-Z: region
        assert fleet(app).group_by == "region"
        assert order(app) == [
            GROUP_PREFIX + "eu-north",
            "agent-b",
            GROUP_PREFIX + "eu-west",
            "agent-a",
            "agent-d",  # the fleet file's eu-west over the agent's us-east
            "agent-e",  # unreachable, grouped by the fleet file's label alone
            GROUP_PREFIX + "us-east",
            "agent-c",
            NO_LABEL_KEY,
            "agent-f",
        ]
        got = rows(app)
        # eu-west: a (degraded: 2 up, 1 critical alert), d (ok: 1 up), e (unreachable).
        assert got[GROUP_PREFIX + "eu-west"][:4] == ["▾ region=eu-west", "3 hosts", "1 !1", "3/3"]
        assert got[GROUP_PREFIX + "eu-west"][7] == "0"
        assert got[GROUP_PREFIX + "eu-west"][11] == (
            "1 ok, 1 degraded, 1 unreachable; models 3 up, 0 down; 1 alert firing (1 critical)"
        )
        # eu-north: b alone, failing, a model down, one alert silenced, two incidents open.
        assert got[GROUP_PREFIX + "eu-north"][:4] == ["▾ region=eu-north", "1 host", "0 +1", "1/2"]
        assert got[GROUP_PREFIX + "eu-north"][7] == "2"
        assert got[GROUP_PREFIX + "eu-north"][11] == (
            "1 failing; models 1 up, 1 down; 2 incidents open"
        )
        assert got[GROUP_PREFIX + "us-east"][:4] == ["▾ region=us-east", "1 host", "0", "3/3"]
        assert got[NO_LABEL_KEY][:2] == ["▾ no region", "1 host"]
        assert "group: region" in summary(app)

        # The sort holds inside each group: CPU is the same everywhere, so by status.
        await pilot.press("s")
        assert order(app)[2:6] == [GROUP_PREFIX + "eu-west", "agent-e", "agent-a", "agent-d"]

        # enter on a header row opens nothing.
        fleet(app).table.move_cursor(0)
        await pilot.press("enter")
        assert app.screen is fleet(app)

        await pilot.press("b")  # team
        assert fleet(app).group_by == "team"
        assert [k for k in order(app) if k.startswith("#")] == [
            GROUP_PREFIX + "ads",
            GROUP_PREFIX + "search",
            NO_LABEL_KEY,
        ]
        assert rows(app)[GROUP_PREFIX + "ads"][:4] == ["▾ team=ads", "2 hosts", "0", "4/4"]
        await pilot.press("b")  # none again
        assert fleet(app).group_by == ""
        assert not [k for k in order(app) if k.startswith("#")]


async def test_filter_by_label(fakes: dict[str, FleetFake]) -> None:
    app = make_app(fakes)
    async with app.run_test(size=(200, 30)) as pilot:
        await wait_for(pilot, lambda: settled(app))
        field = fleet(app).query_one("#filter", Input)
        await pilot.press("slash", *"region=eu")  # a prefix of the value
        assert order(app) == ["agent-a", "agent-b", "agent-d", "agent-e"]
        await pilot.press(*" team=search")  # and a second term
        assert order(app) == ["agent-a", "agent-b"]
        await pilot.press(*" west")  # and a word, as before ("eu-west" is no word of a row)
        assert order(app) == []
        field.value = "region=EU-W a"  # case-insensitive; the word "a" is in every name
        await wait_for(pilot, lambda: order(app) == ["agent-a", "agent-d", "agent-e"])
        field.value = "region=us"  # agent-d's own us-east is overridden by the fleet file
        await wait_for(pilot, lambda: order(app) == ["agent-c"])
        field.value = "zone="  # a label no host has
        await wait_for(pilot, lambda: order(app) == [])
        assert "filter: zone= (0 shown)" in summary(app)
        # Grouping counts what the filter shows.
        field.value = "team=search"
        await pilot.press("enter", "b")
        assert order(app) == [
            GROUP_PREFIX + "eu-north",
            "agent-b",
            GROUP_PREFIX + "eu-west",
            "agent-a",
        ]
        assert rows(app)[GROUP_PREFIX + "eu-west"][1] == "1 host"


async def test_grouping_is_remembered_between_runs(
    fakes: dict[str, FleetFake], tmp_path: Path
) -> None:
    assert state_path().is_relative_to(Path(os.environ["XDG_STATE_HOME"]))
    assert not state_path().exists()
    first = make_app(fakes, remember_as="/srv/fleet.toml")
    async with first.run_test(size=(200, 30)) as pilot:
        await wait_for(pilot, lambda: settled(first))
        await pilot.press("b", "b")  # region, then team
        assert fleet(first).group_by == "team"
    saved = json.loads(state_path().read_text())
    assert saved == {"fleet": {"/srv/fleet.toml": {"group_by": "team"}}}

    second = make_app(fakes, remember_as="/srv/fleet.toml")
    async with second.run_test(size=(200, 30)) as pilot:
        # Grouped from the first paint, before any agent answered.
        assert fleet(second).group_by == "team"
        await wait_for(pilot, lambda: settled(second))
        assert order(second)[0] == GROUP_PREFIX + "ads"
        await pilot.press("b")  # team -> none, remembered too
    assert json.loads(state_path().read_text())["fleet"]["/srv/fleet.toml"] == {"group_by": ""}

    other = make_app(fakes, remember_as="/srv/other.toml")  # another fleet file: its own
    async with other.run_test(size=(200, 30)):
        assert fleet(other).group_by == ""


async def test_help_lists_the_group_key_and_label_filters(fakes: dict[str, FleetFake]) -> None:
    app = make_app(fakes)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.text.plain
        assert f"  {'b':<10}Group\n" in text.split("Everywhere")[0]
        assert "region=eu is a host whose label region starts with eu" in text
        assert "group by each label in turn" in text
