"""A real agent scraping a fake vLLM's /metrics: series in the API, a stall takes the model down."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    RunningAgent,
    control_fake,
    running_agent,
    serving_process,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def metrics_server(*args: str) -> contextlib.AbstractContextManager[str]:
    """The fake metrics server as its own process; yields its base URL."""
    return serving_process("tests.fakes.metrics_server", "--port", "0", *args)


def points(agent: RunningAgent, name: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"name": name, "labels": json.dumps(labels), "since": "-5m"})
    code, body = agent.get(f"/api/v1/series?{query}")
    assert code == 200, body
    return body["points"]


def test_scraped_series_are_served_and_a_stall_takes_the_model_down(tmp_path: Path) -> None:
    with metrics_server("--format", "vllm", "--running", "3", "--advance", "7") as base:
        cfg = write_config(
            tmp_path,
            f"""
[[model]]
name = "llm"
protocol = "metrics"
url = "{base}/metrics"
interval = "200ms"
timeout = "1s"
jitter = "0s"
[model.canary]
preset = "vllm"
stall_after = 3
""",
        )
        with running_agent(cfg) as agent:

            def model() -> dict[str, Any]:
                return agent.get("/api/v1/models")[1]["models"][0]

            wait_for(lambda: model()["state"] == "up", what="llm up")
            labels = {"model": "llm", "model_name": "fake-model"}
            running = wait_for(
                lambda: points(agent, "model.metric.vllm_num_requests_running", labels),
                what="the running-requests series",
            )
            assert running[0]["avg"] == 3.0
            tokens = wait_for(
                lambda: (
                    p
                    if len(p := points(agent, "model.metric.vllm_generation_tokens_total", labels))
                    >= 2
                    else None
                ),
                what="two token-counter points",
            )
            assert tokens[-1]["avg"] > tokens[0]["avg"]  # the raw counter, growing

            control_fake(base, advance=0)  # generation hangs; requests stay running
            wait_for(lambda: model()["state"] == "down", what="llm down")
            incident = wait_for(lambda: model()["incident"], what="an open incident")
            assert incident["kind"] == "model_down"
            assert incident["cause"].startswith(
                "stalled: 3 requests running (vllm:num_requests_running), "
                "vllm:generation_tokens_total flat at "
            ), incident["cause"]
            runs = agent.get("/api/v1/probe_runs?model=llm&limit=5")[1]["probe_runs"]
            assert runs[0]["category"] == "stalled"
            assert re.search(r"flat at \d+ for \d+ scrapes \(\d", runs[0]["error"]), runs[0]

            control_fake(base, advance=5)
            wait_for(lambda: model()["state"] == "up", what="llm up again")
