"""The model, incidents and events views and their actions (probe now, acknowledge, resolve,
export a report, jump) against a real agent supervising the demo KServe server."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.widgets import Sparkline

from agent.demo import MODEL_PATH
from tests.helpers import RunningAgent, running_agent, write_config
from tests.helpers import wait_for as wait_sync
from tests.tui.test_host_screen import wait_for
from tests.tui.test_triage_views import cells, count, notes, text_of
from tui.app import VigilApp
from tui.remote.client import AgentClient, operator_identity
from tui.screens.confirm import ConfirmScreen
from tui.screens.events import EventsScreen
from tui.screens.host import HostScreen
from tui.screens.incidents import IncidentsScreen
from tui.screens.model import ModelScreen

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path) -> Path:
    port = free_port()
    server = [sys.executable, "-m", "agent.demo.server", "--model", str(MODEL_PATH)]
    server += ["--name", "iris", "--host", "127.0.0.1", "--port", str(port)]
    return write_config(
        tmp_path,
        f"""
[[process]]
name = "iris-server"
command = {json.dumps(server)}
port = {port}

[[model]]
name = "iris"
protocol = "kserve_v2"
url = "http://127.0.0.1:{port}"
interval = "500ms"
timeout = "2s"
process = "iris-server"
[model.canary]
inputs = [{{ name = "input", shape = [1, 4], datatype = "FP32", data = [5.1, 3.5, 1.4, 0.2] }}]

[[model]]
name = "nothing-listens"
protocol = "tcp"
url = "tcp://127.0.0.1:9"
interval = "300ms"
""",
        sample_interval="1s",
    )


def api(agent: RunningAgent, path: str) -> Any:
    code, body = agent.get(path)
    assert code == 200, body
    return body


async def act(pilot: Any, app: VigilApp, key: str) -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await pilot.press("y")
    await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))


async def test_model_incidents_events_and_report_on_a_real_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with running_agent(config(tmp_path)) as agent:

        def models() -> dict[str, Any]:
            return {m["name"]: m for m in api(agent, "/api/v1/models")["models"]}

        wait_sync(lambda: models()["iris"]["state"] == "up", 30, what="iris up")
        incident = wait_sync(lambda: models()["nothing-listens"]["incident"], what="an incident")
        me = operator_identity()
        app = VigilApp(AgentClient(agent.url, agent.token), refresh_s=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: count(app, "#models") == 2, timeout_s=15)
            await pilot.press("enter")  # iris
            await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
            await wait_for(pilot, lambda: count(app, "#runs-table") >= 2, timeout_s=10)
            assert text_of(app, "#title").startswith("model iris · kserve_v2 · up")
            assert "available · ok" in text_of(app, "#summary")
            e2e = app.screen.query_one("#chart-e2e_ms Sparkline", Sparkline)
            await wait_for(pilot, lambda: bool(e2e.data), timeout_s=10)
            assert text_of(app, "#chart-e2e_ms .chart-stats").startswith("p50")
            assert cells(app, "#runs-table")[0][1] == "ok"

            await act(pilot, app, "p")
            asked = wait_sync(
                lambda: api(agent, "/api/v1/events?kind=model.probe_requested")["events"]
            )
            assert asked[0]["subject"] == "model:iris" and asked[0]["data"]["by"] == me

            # Incidents: acknowledge, then resolve by hand, both in the agent's records.
            await pilot.press("escape", "i")
            await wait_for(pilot, lambda: isinstance(app.screen, IncidentsScreen))
            await pilot.press("2")  # open ones
            await wait_for(
                pilot,
                lambda: any(r[0] == f"#{incident['id']}" for r in cells(app, "#incidents-table")),
                timeout_s=10,
            )
            row = [r[0] for r in cells(app, "#incidents-table")].index(f"#{incident['id']}")
            await pilot.press(*("j" * row))
            await act(pilot, app, "a")

            def stored() -> dict[str, Any]:
                found = api(agent, "/api/v1/incidents?subject=model:nothing-listens")
                return next(i for i in found["incidents"] if i["id"] == incident["id"])

            wait_sync(lambda: stored()["acknowledged_by"] == me, what="acknowledged")
            await pilot.press("1")  # all: the acknowledged one is still listed
            await wait_for(
                pilot,
                lambda: (
                    [f"#{incident['id']}", "acknowledged"]
                    in [r[:2] for r in cells(app, "#incidents-table")]
                ),
                timeout_s=10,
            )
            row = [r[0] for r in cells(app, "#incidents-table")].index(f"#{incident['id']}")
            await pilot.press("g", *("j" * row))
            await act(pilot, app, "c")
            wait_sync(lambda: stored()["state"] == "resolved", what="resolved")
            assert stored()["resolved_by"] == me

            # Events: the incident's whole story, by kind, then searched.
            await pilot.press("escape", "e")
            await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen))
            await pilot.press("f", *"incident.", "enter")
            await wait_for(
                pilot,
                lambda: (
                    {"incident.acknowledged", "incident.resolved"}
                    <= {r[1] for r in cells(app, "#events-table")}
                ),
                timeout_s=10,
            )
            await pilot.press("slash", *me)
            await wait_for(pilot, lambda: count(app, "#events-table") == 2)
            assert {r[1] for r in cells(app, "#events-table")} == {
                "incident.acknowledged",
                "incident.resolved",
            }

            # Export the host report.
            await pilot.press("escape", "escape")
            await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))
            await act(pilot, app, "x")
            await wait_for(
                pilot, lambda: any(n.startswith("report saved to") for n in notes(app)), 20
            )
            (saved,) = home.glob("vigil-report-test-host-*.html")
            assert "iris" in saved.read_text() and saved.read_text().lstrip().startswith("<")
            exported = wait_sync(
                lambda: api(agent, "/api/v1/events?kind=report.exported")["events"]
            )
            assert exported[0]["data"] == {**exported[0]["data"], "by": me, "format": "html"}

            # `:` jumps to a model by name.
            await pilot.press("colon", *"nothing")
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
            await wait_for(pilot, lambda: "nothing-listens" in text_of(app, "#title"))
            await wait_for(pilot, lambda: count(app, "#runs-table") > 0, timeout_s=10)
            assert cells(app, "#runs-table")[0][1] == "refused"
