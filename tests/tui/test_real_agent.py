"""The first screen against a real `vigil agent run`: it shows what the agent reports."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from agent.cli.api_client import ApiClient
from storage.units import format_bytes
from tests.helpers import running_agent, wait_for, write_config
from tests.tui.test_host_screen import connected, header, row, static
from tests.tui.test_host_screen import wait_for as wait_on_app
from tui.app import VigilApp
from tui.remote.client import AgentClient

pytestmark = pytest.mark.integration


async def test_host_screen_shows_the_real_agents_values(tmp_path) -> None:
    cfg = write_config(
        tmp_path,
        """
[[model]]
name = "nothing-listens"
protocol = "tcp"
url = "tcp://127.0.0.1:9"
interval = "1s"

[[process]]
name = "sleeper"
command = ["sleep", "600"]
""",
        sample_interval="1s",
    )
    with running_agent(cfg) as agent:
        api = ApiClient(agent.url, agent.token)
        wait_for(lambda: api.status().resource("host.mem.total_bytes"), what="resources")
        wait_for(lambda: api.status().models[0].state == "down", what="the model to be down")
        app = VigilApp(AgentClient(agent.url, agent.token), refresh_s=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_on_app(pilot, lambda: connected(app), timeout_s=15)
            await wait_on_app(
                pilot, lambda: app.screen.query_one("#processes", DataTable).row_count > 0
            )
            assert header(app).startswith("test-host")
            status = api.status()
            total = status.resource("host.mem.total_bytes")
            assert total is not None
            # Memory total never changes: the screen must show exactly the agent's value.
            assert format_bytes(total).removesuffix("GiB").removesuffix("MiB") in static(app, "mem")
            assert "%" in static(app, "cpu")
            model = row(app, "models", "nothing-listens")
            assert model[1:3] == ["tcp", "down"]
            assert "refused" in model[-1]
            proc = row(app, "processes", "sleeper")
            assert proc[0] == "sleeper" and proc[1].startswith("running")
            assert proc[2] == str(status.processes[0].pid)
            await pilot.press("q")
        assert app.return_code in (0, None)
