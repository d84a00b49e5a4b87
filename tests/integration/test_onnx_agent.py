"""A real agent probing a local ONNX model, and ``vigil probe record-golden``, as processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest

from tests import onnx_models
from tests.helpers import child_env, running_agent, vigil_cmd, wait_for, write_config

pytestmark = pytest.mark.integration


def record_golden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vigil_cmd("probe", "record-golden", *args),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )


def workers_of(pid: int) -> list[int]:
    """Live ONNX worker pids under process ``pid``."""
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "probes.onnx_worker" in child.cmdline() and child.status() != "zombie":
                out.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def model_toml(model: Path, golden: Path, iterations: int) -> str:
    return f"""
[[model]]
name = "clf"
protocol = "onnx"
url = "file://{model}"
interval = "200ms"
timeout = "10s"
jitter = "0s"
[model.canary]
golden = "{golden}"
iterations = {iterations}
"""


def test_agent_probes_an_onnx_model_and_sees_it_change(tmp_path: Path) -> None:
    model = onnx_models.linear(tmp_path / "clf.onnx")
    golden = tmp_path / "golden.json"
    out = record_golden("--model", str(model), "-o", str(golden))
    assert out.returncode == 0, out.stderr
    assert "output y: shape [1, 3]" in out.stdout and f'golden = "{golden}"' in out.stdout
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert json.loads(golden.read_text())["sha256"] == digest

    cfg = write_config(tmp_path, model_toml(model, golden, iterations=3))
    with running_agent(cfg) as agent:

        def clf() -> dict:
            return agent.get("/api/v1/models")[1]["models"][0]

        wait_for(lambda: clf()["latency"]["5m"]["e2e_ms"]["count"] >= 2, what="two runs")
        status = clf()
        assert status["state"] == "up" and status["last_run"]["category"] == "ok"
        e2e = status["latency"]["5m"]["e2e_ms"]
        assert 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"]
        assert set(status["last_run"]["phases_ms"]) >= {"p50", "p95", "p99"}
        info = status["info"]
        assert info["sha256"] == digest
        assert info["opset"] == {"ai.onnx": onnx_models.OPSET}
        assert [i["name"] for i in info["inputs"]] == ["x"]
        assert info["outputs"] == [{"name": "y", "type": "tensor(float)", "shape": ["batch", 3]}]
        [first_worker] = workers_of(agent.proc.pid)

        # A deployment replaces the model with different weights: the golden no longer holds.
        onnx_models.linear(tmp_path / "new.onnx", scale=1.5)
        os.replace(tmp_path / "new.onnx", model)
        changed = wait_for(lambda: (m := clf())["state"] == "degraded" and m, what="clf degraded")
        assert changed["last_run"]["category"] == "wrong_output"
        assert "output 'y'" in changed["last_run"]["error"]
        assert "worst at [0, 2]" in changed["last_run"]["error"]
        assert changed["info"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        assert changed["info"]["reloaded_at"] > 0
        wait_for(lambda: not psutil.pid_exists(first_worker), what="the old worker gone")
        [second_worker] = workers_of(agent.proc.pid)

        # A config change replaces the probe: its worker is closed, a new probe starts its own.
        tmp_cfg = tmp_path / "vigil.toml.tmp"
        tmp_cfg.write_text(cfg.read_text().replace("iterations = 3", "iterations = 2"))
        os.replace(tmp_cfg, cfg)
        wait_for(lambda: not psutil.pid_exists(second_worker), what="the replaced probe's worker")
        [third_worker] = wait_for(lambda: workers_of(agent.proc.pid), what="a new worker")
        # The new probe judges the changed model on its own (its state starts unknown).
        wait_for(lambda: (clf()["last_run"] or {}).get("category") == "wrong_output")

        assert agent.stop() == 0
        assert not psutil.pid_exists(third_worker), "the agent reaps its worker on SIGTERM"
    log = agent.log()
    assert "never retrieved" not in log and "was destroyed but it is pending" not in log, log


def test_record_golden_cli_exit_codes(tmp_path: Path) -> None:
    model = onnx_models.linear(tmp_path / "m.onnx")
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"x": [[1, 2, 3, 4], [0, 0, 0, 1]]}))
    golden = tmp_path / "golden.json"
    out = record_golden("--model", str(model), "--inputs", str(inputs), "-o", str(golden))
    assert out.returncode == 0, out.stderr
    recorded = json.loads(golden.read_text())
    assert recorded["inputs"] == {"x": [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]}
    assert [round(v, 4) for v in recorded["outputs"]["y"][0]] == [6.1, 7.2, 8.3]

    out = record_golden("--model", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "o.json"))
    assert out.returncode == 2
    assert out.stderr == f"vigil: {tmp_path}/none.onnx: no such model file\n"

    nan = onnx_models.nan_output(tmp_path / "nan.onnx")
    out = record_golden("--model", str(nan), "-o", str(tmp_path / "o.json"))
    assert out.returncode == 1 and "refusing to record a broken output" in out.stderr
    assert not (tmp_path / "o.json").exists()
