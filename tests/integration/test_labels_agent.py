"""Labels through a real agent: ``[agent] labels`` served in ``/api/v1/status`` and as
``vigil_agent_info`` on ``/metrics``, changed by a reload, and seen by the fleet view with the
fleet file's labels over them."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.helpers import running_agent, wait_for, write_config
from tui.fleet import load_fleet
from tui.view.fleetgroups import member_labels
from tui.view.fleetview import FleetMember

pytestmark = pytest.mark.integration


def _labels_line(metrics: str) -> str:
    return next(line for line in metrics.splitlines() if line.startswith("vigil_agent_info"))


def test_labels_served_reloaded_and_overridden_by_the_fleet_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, 'labels = { region = "eu-west", team = "search", env = "prod", gpu = "a100" }'
    )
    with running_agent(config) as agent:
        status = agent.status()
        assert status["labels"] == {
            "env": "prod",
            "gpu": "a100",
            "region": "eu-west",
            "team": "search",
        }
        code, metrics = agent.get("/metrics")
        assert code == 200
        assert _labels_line(metrics) == (
            'vigil_agent_info{env="prod",gpu="a100",region="eu-west",team="search"} 1.0'
        )

        # The fleet file adds a label, overrides one and removes one; the agent's others stay.
        token_file = agent.data_dir / "api-token.read"
        fleet_file = tmp_path / "fleet.toml"
        fleet_file.write_text(
            f"""
[defaults]
token_file = "{token_file}"
labels = {{ owner = "ml-platform" }}

[[agent]]
name = "gpu-01"
url = "{agent.url}"
labels = {{ region = "eu-central", env = "" }}
""",
            encoding="utf-8",
        )
        (entry,) = load_fleet(fleet_file)

        async def poll() -> dict[str, str]:
            member = FleetMember(entry)
            try:
                await member.poll()
                assert member.error is None, member.error
                return member_labels(member)
            finally:
                await member.aclose()

        assert asyncio.run(poll()) == {
            "gpu": "a100",
            "owner": "ml-platform",
            "region": "eu-central",
            "team": "search",
        }

        # A reload changes what is served, without a restart.
        config.write_text(config.read_text().replace('region = "eu-west", ', ""), encoding="utf-8")
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "region" not in agent.status()["labels"], what="the reloaded labels served"
        )
        assert agent.status()["labels"] == {"env": "prod", "gpu": "a100", "team": "search"}
        assert _labels_line(agent.get("/metrics")[1]) == (
            'vigil_agent_info{env="prod",gpu="a100",team="search"} 1.0'
        )


def test_agent_without_labels(tmp_path: Path) -> None:
    with running_agent(write_config(tmp_path)) as agent:
        assert agent.status()["labels"] == {}
        assert _labels_line(agent.get("/metrics")[1]) == "vigil_agent_info 1.0"
