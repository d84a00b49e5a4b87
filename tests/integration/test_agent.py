"""The agent as a real process: API and tokens, status, signals, reload, supervision."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import child_env, running_agent, vigil_cmd, wait_for, write_config

pytestmark = pytest.mark.integration


def _db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'vigil.db'}?mode=ro", uri=True)


def _has_resources(agent) -> bool:
    names = {r["name"] for r in agent.status()["resources"]}
    return {"host.cpu.percent", "host.mem.used_bytes"} <= names


def test_api_requires_token_and_serves_status(tmp_path: Path) -> None:
    with running_agent(write_config(tmp_path)) as agent:
        code, body = agent.get("/api/v1/status", token=None)
        assert code == 401 and "bearer" in body["error"]
        code, body = agent.get("/api/v1/status", token="wrong")
        # Echoes nothing of what was sent (issue 17), says what a token may have become.
        assert code == 401 and body["error"].startswith("token rejected ("), body
        assert agent.get("/healthz", token=None) == (200, {"ok": True})

        wait_for(lambda: _has_resources(agent), what="resource values in status")
        status = agent.status()
        assert status["host"] == "test-host"
        assert status["version"]
        mem_total = next(
            r["value"] for r in status["resources"] if r["name"] == "host.mem.total_bytes"
        )
        assert mem_total > 0

        read_token = (agent.data_dir / "api-token.read").read_text().strip()
        assert agent.get("/api/v1/status", token=read_token)[0] == 200

        for name in ("api-token", "api-token.read"):
            mode = stat.S_IMODE((agent.data_dir / name).stat().st_mode)
            assert mode == 0o600, f"{name} has mode {oct(mode)}"


def test_series_events_and_metrics(tmp_path: Path) -> None:
    with running_agent(write_config(tmp_path)) as agent:

        def points() -> list:
            code, body = agent.get("/api/v1/series?name=host.cpu.percent&since=-1m")
            assert code == 200, body
            return body["points"] if len(body["points"]) >= 3 else []

        pts = wait_for(points, what="three cpu points")
        assert all(0 <= p["avg"] <= 100 for p in pts)
        assert [p["ts_ms"] for p in pts] == sorted(p["ts_ms"] for p in pts)
        # until= bounds the range: the points up to the second one, no later.
        cut = pts[1]["ts_ms"]
        code, body = agent.get(
            f"/api/v1/series?name=host.cpu.percent&since={pts[0]['ts_ms']}&until={cut}"
        )
        assert code == 200, body
        assert [p["ts_ms"] for p in body["points"]] == [p["ts_ms"] for p in pts[:2]]

        code, body = agent.get(
            "/api/v1/series?name=host.cpu.percent&labels=%7B%22core%22%3A%220"
            "%22%7D&since=-1m&step=60s"
        )
        assert code == 200 and len(body["points"]) >= 1 and body["points"][0]["count"] >= 1

        code, body = agent.get("/api/v1/series?name=host.cpu.percent&since=yesterday")
        assert code == 400 and "since" in body["error"]
        code, body = agent.get("/api/v1/series")
        assert code == 400 and "name" in body["error"]

        code, body = agent.get("/api/v1/events?kind=agent.")
        assert code == 200
        assert body["events"][0]["kind"] == "agent.started"

        code, text = agent.get("/metrics")
        assert code == 200
        assert "vigil_host_cpu_percent " in text
        assert "vigil_agent_uptime_seconds" in text
        assert agent.get("/metrics", token=None)[0] == 401


def test_status_command_prints_json_and_table(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    with running_agent(cfg) as agent:
        wait_for(lambda: _has_resources(agent), what="resources")
        out = subprocess.run(
            vigil_cmd("status", "--json", "--config", str(cfg)),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        names = {r["name"] for r in data["resources"]}
        assert "host.cpu.percent" in names and "host.mem.used_bytes" in names

        # By URL and token file, as from another machine.
        out = subprocess.run(
            vigil_cmd(
                "status", "--url", agent.url, "--token-file", str(agent.data_dir / "api-token")
            ),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert "host test-host" in out.stdout and "cpu " in out.stdout

    # Agent gone: a clear message and exit 1.
    out = subprocess.run(
        vigil_cmd("status", "--config", str(cfg)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert out.returncode == 1
    assert "api.json" in out.stderr or "cannot reach" in out.stderr


def test_sigterm_flushes_the_writer(tmp_path: Path) -> None:
    # A 1 s flush interval means anything collected in the last second is only in memory
    # when the signal arrives: the shutdown must flush it.
    with running_agent(write_config(tmp_path, sample_interval="100ms")) as agent:
        wait_for(lambda: _has_resources(agent), what="resources")
        assert agent.stop(signal.SIGTERM) == 0
        log = agent.log()
    assert "agent stopped" in log
    conn = _db(agent.data_dir)
    kinds = [k for (k,) in conn.execute("SELECT kind FROM events ORDER BY seq")]
    assert kinds[0] == "agent.started" and kinds[-1] == "agent.stopped"
    n = conn.execute("SELECT count(*) FROM samples_head").fetchone()[0]
    assert n > 0
    assert not (agent.data_dir / "api.json").exists()


def test_sighup_refuses_bad_config_and_keeps_the_old(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        """
[[model]]
name = "web"
protocol = "tcp"
url = "tcp://127.0.0.1:9"
interval = "1s"
""",
    )
    good = cfg.read_text()
    with running_agent(cfg) as agent:
        assert [m["name"] for m in agent.status()["models"]] == ["web"]

        def reloads() -> list[dict]:
            return agent.get("/api/v1/events?kind=config.reloaded")[1]["events"]

        # SIGHUP alone, the file untouched: the signal reloads, and says it was the signal.
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config unchanged reason=signal" in agent.log(), what="SIGHUP reload")

        cfg.write_text(good.replace('interval = "1s"', 'interval = "often"'))
        agent.proc.send_signal(signal.SIGHUP)

        def refused() -> list:
            code, body = agent.get("/api/v1/events?kind=config.reload_refused")
            return body["events"]

        ev = wait_for(refused, what="a config.reload_refused event")[0]
        assert "interval" in ev["message"] and str(cfg) in ev["message"]
        assert agent.proc.poll() is None
        assert [m["name"] for m in agent.status()["models"]] == ["web"]

        # A good change is picked up live from the file, no signal needed (watchdog).
        cfg.write_text(good.replace('name = "web"', 'name = "web2"'))
        wait_for(
            lambda: [m["name"] for m in agent.status()["models"]] == ["web2"],
            what="the reloaded model list",
        )
        by_file = wait_for(
            lambda: [e for e in reloads() if e["data"]["trigger"] == "file change"],
            what="a config.reloaded event from the file watcher",
        )
        assert by_file[0]["data"]["models"] == ["web2"]


def test_supervised_process_is_restarted(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    script = (
        f"import pathlib,sys; p=pathlib.Path({str(marker)!r}); "
        f"p.write_text(p.read_text()+'x' if p.exists() else 'x'); sys.exit(3)"
    )
    cfg = write_config(
        tmp_path,
        f"""
[[process]]
name = "crashy"
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]
restart = "on-failure"
backoff_initial = "100ms"
backoff_max = "200ms"
""",
    )
    with running_agent(cfg) as agent:

        def restarted() -> dict | None:
            procs = agent.status()["processes"]
            return procs[0] if procs and procs[0]["restarts"] >= 2 else None

        proc = wait_for(restarted, what="two restarts")
        assert proc["last_exit"] == "exit 3"
        wanted = {"process.started", "process.exited", "process.restarting"}
        body = wait_for(
            lambda: (lambda b: b if wanted <= {e["kind"] for e in b["events"]} else None)(
                agent.get("/api/v1/events?kind=process.")[1]
            ),
            what="process events",
        )
        exited = next(e for e in body["events"] if e["kind"] == "process.exited")
        assert exited["data"]["returncode"] == 3
        # Each run appends one mark: the first run and at least two restarts really ran.
        wait_for(lambda: len(marker.read_text()) >= 3, what="three runs of the script")


def test_children_are_stopped_with_the_agent(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        """
[[process]]
name = "sleeper"
command = ["sleep", "600"]
""",
    )
    with running_agent(cfg) as agent:
        pid = wait_for(lambda: agent.status()["processes"][0]["pid"], what="sleeper pid")
        os.kill(pid, 0)
        assert agent.stop() == 0

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=5, what="the child to be gone")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("[agent]\nsample_interval = 5\n", "agent.sample_interval"),
        ('[agent]\nsampel_interval = "1s"\n', "agent.sampel_interval"),
        ('[agent]\nretention = "two days"\n', "agent.retention"),
        (
            '[[model]]\nname = "a"\nprotocol = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
            '[[model]]\nname = "a"\nprotocol = "tcp"\nurl = "tcp://127.0.0.1:2"\n',
            "model[1].name",
        ),
        ('[[model]]\nname = "a"\nprotocol = "tcp"\n', "model[0].url"),
    ],
)
def test_bad_config_exits_2_naming_file_and_field(tmp_path: Path, body: str, field: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    out = subprocess.run(
        vigil_cmd("agent", "run", "--config", str(bad)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert out.returncode == 2
    assert str(bad) in out.stderr and field in out.stderr, out.stderr


def test_an_emptied_config_file_never_stops_the_model_servers(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        """
[[process]]
name = "sleeper"
command = ["sleep", "600"]
""",
    )
    good = cfg.read_text()
    with running_agent(cfg) as agent:
        pid = wait_for(lambda: agent.status()["processes"][0]["pid"], what="sleeper pid")
        cfg.write_text("")  # what `cp other vigil.toml` looks like halfway through
        agent.proc.send_signal(signal.SIGHUP)
        ev = wait_for(
            lambda: agent.get("/api/v1/events?kind=config.reload_refused")[1]["events"],
            what="the refusal",
        )[0]
        assert "empty" in ev["message"]
        cfg.write_text(good)
        procs = agent.status()["processes"]
        assert [(p["name"], p["pid"]) for p in procs] == [("sleeper", pid)]
