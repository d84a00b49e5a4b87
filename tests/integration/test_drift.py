"""Drift against a real model server: a latency step and a changed answer are detected by a
real agent, recorded as audit events, counted in the report, and survive an agent restart."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    RunningAgent,
    child_env,
    control_fake,
    fake_llm,
    running_agent,
    vigil_cmd,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def drift_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path,
        f"""
[[model]]
name = "llama"
protocol = "openai"
url = "{url}"
interval = "100ms"
jitter = "0s"
timeout = "3s"
[model.canary]
max_tokens = 4
[model.drift]
window = 5
baseline = 10
min_delta = "40ms"
output_stable_runs = 3
output_confirm_runs = 2
""",
    )


def events(agent: RunningAgent, kind: str) -> list[dict[str, Any]]:
    code, body = agent.get(f"/api/v1/events?kind={kind}")
    assert code == 200, body
    return list(body["events"])


def test_latency_and_output_drift_from_a_real_server(tmp_path: Path) -> None:
    with (
        fake_llm("--ttft-ms", "5", "--itl-ms", "1", "--tokens", "4", "--model", "llama") as url,
        running_agent(drift_config(tmp_path, url)) as agent,
    ):
        # Let the baseline fill: window + half the baseline of answered runs at the fast level.
        wait_for(lambda: runs_stored(agent) >= 12, 30, what="a baseline of runs")
        assert events(agent, "drift.") == []

        control_fake(url, ttft_ms=150.0)
        latency = wait_for(lambda: events(agent, "drift.latency"), 30, what="drift.latency")
        data = latency[0]["data"]
        assert "ttft_ms" in data["drifted"]
        ttft = next(s for s in data["shifts"] if s["metric"] == "ttft_ms")
        assert ttft["baseline_median"] < 100 <= ttft["recent_median"]
        assert latency[0]["subject"] == "model:llama"
        # Still slow: the drift is live in the API and on /metrics until it clears.
        code, body = agent.get("/api/v1/models")
        assert code == 200 and "latency" in body["models"][0]["drift"], body
        code, metrics = agent.get("/metrics")
        assert 'vigil_model_drift{kind="latency",model="llama"} 1.0' in metrics, metrics
        status = subprocess.run(
            vigil_cmd("status", "--config", str(agent.config_path)),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
            check=True,
        )
        assert "latency drift" in status.stdout, status.stdout

        control_fake(url, ttft_ms=5.0)
        wait_for(lambda: events(agent, "model.drift_cleared"), 30, what="the drift cleared")

        control_fake(url, reply="Something else entirely. ")
        output = wait_for(lambda: events(agent, "drift.output"), 30, what="drift.output")
        assert output[0]["data"]["previous_excerpt"].startswith("The quick brown")
        assert output[0]["data"]["new_excerpt"].startswith("Something else")

        report = subprocess.run(
            vigil_cmd("report", "--config", str(agent.config_path), "--format", "json"),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
            check=True,
        )
        drift = json.loads(report.stdout)["drift"]
        # The slow first token also cut tokens/s fifteenfold: most likely a throughput
        # detection too, but the test is about the two it caused on purpose.
        kinds = [r["kind"] for r in drift["rows"]]
        assert (
            {"drift.latency", "drift.output"}
            <= set(kinds)
            <= {
                "drift.latency",
                "drift.output",
                "drift.throughput",
            }
        )
        assert drift["count"] == len(kinds)
        assert drift["note"] is None

        # The audit chain holds them like every other event.
        verify = subprocess.run(
            vigil_cmd("audit", "verify", "--config", str(agent.config_path)),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr


def runs_stored(agent: RunningAgent) -> int:
    code, body = agent.get("/api/v1/probe_runs?model=llama&limit=100")
    assert code == 200, body
    return sum(1 for r in body["probe_runs"] if r["category"] == "ok")


def test_a_restarted_agent_keeps_its_baseline(tmp_path: Path) -> None:
    with fake_llm("--ttft-ms", "5", "--itl-ms", "1", "--tokens", "4", "--model", "llama") as url:
        cfg = drift_config(tmp_path, url)
        with running_agent(cfg) as agent:
            wait_for(lambda: runs_stored(agent) >= 16, 30, what="a baseline of runs")
        # The server slows down while the agent is away. Without the stored baseline the new
        # agent would learn the slow level as normal and never call it drift.
        control_fake(url, ttft_ms=150.0)
        with running_agent(cfg) as agent:
            latency = wait_for(lambda: events(agent, "drift.latency"), 30, what="drift.latency")
            assert "ttft_ms" in latency[0]["data"]["drifted"]
            # A changed model config starts new windows: the open drift is closed, saying why.
            cfg.write_text(cfg.read_text().replace('interval = "100ms"', 'interval = "150ms"'))
            agent.proc.send_signal(signal.SIGHUP)
            cleared = wait_for(
                lambda: events(agent, "model.drift_cleared"), 30, what="drift closed by reload"
            )
            assert cleared[0]["data"]["reason"] == "config changed"
            assert agent.get("/api/v1/models")[1]["models"][0]["drift"] == {}
