"""`vigil demo`, headless: the agent supervises and probes the bundled model, then cleans up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.client import ApiClient
from agent.demo.run import start_demo_agent, stop_agent
from tests.helpers import child_env, vigil_cmd, wait_for

pytestmark = pytest.mark.integration


def test_demo_agent_probes_the_bundled_model(tmp_path: Path) -> None:
    proc, url, token = start_demo_agent(tmp_path)
    try:
        client = ApiClient(url, token)

        def model_up() -> dict | None:
            status = client.status()
            models = {m.name: m for m in status.models}
            iris = models.get("iris")
            return status if iris and iris.state == "up" else None

        status = wait_for(model_up, timeout=30, what="the demo model to be up")
        iris = next(m for m in status.models if m.name == "iris")
        assert iris.protocol == "kserve_v2"
        assert iris.last_run is not None and iris.last_run.ok
        assert iris.last_run.e2e_ms is not None and iris.last_run.e2e_ms > 0
        server = next(p for p in status.processes if p.name == "demo-model-server")
        assert server.state == "running" and server.pid
        assert status.resource("host.cpu.percent") is not None
        # The model server is watched as a process too.
        wait_for(
            lambda: client.status().resource("process.rss_bytes", process="demo-model-server"),
            what="the model server's RSS",
        )
        runs = client.get("/api/v1/probe_runs?model=iris")["probe_runs"]
        assert runs and runs[0]["category"] == "ok"
    finally:
        stop_agent(proc)
    assert proc.returncode == 0


def test_vigil_demo_headless_runs_and_cleans_up(tmp_path: Path) -> None:
    env = child_env()
    env["TMPDIR"] = str(tmp_path)
    out = subprocess.run(
        vigil_cmd("demo", "--no-tui", "--duration", "8"),
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    assert "iris" in out.stdout and "UP" in out.stdout, out.stdout
    # Everything it started is gone, its temporary dir included.
    assert not list(tmp_path.glob("vigil-demo-*"))
