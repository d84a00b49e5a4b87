"""The host screen, driven by Pilot against the fake agent."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Sparkline, Static

from storage.records import ModelStatus
from tests.fakes.agent_api import TOKEN, FakeAgent, res, sample_status
from tui.app import VigilApp
from tui.remote.client import AgentClient
from tui.screens.host import HostScreen
from tui.widgets.header import ConnectionHeader

REFRESH_S = 0.1


def make_app(agent: FakeAgent, token: str = TOKEN, timeout_s: float = 1.0) -> VigilApp:
    return VigilApp(AgentClient(agent.url, token, timeout_s=timeout_s), refresh_s=REFRESH_S)


async def wait_for(pilot: Pilot[None], cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Let the app run until ``cond`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.02)


def header(app: VigilApp) -> str:
    return app.screen.query_one(ConnectionHeader).render().plain


def static(app: VigilApp, widget_id: str) -> str:
    content = app.screen.query_one(f"#{widget_id}", Static).content
    assert isinstance(content, Text)
    return content.plain


def row(app: VigilApp, table_id: str, key: str) -> list[str]:
    table = app.screen.query_one(f"#{table_id}", DataTable)
    return [cell.plain for cell in table.get_row(key)]


def connected(app: VigilApp) -> bool:
    return "connected" in header(app) and app.screen.query_one("#models", DataTable).row_count > 0


async def test_shows_host_resources_models_and_processes(fake_agent: FakeAgent) -> None:
    app = make_app(fake_agent)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        assert isinstance(app.screen, HostScreen)
        head = header(app)
        assert head.startswith("gpu-host-01  agent 0.1.0  up 1h2m")
        assert head.endswith("● connected")
        assert "23.4%" in static(app, "cpu")
        assert "12.0/32.0GiB" in static(app, "mem")
        assert "37.5%" in static(app, "mem")
        assert static(app, "swap") == "swap  none"
        assert static(app, "load") == "load  1.25 0.80 0.50"
        assert "/" in static(app, "disks")
        assert "eth0" in static(app, "net")
        assert "lo " not in static(app, "net")
        assert static(app, "gpu") == "no GPU"

        assert row(app, "models", "llama") == ["llama", "openai", "up", "3m12s", "123", "ok"]
        assert row(app, "models", "embedder")[2:3] == ["degraded"]
        assert row(app, "models", "whisper")[2:] == [
            "down",
            "1m",
            "-",
            "refused: connection refused",
        ]
        assert row(app, "models", "fresh")[2:] == ["unknown", "0s", "-", "no probe yet"]
        models = app.screen.query_one("#models", DataTable)
        state_styles = {
            key: str(models.get_cell(key, "state").style)
            for key in ("llama", "embedder", "whisper", "fresh")
        }
        assert state_styles == {
            "llama": "green",
            "embedder": "yellow",
            "whisper": "bold red",
            "fresh": "dim",
        }

        assert row(app, "processes", "vllm-server") == [
            "vllm-server",
            "running 1h",
            "4242",
            "1",
            "150.0%",
            "3.0GiB",
            "exit 1",
        ]
        # The ANSI colour codes and the bell in the exit text are gone.
        assert row(app, "processes", "llama-cpp")[-1] == "killed by SIGKILL"


async def test_values_refresh_live_and_feed_the_sparkline(fake_agent: FakeAgent) -> None:
    app = make_app(fake_agent)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        fake_agent.status = sample_status(cpu=77.7)
        await wait_for(pilot, lambda: "77.7%" in static(app, "cpu"))
        spark = app.screen.query_one("#cpu-spark", Sparkline)
        assert spark.data is not None
        assert 77.7 in spark.data
        # The five points of the pre-filled minute came from /api/v1/series (its worker runs
        # beside the status fetches: wait for its answer, not for the status's).
        screen = app.screen
        assert isinstance(screen, HostScreen)
        await wait_for(pilot, lambda: screen.history_done)
        assert fake_agent.hits["/api/v1/series"] == 1
        assert len(screen.cpu_history) <= 60


async def test_rows_follow_models_coming_and_going(fake_agent: FakeAgent) -> None:
    app = make_app(fake_agent)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        models = app.screen.query_one("#models", DataTable)
        status = fake_agent.status
        fake_agent.status = replace(status, models=status.models[:1])
        await wait_for(pilot, lambda: models.row_count == 1)
        fake_agent.status = replace(status, models=())
        await wait_for(pilot, lambda: models.row_count == 0)
        assert models.border_subtitle == "no models configured"


async def test_wrong_token_shows_token_rejected(fake_agent: FakeAgent) -> None:
    app = make_app(fake_agent, token="not-the-token")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: "token rejected" in header(app))
        assert header(app).endswith("✖ token rejected")
        assert app.screen.query_one(ConnectionHeader).state_text().style == "bold red"
        assert app.screen.query_one("#models", DataTable).row_count == 0


async def test_unreachable_agent_keeps_last_data(fake_agent: FakeAgent) -> None:
    app = make_app(fake_agent)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        await fake_agent.stop()
        await wait_for(pilot, lambda: "unreachable" in header(app))
        head = header(app)
        assert head.startswith("gpu-host-01  agent 0.1.0")
        assert "✖ unreachable: " in head
        assert re.search(r"— last data \d+s ago$", head)
        assert "23.4%" in static(app, "cpu")
        assert row(app, "models", "llama")[2] == "up"
        # The age keeps counting while the agent stays away: the screen is not frozen.
        await wait_for(pilot, lambda: "last data 2s ago" in header(app), timeout_s=4)


async def test_hung_agent_is_reported_not_frozen(fake_agent: FakeAgent) -> None:
    app = make_app(fake_agent, timeout_s=0.3)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        fake_agent.hang_s = 30.0
        await wait_for(pilot, lambda: "timeout after 0.3s" in header(app))
        assert "✖ unreachable: timeout after 0.3s" in header(app)
        fake_agent.hang_s = 0.0
        await wait_for(pilot, lambda: header(app).endswith("● connected"))


async def test_agent_text_is_data_not_markup(fake_agent: FakeAgent) -> None:
    status = sample_status(host="[bold red]x")
    evil = ModelStatus("[@click=app.quit]", "openai", "[link=http://e]u", "up", status.now_ms)
    fake_agent.status = replace(status, models=(evil, *status.models))
    app = make_app(fake_agent)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        assert header(app).startswith("[bold red]x  agent")
        assert row(app, "models", "[@click=app.quit]")[0] == "[@click=app.quit]"
        # Click the name cell and select the row: a markup action would quit the app.
        table = app.screen.query_one("#models", DataTable)
        table.focus()
        await pilot.click("#models", offset=(4, 2))
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.is_running
        assert app.return_code is None


async def test_q_quits(fake_agent: FakeAgent) -> None:
    app = make_app(fake_agent)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running)
    assert app.return_code == 0


@pytest.mark.parametrize("gpus", [0, 8])
async def test_fits_80x24(fake_agent: FakeAgent, gpus: int) -> None:
    status = fake_agent.status
    extra = tuple(
        res(f"gpu.{name}", 50.0, status.now_ms, gpu=g)
        for g in range(gpus)
        for name in ("util.percent", "mem.used_bytes", "mem.total_bytes")
    )
    fake_agent.status = replace(status, gpu_available=gpus > 0, resources=status.resources + extra)
    app = make_app(fake_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        await pilot.pause()
        screen = app.screen
        for widget_id in ("header", "resources", "models", "processes"):
            region = screen.query_one(f"#{widget_id}").region
            assert region.height > 0, widget_id
            assert region.bottom <= 23, widget_id  # the footer keeps the last line
        # Each table shows its header and at least two rows without scrolling.
        assert screen.query_one("#models").region.height >= 5
        assert screen.query_one("#processes").region.height >= 5


async def test_refresh_binding_fetches_now(fake_agent: FakeAgent) -> None:
    app = VigilApp(AgentClient(fake_agent.url, TOKEN), refresh_s=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: connected(app))
        before = fake_agent.hits["/api/v1/status"]
        await pilot.press("r")
        await wait_for(pilot, lambda: fake_agent.hits["/api/v1/status"] > before)
        await asyncio.sleep(0)
