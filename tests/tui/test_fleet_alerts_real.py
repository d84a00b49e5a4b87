"""A real agent's alerts in the fleet view: a model goes down, ``model_down`` (critical) fires,
``/api/v1/status`` counts it and the host's row shows it; a silence moves it apart; the model
comes back and both go back to 0."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RunningAgent, running_agent, write_config
from tests.integration.test_alerting_agent import free_port, model_server, tcp_model
from tests.integration.test_alerts_api import request
from tests.tui.test_fleet_screen import fleet, rows, summary, wait_for
from tui.app import FleetApp
from tui.fleet import FleetEntry
from tui.view.fleetview import FleetMember

pytestmark = pytest.mark.integration

NONE = {"firing": 0, "critical": 0, "silenced": 0, "maintenance": 0, "pending": 0}


async def api(agent: RunningAgent, path: str, **kw: Any) -> tuple[int, Any]:
    """A request to the agent off the app's loop (urllib blocks)."""
    return await asyncio.to_thread(request, agent, path, **kw)


async def counts_become(agent: RunningAgent, want: dict[str, int], timeout_s: float = 20.0) -> None:
    """Wait until the status's ``alert_counts`` are ``want``."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = await api(agent, "/api/v1/status")
        assert code == 200, body
        if body["alert_counts"] == want:
            return
        assert time.monotonic() < deadline, f"alert_counts {body['alert_counts']}, want {want}"
        await asyncio.sleep(0.1)


async def test_a_real_agents_alert_fires_is_silenced_and_resolves(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the model is down from its first probe
    cfg = write_config(
        tmp_path, tcp_model("m1", port) + '\n[alerting]\nevaluate_interval = "200ms"\n'
    )
    with running_agent(cfg) as agent:
        entry = FleetEntry("real", agent.url, agent.token, timeout_s=2.0)
        app = FleetApp([FleetMember(entry)], refresh_s=0.25)
        async with app.run_test(size=(160, 24)) as pilot:

            def cell() -> str | None:
                row = rows(app).get("real")
                return None if row is None else row[2]

            await counts_become(agent, {**NONE, "firing": 1, "critical": 1})
            await wait_for(pilot, lambda: cell() == "1 !1", timeout_s=20)
            assert "1 alerting (1 critical)" in summary(app)
            member = app.members[0]
            assert member.summary is not None
            assert "1 alert firing (1 critical)" in member.summary.reasons

            # Silenced: still firing, but apart; the host no longer counts as alerting.
            code, body = await api(
                agent,
                "/api/v1/silences",
                method="POST",
                body={"matchers": ["model=m1"], "duration": "1h", "comment": "on it"},
                operator="ann@desk",
            )
            assert code == 201, body
            await counts_become(agent, {**NONE, "silenced": 1})
            await wait_for(pilot, lambda: cell() == "0 +1", timeout_s=10)
            assert "alerting" not in summary(app)
            code, body = await api(
                agent, f"/api/v1/silences/{body['silence']['id']}", method="DELETE"
            )
            assert code == 200, body
            await counts_become(agent, {**NONE, "firing": 1, "critical": 1})

            # The model comes back: the alert resolves, the count and the row go back to 0.
            with model_server(port):
                await counts_become(agent, NONE)
                await wait_for(pilot, lambda: cell() == "0", timeout_s=10)
                assert "alerting" not in summary(app)
                assert fleet(app).is_mounted
        assert agent.stop() == 0
