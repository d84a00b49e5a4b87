"""``vigil demo --no-tui`` prints what ``vigil status`` prints, availability and latency included
(it printed ``AVAIL_1H -`` and no latency table)."""

from __future__ import annotations

from agent.cli.api_client import ApiClient
from agent.cli.demo import status_block
from tests.fakes.triage_agent import TOKEN, agent_in_thread, fixed_agent


def test_the_headless_demo_prints_the_status_table_with_availability_and_latency() -> None:
    with agent_in_thread(fixed_agent()) as agent:
        client = ApiClient(agent.url, TOKEN)
        block = status_block(client)
        models = {m["name"]: m for m in client.models()}
    lines = block.splitlines()
    header = next(line for line in lines if "AVAIL_1H" in line)
    column = header.index("AVAIL_1H")
    rows = lines[lines.index(header) + 1 : lines.index(header) + 1 + len(models)]
    assert {row[column:].split()[0] for row in rows} == {"96.0%"}  # the fake's availability_1h
    assert "latency of answered probe runs, ms" in lines
    # Every model, both windows; the fake's e2e p50/p95/p99 are 120/360/540 ms.
    latency = [line.split() for line in lines if line.split()[1:2] in (["5m"], ["1h"])]
    assert len(latency) == 2 * len(models)
    assert all(row[-1] == "120.0/360.0/540.0" for row in latency)
