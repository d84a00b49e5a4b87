"""What the deploy integration tests share: a model server ``srv`` behind model ``clf`` with a
``[model.deploy]``, version directories holding a real ONNX model, and the agent's deploy API
read back (a deployment, its events, waiting for a state).

The server is the demo KServe V2 server (``tests/fakes/versioned_server.py``); a version's
directory may hold ``delay_ms``, a slower version. The same weights in two directories with
different notes are two versions with equal answers; other weights answer differently.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil

from tests import onnx_models
from tests.helpers import RunningAgent, child_env, vigil_cmd, wait_for

ALICE, BOB = "alice@ci", "bob@ops"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def version(root: Path, name: str, *, scale: float = 1.0, delay_ms: int | None = None) -> Path:
    """A version directory: ``model.onnx``, notes (so equal weights still hash apart) and
    maybe ``delay_ms``."""
    d = root / "versions" / name
    d.mkdir(parents=True)
    onnx_models.linear(d / "model.onnx", scale)
    (d / "NOTES").write_text(f"version {name}\n")
    if delay_ms is not None:
        (d / "delay_ms").write_text(str(delay_ms))
    return d.resolve()


def srv_model_toml(link: Path, port: int, bake: str, process_extra: str = "") -> str:
    """``[[process]]`` srv serving ``link``'s model on ``port`` and ``[[model]]`` clf probing
    it, with a ``[model.deploy]`` (whose table a caller may go on with). ``process_extra``
    goes inside the process's table (its ``[process.env]``)."""
    server = [sys.executable, "-m", "tests.fakes.versioned_server"]
    argv = [*server, "--model", f"{link}/model.onnx", "--name", "clf", "--port", str(port)]
    return f"""
[[process]]
name = "srv"
command = {json.dumps(argv)}
port = {port}
stop_timeout = "5s"
startup_timeout = "60s"
{process_extra}

[[model]]
name = "clf"
protocol = "kserve_v2"
url = "http://127.0.0.1:{port}"
interval = "250ms"
jitter = "0s"
timeout = "5s"
process = "srv"

[model.deploy]
link = "{link}"
bake = "{bake}"
min_good_canaries = 3
latency_min_delta = "150ms"
"""


def call(
    agent: RunningAgent, method: str, path: str, body: Any = None, operator: str = ALICE
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {agent.token}", "X-Vigil-Operator": operator}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif method == "POST":
        data = b""
    req = urllib.request.Request(agent.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def vigil(cfg: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vigil_cmd(*args, "--config", str(cfg)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
    )


def deployment(agent: RunningAgent, dep_id: int) -> dict[str, Any]:
    code, body = call(agent, "GET", f"/api/v1/deployments/{dep_id}")
    assert code == 200, body
    return body["deployment"]


def ended(agent: RunningAgent, dep_id: int, timeout: float = 60) -> dict[str, Any]:
    """The deployment once it is over (promoted, rolled back, failed or cancelled)."""

    def over() -> dict[str, Any]:
        d = deployment(agent, dep_id)
        return {} if d["in_flight"] else d

    return wait_for(
        over,
        timeout,
        what=f"deployment {dep_id} to end",
    )


def in_state(agent: RunningAgent, dep_id: int, state: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (d := deployment(agent, dep_id))["state"] == state and d,
        timeout,
        what=f"deployment {dep_id} {state}",
    )


def events(agent: RunningAgent, kind: str) -> list[dict[str, Any]]:
    code, body = agent.get(f"/api/v1/events?limit=1000&kind={kind}")
    assert code == 200, body
    return body["events"][::-1]


def deploy_events(agent: RunningAgent, dep_id: int) -> list[str]:
    return [e["kind"] for e in events(agent, "deploy.") if e["data"].get("deployment") == dep_id]


def srv_pid(agent: RunningAgent) -> int | None:
    code, body = agent.get("/api/v1/processes")
    assert code == 200, body
    found = [p for p in body["processes"] if p["name"] == "srv"]
    return found[0]["pid"] if found and found[0]["state"] == "running" else None


def model_up(agent: RunningAgent) -> bool:
    return any(m["name"] == "clf" and m["state"] == "up" for m in agent.status()["models"])


@contextmanager
def reaper(tmp: Path) -> Iterator[None]:
    """Kill, at the end, any model server of this test left behind by a killed agent."""
    try:
        yield
    finally:
        for proc in psutil.process_iter(["cmdline"]):
            with suppress(psutil.Error):
                line = " ".join(proc.info["cmdline"] or [])
                if "versioned_server" in line and str(tmp) in line:
                    proc.kill()
