"""A real agent probing a real model server: states, incidents, percentiles, secrets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.demo import MODEL_PATH
from tests.helpers import (
    child_env,
    running_agent,
    server_process,
    vigil_cmd,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


@contextmanager
def demo_server(port: int = 0) -> Iterator[tuple[subprocess.Popen[str], int]]:
    args = ("--model", str(MODEL_PATH), "--name", "iris", "--port", str(port))
    with server_process("agent.demo.server", *args) as (proc, url):
        yield proc, int(url.rsplit(":", 1)[1])


def post(url: str, token: str, operator: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    if operator:
        headers["X-Vigil-Operator"] = operator
    req = urllib.request.Request(url, method="POST", headers=headers, data=b"")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_down_opens_an_incident_recovery_resolves_it(tmp_path: Path) -> None:
    with demo_server() as (server, port):
        cfg = write_config(
            tmp_path,
            f"""
[[model]]
name = "iris"
protocol = "kserve_v2"
url = "http://127.0.0.1:{port}"
interval = "200ms"
timeout = "1s"
jitter = "0s"
[model.canary]
model = "iris"
inputs = [{{ name = "input", shape = [1, 4], datatype = "FP32", data = [5.1, 3.5, 1.4, 0.2] }}]
""",
        )
        with running_agent(cfg) as agent:

            def models() -> list[dict]:
                return agent.get("/api/v1/models")[1]["models"]

            wait_for(lambda: models()[0]["state"] == "up", what="iris up")
            wait_for(
                lambda: models()[0]["latency"]["5m"]["e2e_ms"]["count"] >= 3,
                what="three answered runs",
            )
            iris = models()[0]
            e2e = iris["latency"]["5m"]["e2e_ms"]
            assert 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"]
            assert iris["availability_1h"] == 1.0 and iris["incident"] is None

            out = subprocess.run(
                vigil_cmd("status", "--config", str(cfg)),
                capture_output=True,
                text=True,
                env=child_env(),
                timeout=30,
            )
            assert out.returncode == 0 and "P95" in out.stdout and "100.0%" in out.stdout

            server.send_signal(signal.SIGKILL)
            server.wait()
            wait_for(lambda: models()[0]["state"] == "down", what="iris down")
            incident = wait_for(lambda: models()[0]["incident"], what="an open incident")
            assert incident["kind"] == "model_down" and incident["state"] == "open"
            assert "refused" in incident["cause"]
            open_list = agent.get("/api/v1/incidents?state=open")[1]["incidents"]
            assert [i["id"] for i in open_list] == [incident["id"]]

            out = subprocess.run(
                vigil_cmd("status", "--config", str(cfg)),
                capture_output=True,
                text=True,
                env=child_env(),
                timeout=30,
            )
            assert out.returncode == 1 and "DOWN" in out.stdout

            url = f"{agent.url}/api/v1/incidents/{incident['id']}/acknowledge"
            read_token = (agent.data_dir / "api-token.read").read_text().strip()
            assert post(url, read_token)[0] == 403
            code, body = post(url, agent.token, "alice@laptop")
            assert code == 200 and body["incident"]["acknowledged_by"] == "alice@laptop"

            with demo_server(port):
                wait_for(lambda: models()[0]["state"] == "up", what="iris up again")

                def resolved() -> dict | None:
                    found = agent.get("/api/v1/incidents?state=resolved")[1]["incidents"]
                    return found[0] if found else None

                done = wait_for(resolved, what="the incident resolved")
                assert done["id"] == incident["id"] and done["resolved_by"] == "auto"
                assert done["ttr_ms"] > 0
                events = agent.get("/api/v1/events?kind=incident.")[1]["events"]
                assert [e["kind"] for e in reversed(events)] == [
                    "incident.opened",
                    "incident.acknowledged",
                    "incident.resolved",
                ]
                assert models()[0]["outcomes_1h"]["refused"] >= 2


ECHO_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("bad credentials: " + self.headers.get("Authorization", "none")).encode()
        self.send_response(401); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


@pytest.mark.parametrize("source", ["api_key_env", "api_key_file"])
def test_api_key_never_reaches_storage_logs_or_api(tmp_path: Path, source: str) -> None:
    secret = "sk-test-9f8e7d6c5b4a"
    if source == "api_key_env":
        setting, env = 'api_key_env = "VIGIL_TEST_KEY"', {"VIGIL_TEST_KEY": secret}
    else:
        # Outside the data dir (which is searched below), ending in a newline as `echo` and
        # editors leave it: the key sent is the stripped one.
        key = tmp_path / "secrets" / "guarded.key"
        key.parent.mkdir()
        key.write_text(secret + "\n", encoding="utf-8")
        key.chmod(0o600)
        setting, env = f'api_key_file = "{key}"', {}
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        cfg = write_config(
            tmp_path,
            f"""
[[model]]
name = "guarded"
protocol = "http"
url = "http://127.0.0.1:{port}/"
interval = "200ms"
{setting}
""",
        )
        with running_agent(cfg, env=env) as agent:
            runs = wait_for(
                lambda: agent.get("/api/v1/probe_runs?model=guarded")[1]["probe_runs"],
                what="probe runs",
            )
            assert runs[0]["category"] == "http_error"
            # The server echoes the header it got, the agent scrubs the key from the error:
            # the server did get exactly the key.
            assert runs[0]["error"].endswith("bad credentials: Bearer ***"), runs[0]["error"]
            for path in (
                "/api/v1/status",
                "/api/v1/models",
                "/api/v1/events",
                "/api/v1/probe_runs",
                "/api/v1/incidents",
                "/metrics",
            ):
                assert secret not in json.dumps(agent.get(path)[1]), path
            agent.stop()
            assert secret not in agent.log()
        for f in agent.data_dir.rglob("*"):
            if f.is_file():
                assert secret.encode() not in f.read_bytes(), f
    finally:
        echo.kill()
        echo.wait()


def test_missing_api_key_env_refuses_the_config(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        """
[[model]]
name = "guarded"
protocol = "http"
url = "http://127.0.0.1:9/"
api_key_env = "VIGIL_TEST_UNSET_KEY"
""",
    )
    out = subprocess.run(
        vigil_cmd("agent", "run", "--config", str(cfg)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert out.returncode == 2
    assert "model[0].api_key_env" in out.stderr and "VIGIL_TEST_UNSET_KEY" in out.stderr


def test_a_hanging_server_never_delays_another_model(tmp_path: Path) -> None:
    import socket

    # A listener that never accepts: connections queue in the backlog and requests hang.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    ok = socket.socket()
    ok.bind(("127.0.0.1", 0))
    ok.listen(64)
    try:
        cfg = write_config(
            tmp_path,
            f"""
[[model]]
name = "hangs"
protocol = "http"
url = "http://127.0.0.1:{hang.getsockname()[1]}/"
interval = "200ms"
timeout = "2s"
jitter = "0s"

[[model]]
name = "fast"
protocol = "tcp"
url = "tcp://127.0.0.1:{ok.getsockname()[1]}"
interval = "200ms"
jitter = "0s"
""",
        )
        with running_agent(cfg) as agent:

            def runs(model: str) -> list[dict]:
                return agent.get(f"/api/v1/probe_runs?model={model}&limit=1000")[1]["probe_runs"]

            timed_out = wait_for(lambda: runs("hangs"), timeout=20, what="the hanging run")
            assert timed_out[0]["category"] == "timeout"
            fast = [r for r in runs("fast") if r["ts_ms"] <= timed_out[-1]["ts_ms"] + 2000]
            # While one 2 s request hung, the other model kept its 200 ms rhythm (10 runs if
            # perfectly on time; half of that proves it was never blocked behind the hang).
            assert len(fast) >= 5, fast
            assert all(r["category"] == "ok" for r in fast)
    finally:
        hang.close()
        ok.close()
