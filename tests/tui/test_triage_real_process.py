"""The process view and its actions against a real ``vigil agent run`` (started here), with
an operate token and then a read-only one; output holding markup and escape codes is text."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Log

from tests.helpers import RunningAgent, running_agent, write_config
from tests.helpers import wait_for as wait_sync
from tests.tui.test_host_screen import wait_for
from tests.tui.test_triage_views import count, footer_keys, notes, text_of
from tui.app import VigilApp
from tui.remote.client import AgentClient, operator_identity
from tui.screens.confirm import ConfirmScreen
from tui.screens.host import HostScreen
from tui.screens.process import ProcessScreen

pytestmark = pytest.mark.integration

TALKER = (
    "import time\n"
    "print('[@click=app.quit] boom', flush=True)\n"
    "print('\\x1b[31mred\\x1b[0m alert\\x07', flush=True)\n"
    "time.sleep(600)\n"
)
FAST = """
stop_timeout = "2s"
backoff_initial = "50ms"
backoff_max = "200ms"
backoff_jitter = 0.0
"""


def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        f"""
[[process]]
name = "talker"
command = {json.dumps([sys.executable, "-u", "-c", TALKER])}
{FAST}

[[process]]
name = "crashy"
command = {json.dumps([sys.executable, "-c", "raise SystemExit(3)"])}
quarantine_after = 1
{FAST}
""",
        sample_interval="1s",
    )


def processes(agent: RunningAgent) -> dict[str, dict[str, Any]]:
    code, body = agent.get("/api/v1/processes")
    assert code == 200, body
    return {p["name"]: p for p in body["processes"]}


def events(agent: RunningAgent, kind: str, subject: str) -> list[dict[str, Any]]:
    code, body = agent.get(f"/api/v1/events?kind={kind}&subject={subject}")
    assert code == 200, body
    return list(reversed(body["events"]))


async def open_process(pilot: Any, app: VigilApp, row: int) -> ProcessScreen:
    await wait_for(pilot, lambda: count(app, "#processes") == 2, timeout_s=15)
    await pilot.press("tab", *("j" * row), "enter")
    await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))
    screen = app.screen
    assert isinstance(screen, ProcessScreen)
    return screen


async def act(pilot: Any, app: VigilApp, key: str, answer: str = "y") -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await pilot.press(answer)
    await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))


async def test_process_view_and_actions_on_a_real_agent(tmp_path: Path) -> None:
    with running_agent(config(tmp_path)) as agent:
        wait_sync(lambda: processes(agent)["talker"]["state"] == "running", what="talker up")
        wait_sync(
            lambda: processes(agent)["crashy"]["state"] == "quarantined", what="crashy quarantined"
        )
        me = operator_identity()
        app = VigilApp(AgentClient(agent.url, agent.token), refresh_s=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_process(pilot, app, 0)
            log = app.screen.query_one(Log)
            await wait_for(pilot, lambda: "red alert" in log.lines, timeout_s=10)
            assert "[@click=app.quit] boom" in log.lines  # literally, and the ESCs are gone
            assert text_of(app, "#title").startswith("process talker · running")
            await pilot.click(Log, offset=(3, 1))
            await pilot.pause()
            assert app.is_running and isinstance(app.screen, ProcessScreen)

            pid = processes(agent)["talker"]["pid"]
            await act(pilot, app, "R", "n")  # cancelled: nothing reaches the agent
            await act(pilot, app, "R")
            action = wait_sync(lambda: events(agent, "process.action", "process:talker"))
            assert len(action) == 1
            assert action[0]["data"]["action"] == "restart" and action[0]["data"]["by"] == me
            wait_sync(lambda: processes(agent)["talker"]["pid"] not in (None, pid))
            await wait_for(pilot, lambda: count(app, "#history") >= 3, timeout_s=10)

            await act(pilot, app, "t")
            await wait_for(pilot, lambda: "· stopped" in text_of(app, "#title"), timeout_s=15)
            await act(pilot, app, "s")
            await wait_for(pilot, lambda: "· running" in text_of(app, "#title"), timeout_s=15)
            await act(pilot, app, "u")  # talker is not quarantined: the agent says so
            await wait_for(pilot, lambda: any("not quarantined" in n for n in notes(app)))
            done = [e["data"]["action"] for e in events(agent, "process.action", "process:talker")]
            assert done == ["restart", "stop", "start"]

            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))
            await pilot.press("shift+tab")  # back on the models table, then to processes
            await open_process(pilot, app, 1)
            await wait_for(pilot, lambda: "quarantined" in text_of(app, "#title"), timeout_s=10)
            await act(pilot, app, "u")
            released = wait_sync(lambda: events(agent, "process.released", "process:crashy"))
            assert released[0]["data"]["by"] == me

        # The same agent through its read-only token: no actions offered, none taken.
        read = (agent.data_dir / "api-token.read").read_text().strip()
        app = VigilApp(AgentClient(agent.url, read), refresh_s=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_process(pilot, app, 0)
            await wait_for(pilot, lambda: screen.client.scope == "read")
            assert not {"Start", "Stop", "Restart", "Release"} & footer_keys(app)
            await pilot.press("R", "t")
            await pilot.pause()
            assert isinstance(app.screen, ProcessScreen)
            screen.action_process("stop")
            await wait_for(pilot, lambda: any("Stop refused" in n for n in notes(app)))
        assert len(events(agent, "process.action", "process:talker")) == 3
