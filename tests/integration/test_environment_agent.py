"""The serving-environment fingerprint in a real agent: it supervises a model server running
from a real venv (made here with ``python -m venv``) that answers ``GET /version`` as vLLM
does, with its model artifact behind a deploy link. The agent records the fingerprint; a
package upgraded in the server's venv on disk becomes an audited ``environment.changed`` event
naming the item, old and new; the status hash moves with it; the CLI prints it; and a change
made while the agent was stopped is seen when it starts again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import free_port
from tests.helpers import RunningAgent, child_env, running_agent, vigil_cmd, wait_for, write_config

pytestmark = pytest.mark.integration

SERVER = """
import http.server, json, pathlib, sys

port, version_file = int(sys.argv[1]), pathlib.Path(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/version":
            body = json.dumps({"version": version_file.read_text().strip()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def _setup(tmp: Path) -> tuple[Path, Path, Path, Path]:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    meta = site / "torch-2.4.0.dist-info" / "METADATA"
    meta.parent.mkdir()
    meta.write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.4.0\n")
    version_file = tmp / "server-version"
    version_file.write_text("0.6.3\n")
    (tmp / "server.py").write_text(SERVER)
    artifact = tmp / "versions" / "v1"
    artifact.mkdir(parents=True)
    (artifact / "weights.bin").write_bytes(b"weights" * 1000)
    link = tmp / "current"
    link.symlink_to(artifact)
    return venv, meta, version_file, link


def _config(tmp: Path, venv: Path, version_file: Path, link: Path, port: int) -> Path:
    body = f"""
fingerprint_interval = "1s"

[[process]]
name = "srv"
command = ["{venv}/bin/python", "{tmp}/server.py", "{port}", "{version_file}"]
port = {port}
hang_after_failures = 0
stop_timeout = "2s"

[[model]]
name = "llm"
protocol = "openai"
url = "http://127.0.0.1:{port}/v1"
process = "srv"
interval = "2s"
[model.deploy]
link = "{link}"
"""
    # fingerprint_interval belongs to [agent]: write_config's table is the last one open
    # before the body, so the body's first line lands in it.
    return write_config(tmp, body)


def _environment(agent: RunningAgent, query: str = "") -> dict[str, Any]:
    code, body = agent.get("/api/v1/environment" + query)
    assert code == 200, body
    return body


def _events(agent: RunningAgent, kind: str) -> list[dict[str, Any]]:
    code, body = agent.get(f"/api/v1/events?kind={kind}&limit=50")
    assert code == 200, body
    return list(body["events"])


def test_a_package_upgraded_in_the_servers_venv_is_an_audited_change(tmp_path: Path) -> None:
    venv, meta, version_file, link = _setup(tmp_path)
    port = free_port()
    cfg = _config(tmp_path, venv, version_file, link, port)
    with running_agent(cfg) as agent:

        def recorded() -> dict[str, Any] | None:
            env = _environment(agent)
            sections = env["sections"]
            model = sections.get("model:llm", {})
            ready = "pkg:torch" in sections.get("process:srv", {}) and "server.version" in model
            return env if ready and "artifact" in model else None

        env = wait_for(recorded, 30, what="the first fingerprint with the process and model")
        assert env is not None
        sections = env["sections"]
        proc = sections["process:srv"]
        assert proc["pkg:torch"] == "2.4.0" and proc["packages"] == "1"
        assert proc["interpreter"] == f"{venv}/bin/python"
        assert proc["python"] == ".".join(map(str, sys.version_info[:3]))
        model = sections["model:llm"]
        assert (model["server"], model["server.version"]) == ("vllm", "0.6.3")
        assert model["artifact"].startswith("sha256:")
        assert model["artifact.path"] == str(link.resolve())
        assert sections["host"]["kernel"] and sections["host"]["vigil"]
        assert agent.status()["environment_hash"] == env["hash"]

        # The package is upgraded in place, on disk, while the server runs.
        meta.write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.5.0\n")

        def changed() -> list[dict[str, Any]]:
            return _events(agent, "environment.changed")

        (event,) = wait_for(changed, 30, what="an environment.changed event")
        assert event["subject"] == "process:srv"
        assert event["data"]["changes"] == [
            {"section": "process:srv", "item": "pkg:torch", "old": "2.4.0", "new": "2.5.0"}
        ]
        assert "pkg:torch 2.4.0 -> 2.5.0" in event["message"]
        assert _events(agent, "environment.recorded")
        after = _environment(agent, "?history=5")
        assert after["sections"]["process:srv"]["pkg:torch"] == "2.5.0"
        assert after["hash"] != env["hash"] == event["data"]["previous_hash"]
        assert after["last_change"]["changes"] == event["data"]["changes"]
        assert after["history"][0] | {"ts_ms": 0} == {
            "ts_ms": 0,
            "section": "process:srv",
            "item": "pkg:torch",
            "old": "2.4.0",
            "new": "2.5.0",
        }
        assert agent.status()["environment_hash"] == after["hash"]
        code, refused = agent.get("/api/v1/environment?history=0")
        assert code == 400 and "history" in refused["error"]

        out = subprocess.run(
            vigil_cmd("environment", "--config", str(cfg)),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "process:srv" in out.stdout and "pkg:torch" in out.stdout
        assert "process:srv pkg:torch 2.4.0 -> 2.5.0" in out.stdout
        as_json = subprocess.run(
            vigil_cmd("environment", "--json", "--config", str(cfg)),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
            check=True,
        )
        assert json.loads(as_json.stdout)["sections"]["process:srv"]["pkg:torch"] == "2.5.0"
        # No further change: no further event, however many collections ran.
        wait_for(lambda: _environment(agent)["collected_ms"] > after["collected_ms"], 10)
        assert len(changed()) == 1

    # While the agent is stopped, the server is upgraded; the next agent sees it at start.
    version_file.write_text("0.6.4\n")
    with running_agent(cfg) as agent:

        def upgraded() -> list[dict[str, Any]]:
            return [
                e
                for e in _events(agent, "environment.changed")
                if e["data"]["changes"][0]["item"] == "server.version"
            ]

        (event,) = wait_for(upgraded, 30, what="the server's version change")
        assert event["data"]["changes"] == [
            {"section": "model:llm", "item": "server.version", "old": "0.6.3", "new": "0.6.4"}
        ]
        # The stored fingerprint was the baseline: nothing else is reported as new (nor as gone
        # while the restarted server did not answer yet: unknown is not gone).
        seen = _environment(agent)["collected_ms"]
        wait_for(lambda: _environment(agent)["collected_ms"] > seen, 10)
        assert len(_events(agent, "environment.recorded")) == 1
        assert len(_events(agent, "environment.changed")) == 2
