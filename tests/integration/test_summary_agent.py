"""``GET /api/v1/summary`` of a real agent: the row's values with an ETag, 304 for an unchanged
agent, the bearer check, and the fleet view's member reading it to the same row as from the
status, models and incidents."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RunningAgent, running_agent, wait_for, write_config
from tui.fleet import FleetEntry
from tui.remote.client import AgentClient
from tui.view.fleetsummary import summarize
from tui.view.fleetview import FleetMember

pytestmark = pytest.mark.integration


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port that accepts connections (the ``tcp`` probe's answer)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


def get(
    agent: RunningAgent, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(agent.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_summary_route_of_a_real_agent(tmp_path: Path, listener: int) -> None:
    # Probes and samples once an hour: after the first ones nothing changes, so the tag holds.
    config = write_config(
        tmp_path,
        f"""labels = {{ region = "eu-west" }}

[[model]]
name = "up-one"
protocol = "tcp"
url = "tcp://127.0.0.1:{listener}"
interval = "1h"

[[model]]
name = "gone"
protocol = "tcp"
url = "tcp://127.0.0.1:9"
interval = "1h"
down_after_failures = 1
""",
        sample_interval="1h",
    )
    with running_agent(config) as agent:
        auth = {"Authorization": f"Bearer {agent.token}"}

        def settled() -> dict[str, Any] | None:
            code, body = agent.get("/api/v1/summary")
            assert code == 200, body
            states = {m["name"]: m["state"] for m in body["models"]}
            ready = states == {"up-one": "up", "gone": "down"} and body["e2e_p95_ms"] is not None
            return body if ready and body["cpu_percent"] is not None else None

        doc = wait_for(settled, timeout=20, what="both models probed, latency and CPU known")
        assert doc is not None
        assert doc["host"] == "test-host" and doc["labels"] == {"region": "eu-west"}
        assert doc["storage_ok"] is True and doc["ttft_p95_ms"] is None
        assert doc["gpu"]["count"] >= 0 and isinstance(doc["open_incidents"], int)
        assert set(doc["alert_counts"]) >= {"firing", "critical"}

        code, headers, body = get(agent, "/api/v1/summary", auth)
        etag = headers["ETag"]
        assert code == 200 and headers["Content-Type"].startswith("application/json")
        assert etag.startswith('"') and len(etag) == 18
        # An incident may still be opening for the model that is down: a few tries at most.
        for _ in range(20):
            code, headers, body = get(agent, "/api/v1/summary", {**auth, "If-None-Match": etag})
            if code == 304:
                break
            etag = headers["ETag"]
        assert code == 304 and body == b"" and headers["ETag"] == etag
        assert get(agent, "/api/v1/summary", {**auth, "If-None-Match": '"other"'})[0] == 200
        assert get(agent, "/api/v1/summary", {})[0] == 401

        asyncio.run(_member_reads_the_same_row(agent))


async def _member_reads_the_same_row(agent: RunningAgent) -> None:
    token = (agent.data_dir / "api-token.read").read_text().strip()
    member = FleetMember(FleetEntry("real", agent.url, token, timeout_s=5.0))
    client = AgentClient(agent.url, token)
    try:
        await member.poll()
        assert member.error is None and member.summary is not None
        polls_before = member.changes
        await member.poll()  # unchanged: 304, the row is not touched
        assert member.error is None and member.changes == polls_before
        status = await client.get_json("/api/v1/status")
        models = await client.get_json("/api/v1/models")
        incidents = await client.get_json("/api/v1/incidents", {"state": "open"})
        assert member.summary == summarize(status, models, incidents)
        assert member.summary.health == "failing" and member.summary.labels == (
            ("region", "eu-west"),
        )
    finally:
        await member.aclose()
        await client.aclose()
