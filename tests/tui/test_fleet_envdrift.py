"""``E`` on the fleet: three fake agents over real sockets, one with a different (hostile)
torch version; the matrix names the item, each host's value and the majority, literally."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from rich.text import Text
from textual.widgets import DataTable, Static

from tests.fakes.agent_api import TOKEN
from tests.fakes.fleet_agents import FleetFake, labelled_status
from tests.tui.test_fleet_screen import rows, wait_for
from tui.app import FleetApp
from tui.fleet import FleetEntry
from tui.screens.envdrift import EnvDriftScreen
from tui.screens.help import HelpScreen
from tui.view.fleetview import FleetMember

EVIL = "[bold red]2.4.1[/] \x1b[31mx"


@dataclass
class EnvFake(FleetFake):
    """A fleet fake that also serves ``GET /api/v1/environment``."""

    sections: dict[str, dict[str, str]] = field(default_factory=dict)

    def _answer(self, request: web.Request) -> dict[str, Any]:
        if request.path == "/api/v1/environment":
            return {"hash": "h-" + repr(sorted(self.sections.items())), "sections": self.sections}
        return super()._answer(request)


def env(torch: str) -> dict[str, dict[str, str]]:
    return {"python": {"torch": torch, "vllm": "0.6.0"}, "host": {"kernel": "6.1"}}


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, EnvFake]]:
    agents = {
        k: EnvFake(status=labelled_status(f"host-{k}", {}, up=1), sections=env(t))
        for k, t in (("a", "2.3.0"), ("b", "2.3.0"), ("c", EVIL))
    }
    for agent in agents.values():
        await agent.start()
    try:
        yield agents
    finally:
        for agent in agents.values():
            await agent.stop()


async def test_env_drift_matrix(fakes: dict[str, EnvFake]) -> None:
    members = [
        FleetMember(FleetEntry(f"agent-{k}", f.url, TOKEN, timeout_s=2.0)) for k, f in fakes.items()
    ]
    app = FleetApp(members, refresh_s=0.25)
    async with app.run_test(size=(200, 30)) as pilot:
        await wait_for(
            pilot, lambda: all(r[3] != "-" for r in rows(app).values()) and len(rows(app)) == 3
        )
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "Env drift" in str(app.screen.query_one(Static).render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))
        await pilot.press("E")
        await wait_for(
            pilot, lambda: isinstance(app.screen, EnvDriftScreen) and app.screen.drift is not None
        )
        screen = app.screen
        assert isinstance(screen, EnvDriftScreen)
        assert screen.group_title == "whole fleet"
        table = screen.query_one("#envdrift-table", DataTable)
        assert table.row_count == 1  # only python/torch differs
        cells = table.get_row_at(0)
        assert all(isinstance(c, Text) for c in cells)
        plain = [c.plain for c in cells]
        assert plain == [
            "python/torch",
            "2.3.0",
            "2.3.0",
            "[bold red]2.4.1[/] x",
            "majority: 2.3.0",
        ]
        assert cells[3].spans == []  # the agent's brackets were not parsed as markup
        status = screen.query_one("#envdrift-status", Static)
        assert "1 of 3 hosts differ" in str(status.render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, EnvDriftScreen))
