"""The demo KServe V2 server as a real subprocess on loopback."""

from __future__ import annotations

import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from agent.demo import MODEL_PATH

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "iris"
STARTUP_S = 30.0
SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout_s: float) -> re.Match[str]:
    """Read the child's stdout until a line matches, the child exits or time runs out."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:  # EOF: the server died before binding
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    proc.kill()
    _, err = proc.communicate(timeout=10)
    pytest.fail(f"server did not print {pattern!r}; stdout={seen!r} stderr={err!r}")


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The demo server on a free loopback port, and its base URL."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.demo.server",
            "--model",
            str(MODEL_PATH),
            "--name",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        match = _wait_for_line(proc, r"listening on (http://127\.0\.0\.1:\d+)", STARTUP_S)
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _request(url: str, body: object | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _infer(base: str, inputs: list[dict[str, Any]]) -> tuple[int, Any]:
    status, raw = _request(f"{base}/v2/models/{MODEL}/infer", {"id": "t1", "inputs": inputs})
    return status, json.loads(raw)


def test_health_and_metadata(server: tuple[subprocess.Popen[str], str]) -> None:
    _, base = server
    assert _request(f"{base}/v2/health/live")[0] == 200
    assert _request(f"{base}/v2/health/ready")[0] == 200
    assert _request(f"{base}/v2/models/{MODEL}/ready")[0] == 200
    status, raw = _request(f"{base}/v2")
    assert status == 200 and json.loads(raw)["name"]
    status, raw = _request(f"{base}/v2/models/{MODEL}")
    assert status == 200
    meta = json.loads(raw)
    assert meta["name"] == MODEL and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    status, raw = _request(f"{base}/v2/models/nope")
    assert status == 404 and "nope" in json.loads(raw)["error"]


def test_infer_matches_onnxruntime(server: tuple[subprocess.Popen[str], str]) -> None:
    _, base = server
    status, reply = _infer(
        base, [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": SAMPLE}]
    )
    assert status == 200, reply
    assert reply["model_name"] == MODEL and reply["id"] == "t1"
    (out,) = reply["outputs"]
    assert out["name"] == "probabilities" and out["shape"] == [2, 3]
    assert out["datatype"] == "FP32"
    session = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    golden = session.run(None, {"input": np.array(SAMPLE, dtype=np.float32)})[0]
    assert np.allclose(out["data"], golden.reshape(-1), atol=1e-6)
    for row in (out["data"][:3], out["data"][3:]):
        assert math.isclose(sum(row), 1.0, abs_tol=1e-5)


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ({"name": "wrong", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}, "'wrong'"),
        ({"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}, "shape"),
        ({"name": "input", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}, "datatype"),
        ({"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}, "fill"),
    ],
)
def test_bad_input_is_400_naming_the_problem(
    server: tuple[subprocess.Popen[str], str], item: dict[str, Any], named: str
) -> None:
    _, base = server
    status, reply = _infer(base, [item])
    assert status == 400
    assert named in reply["error"]


def test_metrics_count_requests(server: tuple[subprocess.Popen[str], str]) -> None:
    _, base = server
    good = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    for _ in range(3):
        assert _infer(base, [good])[0] == 200
    assert _infer(base, [{**good, "datatype": "FP64"}])[0] == 400
    status, raw = _request(f"{base}/metrics")
    text = raw.decode()
    assert status == 200
    assert f'demo_inference_requests_total{{model="{MODEL}",outcome="success"}} 3.0' in text
    assert f'demo_inference_requests_total{{model="{MODEL}",outcome="bad_request"}} 1.0' in text
    assert f'demo_inference_duration_seconds_count{{model="{MODEL}"}} 4.0' in text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero_promptly(
    server: tuple[subprocess.Popen[str], str], sig: signal.Signals
) -> None:
    proc, base = server
    assert _request(f"{base}/v2/health/live")[0] == 200  # it serves before we stop it
    proc.send_signal(sig)
    assert proc.wait(timeout=5) == 0


def test_unloadable_model_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    done = subprocess.run(
        [sys.executable, "-m", "agent.demo.server", "--model", str(bad), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot load model" in done.stderr
