"""Fleet rows without Textual: summaries, sorting, filtering, cells, and the ssh read script."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from storage.records import AgentStatus, ModelStatus, ProcessStatus
from tests.fakes.agent_api import TOKEN, sample_status
from tests.fakes.fleet_agents import FleetFake, gpu_status, models_json
from tui.fleet import FleetEntry
from tui.remote.client import AgentError
from tui.remote.ssh import SshAddress, parse_remote_output, remote_script
from tui.view.fleetcells import row_cells, sparkline
from tui.view.fleetsummary import HostSummary, count_open, summarize, worst_p95
from tui.view.fleetview import FleetMember, filter_words, matches, sort_members

GiB = 1024**3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def summ(status: AgentStatus, models: Any = None, incidents: Any = None) -> HostSummary:
    return summarize(status.to_json(), models, incidents)


def member(name: str, clock: Clock | None = None, url: str = "http://127.0.0.1:9") -> FleetMember:
    return FleetMember(FleetEntry(name, url, TOKEN, timeout_s=1.0), clock=clock or Clock())


def test_summary_of_a_gpu_host() -> None:
    s = summ(gpu_status("gpu-01", util=80.0), models_json({"a": 100.0, "b": 250.0, "c": None}))
    assert s.host == "gpu-01"
    # The sample has one model down, one degraded, a process in backoff.
    assert s.health == "failing"
    assert s.reasons[:2] == ("model whisper down", "process llama-cpp backoff")
    assert (s.models_up, s.models_down, s.models_total) == (1, 1, 4)
    assert s.ttft_p95_ms == 250.0
    assert s.e2e_p95_ms == 50.0
    assert (s.gpu_count, s.gpu_util_percent) == (2, 60.0)
    assert (s.gpu_mem_used_bytes, s.gpu_mem_total_bytes) == (80 * GiB, 160 * GiB)
    assert s.gpu_mem_percent == 50.0
    assert s.cpu_percent == 23.4
    assert s.open_incidents is None  # not asked


def test_health_levels() -> None:
    now = sample_status().now_ms
    healthy = replace(
        sample_status(),
        models=(ModelStatus("m", "http", "u", "up", now),),
        processes=(ProcessStatus("p", "running", now),),
    )
    assert summ(healthy).health == "ok"
    assert summ(healthy, incidents={"incidents": []}).open_incidents == 0
    opened = summ(healthy, incidents={"incidents": [{"state": "acknowledged"}]})
    assert (opened.health, opened.reasons, opened.open_incidents) == (
        "degraded",
        ("1 incident open",),
        1,
    )
    starting = replace(healthy, processes=(ProcessStatus("p", "starting", now),))
    assert summ(starting).health == "degraded"
    assert summ(replace(healthy, storage_ok=False)).reasons == ("storage failing",)


def test_a_malformed_status_is_refused() -> None:
    with pytest.raises(ValueError, match="bad status from agent: KeyError"):
        summarize({"models": []})
    with pytest.raises(ValueError, match="bad status"):
        summarize({"host": "h", "resources": [{"name": "host.cpu.percent", "value": "x"}]})
    with pytest.raises(ValueError, match="bad status"):
        summarize({"host": "h", "models": [3]})


def test_malformed_extras_are_unknown_not_errors() -> None:
    assert worst_p95(None, "ttft_ms") is None
    assert worst_p95({"models": "x"}, "ttft_ms") is None
    assert (
        worst_p95({"models": [{"latency": {"5m": {"ttft_ms": {"p95": "9"}}}}]}, "ttft_ms") is None
    )
    assert worst_p95({"models": [{"latency": None}, {"nope": 1}]}, "ttft_ms") is None
    assert count_open({"events": []}) is None
    assert count_open({"incidents": [{"state": "open"}, {"state": "resolved"}, 3]}) == 1


def test_states_ages_and_slowness() -> None:
    clock = Clock()
    m = member("a", clock)
    assert m.state(clock.now) == "connecting"
    assert m.data_age(clock.now) is None
    m.summary = summ(gpu_status("a"))
    m.last_ok_at = clock.now
    assert m.state(clock.now) == "failing"
    m.started_at = clock.now
    clock.now += 0.5
    assert m.state(clock.now) == "failing"
    clock.now += 1.0
    assert m.state(clock.now) == "slow"
    m.error = AgentError("timeout after 1s", "timeout")
    assert m.state(clock.now) == "timeout"
    assert m.data_age(clock.now) == 1.5


def test_sorting() -> None:
    clock = Clock()
    a, b, c, d = (member(n, clock) for n in ("alpha", "Bravo", "charlie", "delta"))
    a.summary = summ(gpu_status("a", util=10.0, cpu=5.0), models_json({"m": 300.0}))
    b.summary = summ(gpu_status("b", util=90.0, cpu=50.0), models_json({"m": 100.0}))
    c.summary = summ(sample_status("c", cpu=99.0), incidents={"incidents": [{}, {}]})
    d.error = AgentError("down", "unreachable")
    for m in (a, b, c):
        m.last_ok_at = clock.now
    names = lambda ms: [m.name for m in ms]  # noqa: E731
    everyone = [d, c, b, a]
    assert names(sort_members(everyone, "name", clock.now)) == [
        "alpha",
        "Bravo",
        "charlie",
        "delta",
    ]
    assert names(sort_members(everyone, "name", clock.now, reverse=True))[0] == "delta"
    assert names(sort_members(everyone, "status", clock.now))[0] == "delta"
    # Highest first, unknown last, whatever the direction.
    assert names(sort_members(everyone, "ttft", clock.now)) == [
        "alpha",
        "Bravo",
        "charlie",
        "delta",
    ]
    assert names(sort_members(everyone, "gpu", clock.now)) == ["Bravo", "alpha", "charlie", "delta"]
    assert names(sort_members(everyone, "gpu", clock.now, reverse=True)) == [
        "alpha",
        "Bravo",
        "charlie",
        "delta",
    ]
    assert names(sort_members(everyone, "cpu", clock.now))[:3] == ["charlie", "Bravo", "alpha"]
    assert names(sort_members(everyone, "incidents", clock.now))[0] == "charlie"
    with pytest.raises(ValueError, match="unknown sort key"):
        sort_members(everyone, "nope", clock.now)


def test_filtering() -> None:
    clock = Clock()
    a = member("gpu-01", clock, url="http://10.1.0.1:8470")
    a.summary = summ(sample_status("trainer-7"))
    b = member("gpu-02", clock)
    b.error = AgentError("cannot connect to 127.0.0.1:9 (connection refused)", "unreachable")
    assert matches(a, filter_words(""), clock.now)
    assert matches(a, filter_words("GPU 10.1"), clock.now)
    assert matches(a, filter_words("trainer whisper"), clock.now)  # host name, a reason
    assert not matches(a, filter_words("gpu refused"), clock.now)
    assert matches(b, filter_words("unreachable refused"), clock.now)


def test_row_cells() -> None:
    clock = Clock()
    m = member("gpu-01", clock)
    assert [c.plain for c in row_cells(m, clock.now, 2.0)][:3] == ["gpu-01", "connecting", "-"]
    m.summary = summ(gpu_status("gpu-01"), models_json({"m": 123.4}), incidents={"incidents": [{}]})
    m.last_ok_at = clock.now
    m.cpu_history.extend([0.0, 50.0, 100.0])
    cells = [c.plain for c in row_cells(m, clock.now, 2.0)]
    assert cells[:10] == [
        "gpu-01",
        "failing",
        "?",  # no alert_counts in the status: an agent older than alerting
        "1/4",
        "123",
        "60.0%",
        "80.0/160.0GiB",
        "1",
        "23.4%",
        " " * 13 + "▁▅█",
    ]
    assert cells[10] == "now"
    assert cells[11].startswith("model whisper down; process llama-cpp backoff")
    # Unreachable: the last values stay, dimmed, with their age and the reason.
    clock.now += 12.4
    m.error = AgentError("\x1b[31mcannot connect\x1b[0m [b]x[/b]", "unreachable")
    row = row_cells(m, clock.now, 2.0)
    assert [c.plain for c in row[1:5]] == ["unreachable", "?", "1/4", "123"]
    assert row[3].style == "dim"
    assert row[10].plain == "12s"
    assert row[11].plain == "cannot connect [b]x[/b]"
    # No streaming probe: the e2e p95 stands in, marked.
    m.summary = summ(gpu_status("gpu-01"), models_json({"m": None}))
    m.error = None
    assert row_cells(m, clock.now, 2.0)[4].plain == "e2e 50.0"


def test_sparkline_scale() -> None:
    assert sparkline([], width=4).plain == "    "
    assert sparkline([0, 25, 50, 75, 100, 150, -5], width=7).plain == "▁▃▅▇██▁"
    assert sparkline(range(100), width=3).plain == "███"


async def test_a_member_polls_status_models_and_incidents() -> None:
    """An agent older than ``/api/v1/summary`` (404): the documents it stands for."""
    fake = FleetFake(
        status=gpu_status("gpu-01"), ttft_p95={"a": 80.0}, open_incidents=2, summary_route=False
    )
    await fake.start()
    m = FleetMember(FleetEntry("gpu-01", fake.url, TOKEN, timeout_s=2.0))
    try:
        await m.poll()
        assert m.error is None and m.summary is not None
        assert (m.summary.ttft_p95_ms, m.summary.open_incidents) == (80.0, 2)
        assert fake.hits["/api/v1/incidents"] == fake.hits["/api/v1/models"] == 1
        assert list(m.cpu_history) == [23.4]
        # Latencies and incidents are asked for every few seconds; the status every poll.
        await m.poll()
        assert fake.hits["/api/v1/status"] == 2 and fake.hits["/api/v1/models"] == 1
        assert m.summary.open_incidents == 2
        ok_at = m.last_ok_at
        await fake.stop()
        await m.poll()
        assert m.error is not None and m.error.kind == "unreachable"
        assert m.summary.host == "gpu-01"  # the last data is kept
        assert m.last_ok_at == ok_at and not m.busy
    finally:
        await m.aclose()
        await fake.stop()


def test_remote_script_finds_the_agent_and_its_token(tmp_path: Path) -> None:
    """The script ssh runs, run here by sh against a real directory layout."""
    data = tmp_path / "state" / "vigil"
    data.mkdir(parents=True)
    (data / "api.json").write_text(json.dumps({"url": "http://0.0.0.0:8470", "pid": 1}) + "\n")
    (data / "api-token.read").write_text("read-tok\n")
    address = SshAddress("h", data_dir=str(data))

    def run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)

    out = run(remote_script(str(data), want_token=True))
    agent = parse_remote_output(address, out.stdout)
    assert (agent.host, agent.port, agent.token) == ("127.0.0.1", 8470, "read-tok")
    (data / "api-token").write_text("operate-tok\n")
    assert parse_remote_output(address, run(remote_script(str(data), True)).stdout).token == (
        "operate-tok"
    )
    assert parse_remote_output(address, run(remote_script(str(data), False)).stdout).token is None
    # The default dirs: $XDG_STATE_HOME/vigil for a non-root user.
    default = run(remote_script(None, True), XDG_STATE_HOME=str(tmp_path / "state"), HOME="/x")
    if os.geteuid() != 0:  # root's default is /var/lib/vigil
        assert parse_remote_output(address, default.stdout).data_dir == str(data)
    missing = run(remote_script(str(tmp_path / "none"), True))
    assert missing.returncode == 3
    with pytest.raises(AgentError, match=r"no api\.json in .*none: is the agent running"):
        parse_remote_output(address, missing.stdout)
    with pytest.raises(AgentError, match="cannot read the token"):
        parse_remote_output(address, f"vigil-dir {data}\nvigil-no-token {data}\n")
    with pytest.raises(AgentError, match=r"bad .*api\.json"):
        parse_remote_output(address, "vigil-dir /d\nvigil-api {not json\n")
