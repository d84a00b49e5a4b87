"""AgentClient against the fake agent: decoding, and every failure mapped to AgentError."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.fakes.agent_api import TOKEN, FakeAgent
from tui.remote.client import AgentClient, AgentError, discover_local


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_status_round_trips(fake_agent: FakeAgent) -> None:
    client = AgentClient(fake_agent.url, TOKEN)
    try:
        status = await client.status()
    finally:
        await client.aclose()
    assert status == fake_agent.status
    assert status.resource("host.cpu.percent") == pytest.approx(23.4)


async def test_series_sends_the_query_and_decodes_points(fake_agent: FakeAgent) -> None:
    client = AgentClient(fake_agent.url + "/", TOKEN)  # trailing slash is tolerated
    try:
        points = await client.series("host.cpu.percent", {"core": 3}, since="-5m", step=1000)
    finally:
        await client.aclose()
    assert [p.avg for p in points] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert fake_agent.last_query == {
        "name": "host.cpu.percent",
        "labels": '{"core": "3"}',
        "since": "-5m",
        "step": "1000",
    }


async def test_events_newest_first(fake_agent: FakeAgent) -> None:
    client = AgentClient(fake_agent.url, TOKEN)
    try:
        events = await client.events(limit=1, kind="process.")
    finally:
        await client.aclose()
    assert [e.kind for e in events] == ["process.exited"]
    assert fake_agent.last_query == {"limit": "1", "kind": "process."}


async def test_wrong_token_is_token_rejected(fake_agent: FakeAgent) -> None:
    client = AgentClient(fake_agent.url, "wrong")
    try:
        with pytest.raises(AgentError, match=r"^token rejected$") as info:
            await client.status()
    finally:
        await client.aclose()
    assert info.value.kind == "rejected"


async def test_connection_refused_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = AgentClient(url, TOKEN)
    try:
        refused = r"^cannot connect to 127\.0\.0\.1:\d+ \(connection refused\)$"
        with pytest.raises(AgentError, match=refused) as info:
            await client.status()
    finally:
        await client.aclose()
    assert info.value.kind == "unreachable"
    assert url.removeprefix("http://") in info.value.message


async def test_hung_agent_times_out(fake_agent: FakeAgent) -> None:
    fake_agent.hang_s = 5.0
    client = AgentClient(fake_agent.url, TOKEN, timeout_s=0.2)
    try:
        with pytest.raises(AgentError, match=r"^timeout after 0\.2s$") as info:
            await client.status()
    finally:
        await client.aclose()
    assert info.value.kind == "timeout"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>not json</html>", "bad JSON from /api/v1/status"),
        (b'{"host": "x"}', r"bad JSON from agent \(status\): KeyError"),
        (b"[1, 2]", r"bad JSON from agent \(status\)"),
    ],
)
async def test_malformed_answers_are_bad_json(
    fake_agent: FakeAgent, body: bytes, match: str
) -> None:
    fake_agent.raw_body = body
    client = AgentClient(fake_agent.url, TOKEN)
    try:
        with pytest.raises(AgentError, match=match) as info:
            await client.status()
    finally:
        await client.aclose()
    assert info.value.kind == "protocol"


async def test_http_error_carries_the_agents_error_text(fake_agent: FakeAgent) -> None:
    client = AgentClient(fake_agent.url, TOKEN)
    try:
        with pytest.raises(AgentError, match="HTTP 404") as info:
            await client._get_json("/nope")
    finally:
        await client.aclose()
    assert info.value.kind == "http"


async def test_client_is_reusable_after_aclose(fake_agent: FakeAgent) -> None:
    client = AgentClient(fake_agent.url, TOKEN)
    await client.status()
    await client.aclose()
    await client.status()
    await client.aclose()
    assert fake_agent.hits["/api/v1/status"] == 2


def test_repr_hides_the_token() -> None:
    assert TOKEN not in repr(AgentClient("http://127.0.0.1:1", TOKEN))


def test_discover_local_reads_both_files(tmp_path: Path) -> None:
    (tmp_path / "api.json").write_text(json.dumps({"url": "http://127.0.0.1:9470", "pid": 7}))
    (tmp_path / "api-token").write_text("tok123\n")
    assert discover_local(tmp_path) == ("http://127.0.0.1:9470", "tok123")


def test_discover_local_names_the_missing_api_file(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match=r"api\.json not found"):
        discover_local(tmp_path)


def test_discover_local_names_the_missing_token_file(tmp_path: Path) -> None:
    (tmp_path / "api.json").write_text(json.dumps({"url": "http://127.0.0.1:9470"}))
    with pytest.raises(AgentError, match="api-token not found"):
        discover_local(tmp_path)


@pytest.mark.parametrize("content", ["{not json", '{"pid": 1}', '{"url": ""}'])
def test_discover_local_refuses_a_bad_api_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "api.json").write_text(content)
    (tmp_path / "api-token").write_text("tok")
    with pytest.raises(AgentError, match=r"api\.json"):
        discover_local(tmp_path)


def test_discover_local_refuses_an_empty_token(tmp_path: Path) -> None:
    (tmp_path / "api.json").write_text(json.dumps({"url": "http://127.0.0.1:9470"}))
    (tmp_path / "api-token").write_text("\n")
    with pytest.raises(AgentError, match="api-token is empty"):
        discover_local(tmp_path)
