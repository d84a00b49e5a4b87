"""`vigil demo`: the agent supervises and probes the bundled model, the TUI shows it, and
quitting cleans up."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import psutil
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


TMUX = shutil.which("tmux")


@pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (scripts/debian-deps.sh installs it)"
)
def test_vigil_demo_opens_the_tui_and_quitting_stops_everything(tmp_path: Path) -> None:
    # What `make demo` runs, in a real terminal (a tmux pane at 100x30): the TUI comes up with
    # the demo model and this host's values, and `q` stops the agent and the model server and
    # removes the demo's temporary dir.
    assert TMUX is not None
    sock = str(tmp_path / "tmux.sock")  # a private tmux server: no user session is touched
    env = child_env() | {"TMPDIR": str(tmp_path / "tmp"), "TERM": "xterm-256color"}
    (tmp_path / "tmp").mkdir()
    command = " ".join(shlex.quote(a) for a in vigil_cmd("demo"))
    done = tmp_path / "exit-code"
    subprocess.run(
        [
            TMUX,
            "-S",
            sock,
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            f"{command}; echo $? > {shlex.quote(str(done))}",
        ],
        env=env,
        check=True,
    )
    try:

        def screen() -> str:
            out = subprocess.run(
                [TMUX, "-S", sock, "capture-pane", "-p"], capture_output=True, text=True, env=env
            )
            return out.stdout

        def model_up() -> str | None:
            text = screen()
            rows = [line for line in text.splitlines() if "iris" in line]
            return text if any(" up" in line.lower() for line in rows) else None

        shown = wait_for(model_up, 60, what="the TUI showing the demo model up")
        assert "cpu" in shown.lower(), shown
        subprocess.run([TMUX, "-S", sock, "send-keys", "q"], env=env, check=True)
        code = wait_for(lambda: done.exists() and done.read_text().strip(), 60, what="exit")
        assert code == "0"
        assert not list((tmp_path / "tmp").glob("vigil-demo-*"))
        left = [
            p.info["pid"]
            for p in psutil.process_iter(["pid", "cmdline"])
            if any(str(tmp_path / "tmp") in part for part in p.info["cmdline"] or ())
        ]
        assert left == []
    finally:
        subprocess.run([TMUX, "-S", sock, "kill-server"], env=env, capture_output=True)
