"""``vigil report --fleet`` against real agents: three agents each supervising a model server
(``python -m http.server``, probed as a tcp model) from a real venv, two venvs with torch 2.4.0
and one with torch 2.5.0, and a fourth agent stopped before the report. The report, in all
four formats, groups the hosts by their ``region`` label (the agents' own, one overridden by the
fleet file), lists the stopped agent as unreachable with a coverage of 3 of 4, and lists the
odd host's torch against its group's majority."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import free_port
from tests.helpers import RunningAgent, child_env, running_agent, vigil_cmd, wait_for, write_config

pytestmark = pytest.mark.integration


def _venv(path: Path, torch: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    (site,) = path.glob("lib/python3*/site-packages")
    meta = site / f"torch-{torch}.dist-info" / "METADATA"
    meta.parent.mkdir()
    meta.write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {torch}\n")
    return path


def _config(tmp: Path, venv: Path | None, region: str) -> Path:
    tmp.mkdir()
    body = f'labels = {{ region = "{region}" }}\n'
    if venv is not None:
        port = free_port()
        body += f"""
[[process]]
name = "srv"
command = ["{venv}/bin/python", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
port = {port}
hang_after_failures = 0
stop_timeout = "2s"

[[model]]
name = "web"
protocol = "tcp"
url = "tcp://127.0.0.1:{port}"
process = "srv"
interval = "1s"
"""
    # labels belong to [agent]: write_config's table is the last one open before the body.
    return write_config(tmp, body, sample_interval="1s")


def _ready(agent: RunningAgent) -> bool:
    code, env = agent.get("/api/v1/environment")
    if code != 200 or "pkg:torch" not in env["sections"].get("process:srv", {}):
        return False
    code, models = agent.get("/api/v1/models")
    return code == 200 and any(m.get("last_run") for m in models["models"])


def _report(fleet: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vigil_cmd("report", "--fleet", str(fleet), "--group-by", "region", *args),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )


def test_fleet_report_of_three_agents_and_one_stopped(tmp_path: Path) -> None:
    old = _venv(tmp_path / "venv-old", "2.4.0")
    new = _venv(tmp_path / "venv-new", "2.5.0")
    # Stopped before the report: its address then refuses connections.
    with running_agent(_config(tmp_path / "d", None, "us")) as gone:
        d_url, d_token = gone.url, gone.token
    with ExitStack() as stack:
        a, b, c = (
            stack.enter_context(running_agent(_config(tmp_path / name, venv, region)))
            for name, venv, region in (("a", old, "eu"), ("b", old, "eu"), ("c", new, "ap"))
        )
        for agent in (a, b, c):
            wait_for(partial(_ready, agent), 40, what="a fingerprint and a probe run")
        fleet = tmp_path / "fleet.toml"
        members = "".join(
            f'\n[[agent]]\nname = "{name}"\nurl = "{agent.url}"\ntoken = "{agent.token}"\n'
            for name, agent in (("gpu-a", a), ("gpu-b", b))
        )
        # c says region "ap"; the fleet file puts it in "eu" with a and b.
        members += (
            f'\n[[agent]]\nname = "gpu-c"\nurl = "{c.url}"\ntoken = "{c.token}"\n'
            'labels = { region = "eu" }\n'
            f'\n[[agent]]\nname = "gpu-d"\nurl = "{d_url}"\ntoken = "{d_token}"\n'
            'labels = { region = "us" }\n'
        )
        fleet.write_text(members, encoding="utf-8")

        out = tmp_path / "out"
        out.mkdir()
        runs = {
            fmt: _report(fleet, "--since", "1h", "-o", str(out / name))
            for fmt, name in (
                ("json", "fleet.json"),
                ("html", "fleet.html"),
                ("md", "fleet.md"),
            )
        }
        runs["csv"] = _report(fleet, "--format", "csv", "-o", str(out / "csv"))

    for fmt, run in runs.items():
        # One host did not answer: the report is written, and the command says so (exit 1).
        assert run.returncode == 1, (fmt, run.stderr)
        assert "coverage: 3 of 4 hosts answered" in run.stderr
        assert "gpu-d: unreachable: cannot connect" in run.stderr

    doc: dict[str, Any] = json.loads((out / "fleet.json").read_text())
    assert doc["coverage"] == {"answered": 3, "hosts": 4}
    assert doc["group_by"] == "region"
    groups = {g["group"]: g for g in doc["groups"]}
    assert sorted(groups) == ["eu", "us"]
    assert groups["eu"]["hosts"] == ["gpu-a", "gpu-b", "gpu-c"]
    assert groups["us"]["unreachable"] == ["gpu-d"]
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert not hosts["gpu-d"]["reachable"]
    assert "connection refused" in hosts["gpu-d"]["error"]
    assert all(hosts[h]["reachable"] for h in ("gpu-a", "gpu-b", "gpu-c"))
    assert hosts["gpu-c"]["labels"] == {"region": "eu"}
    assert hosts["gpu-a"]["reported_host"] == "test-host"
    fleet_kpis = doc["fleet"]
    assert fleet_kpis["models"] == 3 and fleet_kpis["runs"] >= 3
    assert fleet_kpis["runs"] == sum(
        hosts[h]["kpis"]["runs"] for h in hosts if hosts[h]["reachable"]
    )
    assert fleet_kpis["availability"] == pytest.approx(fleet_kpis["ok_runs"] / fleet_kpis["runs"])
    # gpu-c serves from the other venv: its torch (and its interpreter's path) differ from the
    # majority of gpu-a and gpu-b; nobody else differs.
    diffs = doc["env_differences"]
    assert {d["host"] for d in diffs} == {"gpu-c"}
    torch = next(d for d in diffs if d["item"] == "pkg:torch")
    assert torch == {
        "group": "eu",
        "host": "gpu-c",
        "section": "process:srv",
        "item": "pkg:torch",
        "value": "2.5.0",
        "majority": "2.4.0",
        "tied": False,
    }
    assert hosts["gpu-c"]["kpis"]["env_differences"] == len(diffs)

    html = (out / "fleet.html").read_text()
    assert "<svg" in html and "gpu-d (unreachable)" in html
    assert "3 of 4 hosts answered" in html and "pkg:torch" in html
    md = (out / "fleet.md").read_text()
    assert "| gpu-d | us | unreachable |" in md
    assert "| eu | gpu-c | process:srv | pkg:torch | 2.5.0 | 2.4.0 |" in md
    with (out / "csv" / "environment.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {
        "host": "gpu-c",
        "item": "pkg:torch",
        "value": "2.5.0",
        "majority": "2.4.0",
    }.items() <= next(r for r in rows if r["item"] == "pkg:torch").items()
    with (out / "csv" / "hosts.csv").open(newline="") as fh:
        states = {r["host"]: r["state"] for r in csv.DictReader(fh)}
    assert states == {"gpu-a": "ok", "gpu-b": "ok", "gpu-c": "ok", "gpu-d": "unreachable"}
