"""The fleet screen against real ``vigil agent run`` processes, an address nothing listens on,
and a server that answers too slowly: the UI keeps answering keys throughout."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.helpers import running_agent, write_config
from tests.tui.test_fleet_screen import fleet, order, rows, state, wait_for
from tui.app import FleetApp
from tui.fleet import load_fleet
from tui.screens.fleet import FleetScreen
from tui.screens.host import HostScreen
from tui.view.fleetview import FleetMember

pytestmark = pytest.mark.integration


@pytest.fixture
async def slow_server() -> AsyncIterator[str]:
    """An HTTP server that takes a minute to answer anything."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_real_agents_an_unreachable_and_a_slow_one(tmp_path: Path, slow_server: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = write_config(
        tmp_path / "a",
        """
[[model]]
name = "nothing-listens"
protocol = "tcp"
url = "tcp://127.0.0.1:9"
interval = "1s"
down_after_failures = 1
""",
    )
    cfg_b = write_config(tmp_path / "b")
    with running_agent(cfg_a) as a, running_agent(cfg_b) as b:
        fleet_file = tmp_path / "fleet.toml"
        fleet_file.write_text(
            f"""
[defaults]
timeout = "2s"

[[agent]]
name = "real-a"
url = "{a.url}"
token_file = "{a.data_dir / "api-token.read"}"

[[agent]]
name = "real-b"
url = "{b.url}"
token = "{b.token}"

[[agent]]
name = "nobody"
url = "http://127.0.0.1:{closed_port()}"
token = "x"

[[agent]]
name = "slowpoke"
url = "{slow_server}"
token = "x"
timeout = "6s"
"""
        )
        members = [FleetMember(e) for e in load_fleet(fleet_file)]
        app = FleetApp(members, refresh_s=0.25)
        async with app.run_test(size=(160, 24)) as pilot:
            slow = next(m for m in members if m.name == "slowpoke")
            real_b = next(m for m in members if m.name == "real-b")
            # Its first poll hangs: "slow" after a second, until its 6 s timeout.
            await wait_for(pilot, lambda: state(app, "slowpoke") == "slow")
            await wait_for(
                pilot,
                lambda: state(app, "real-a") == "failing" and state(app, "real-b") == "ok",
                timeout_s=20,
            )
            await wait_for(pilot, lambda: state(app, "nobody") == "unreachable")
            # While its poll hangs, keys work and the others keep refreshing.
            polls_before = real_b.polls
            await pilot.press("s")
            assert fleet(app).sort_key == "status"
            assert order(app)[0] == "nobody" and order(app)[-1] == "real-b"  # worst first
            await wait_for(pilot, lambda: real_b.polls > polls_before)
            if slow.error is None:  # (a loaded machine may have reached the timeout by now)
                assert slow.busy and state(app, "slowpoke") == "slow"
            got = rows(app)
            assert got["real-a"][3] == "0/1"
            assert got["real-a"][11].startswith("model nothing-listens down")
            assert got["real-b"][3] == "-"  # no models configured
            assert got["real-a"][8].endswith("%")  # the agent's CPU
            assert "connection refused" in got["nobody"][11]
            await wait_for(pilot, lambda: state(app, "slowpoke") == "unreachable")
            assert rows(app)["slowpoke"][11] == "timeout after 6s"

            # enter opens the real agent's host screen through the same client.
            await pilot.press("s")  # sort by alerts
            fleet(app).table.move_cursor(row=order(app).index("real-b"))
            started = time.monotonic()
            await pilot.press("enter")
            assert isinstance(app.screen, HostScreen)
            await wait_for(pilot, lambda: app.screen.status is not None)  # type: ignore[attr-defined]
            assert app.screen.status.host == "test-host"  # type: ignore[attr-defined]
            assert time.monotonic() - started < 10
            await pilot.press("escape")
            assert isinstance(app.screen, FleetScreen)
