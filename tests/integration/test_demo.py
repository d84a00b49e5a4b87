"""`vigil demo`: the agent supervises and probes the bundled model, the TUI shows it, and
quitting, a closed terminal (SIGHUP) or SIGTERM cleans up."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from agent.cli.api_client import ApiClient
from agent.cli.demo import NOTIFICATIONS_FILE, start_demo_agent, stop_agent
from tests.helpers import child_env, vigil_cmd, wait_for

pytestmark = pytest.mark.integration


def _api_info(data_dir: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((data_dir / "api.json").read_text(encoding="utf-8"))
    return None


@pytest.fixture
def leftovers() -> Iterator[list[psutil.Process]]:
    """Processes a failed test must not leave running: killed after the test if still there."""
    procs: list[psutil.Process] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def demo_started(tmp: Path, leftovers: list[psutil.Process]) -> tuple[Path, list[psutil.Process]]:
    """The demo's temporary dir under ``tmp``, and its agent and model server, once the model
    server runs (read from the agent's own API, as `vigil status` would)."""
    workdir = wait_for(
        lambda: next(iter(tmp.glob("vigil-demo-*")), None), 60, what="the demo's temporary dir"
    )
    data = workdir / "data"
    info = wait_for(lambda: _api_info(data), 60, what="the demo agent's api.json")
    client = ApiClient(info["url"], (data / "api-token").read_text(encoding="utf-8").strip())

    def server_pid() -> int | None:
        server = next(p for p in client.status().processes if p.name == "demo-model-server")
        return server.pid if server.state == "running" else None

    agent = psutil.Process(int(info["pid"]))
    leftovers.append(agent)
    pid = wait_for(server_pid, 60, what="the demo's model server running")
    leftovers.append(psutil.Process(pid))
    return workdir, leftovers[-2:]


def all_gone(procs: list[psutil.Process]) -> bool:
    """None of ``procs`` runs any more (a zombie waiting for its parent counts as gone)."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
    return True


def assert_cleaned_up(workdir: Path, procs: list[psutil.Process]) -> None:
    wait_for(
        lambda: all_gone(procs), 60, what=f"the demo's agent and model server to stop: {procs}"
    )
    wait_for(lambda: not workdir.exists(), 30, what=f"{workdir} to be removed")


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


def _notifications(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_demo_alert_fires_and_resolves_when_its_model_is_stopped_and_started(
    tmp_path: Path,
) -> None:
    """Issue 15: the demo shows an alert. Stopping the model server (planned, so no built-in
    rule pages) fires the demo's own rule; its local receiver gets the firing notification,
    and starting the server again resolves the alert and delivers the resolution."""
    proc, url, token = start_demo_agent(tmp_path)
    inbox = tmp_path / NOTIFICATIONS_FILE
    try:
        client = ApiClient(url, token)
        wait_for(
            lambda: any(m.name == "iris" and m.state == "up" for m in client.status().models),
            30,
            what="the demo model to be up",
        )
        assert client.get("/api/v1/alerts")["alerts"] == []

        def alert(state: str) -> dict | None:
            alerts = client.get("/api/v1/alerts")["alerts"]
            return next(
                (
                    a
                    for a in alerts
                    if a["rule"] == "demo_model_not_serving" and a["state"] == state
                ),
                None,
            )

        client.post("/api/v1/processes/demo-model-server/stop", operator="demo-test")
        firing = wait_for(lambda: alert("firing"), 30, what="the demo alert to fire")
        assert firing["labels"]["model"] == "iris"
        assert "iris is stopped" in firing["summary"]
        sent = wait_for(
            lambda: [n for n in _notifications(inbox) if n["kind"] == "firing"],
            30,
            what="the firing notification at the demo's receiver",
        )
        assert sent[0]["alerts"][0]["labels"]["alertname"] == "demo_model_not_serving"
        # Planned: no built-in rule (model_down, process_down) fired for the stop.
        assert {a["rule"] for a in client.get("/api/v1/alerts")["alerts"]} == {
            "demo_model_not_serving"
        }

        client.post("/api/v1/processes/demo-model-server/start", operator="demo-test")
        wait_for(lambda: alert("resolved"), 60, what="the demo alert to resolve")
        resolved = wait_for(
            lambda: [n for n in _notifications(inbox) if n["kind"] == "resolved"],
            30,
            what="the resolution at the demo's receiver",
        )
        assert resolved[0]["dedup_key"] == sent[0]["dedup_key"]
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
    # As `vigil status` shows it: the model's availability over the last hour and the
    # latency table (it printed `AVAIL_1H -` and no latency).
    assert re.search(r"^  iris +kserve_v2 +UP +\S+ +[\d.]+ +\d+\.\d%", out.stdout, re.M), out.stdout
    assert re.search(r"^  iris +5m +- +- +[\d.]+/[\d.]+/[\d.]+$", out.stdout, re.M), out.stdout
    # Everything it started is gone, its temporary dir included.
    assert not list(tmp_path.glob("vigil-demo-*"))


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_vigil_demo_headless_stopped_by_a_signal_cleans_up(
    tmp_path: Path, sig: int, leftovers: list[psutil.Process]
) -> None:
    env = child_env() | {"TMPDIR": str(tmp_path)}
    with open(tmp_path / "out", "wb") as out:
        demo = subprocess.Popen(
            vigil_cmd("demo", "--no-tui"), stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        workdir, procs = demo_started(tmp_path, leftovers)
        demo.send_signal(sig)
        assert demo.wait(60) == 128 + sig, (tmp_path / "out").read_text()
        assert_cleaned_up(workdir, procs)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (scripts/debian-deps.sh installs it)"
)


@dataclass
class Terminal:
    """`vigil demo` in a pane of a private tmux server (no user session is touched)."""

    sock: str
    env: dict[str, str]
    done: Path
    """Gets the demo's exit code once it ends."""

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        out = subprocess.run(
            [TMUX, "-S", self.sock, *args], capture_output=True, text=True, env=self.env
        )
        return out.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def exit_code(self) -> str:
        return wait_for(
            lambda: self.done.exists() and self.done.read_text().strip(), 60, what="exit"
        )

    def demo_pid(self) -> int:
        shell = psutil.Process(int(self.tmux("display-message", "-p", "#{pane_pid}").strip()))
        return next(c.pid for c in shell.children() if "demo" in c.cmdline())


@contextlib.contextmanager
def demo_in_tmux(tmp_path: Path, then: str = "") -> Iterator[Terminal]:
    """What `make demo` runs, in a real terminal (a tmux pane at 100x30); ``then`` runs in
    the pane after it (the pane closes when the command line ends)."""
    assert TMUX is not None
    term = Terminal(
        sock=str(tmp_path / "tmux.sock"),
        env=child_env() | {"TMPDIR": str(tmp_path / "tmp"), "TERM": "xterm-256color"},
        done=tmp_path / "exit-code",
    )
    (tmp_path / "tmp").mkdir()
    command = " ".join(shlex.quote(a) for a in vigil_cmd("demo"))
    line = f"{command}; echo $? > {shlex.quote(str(term.done))}{then}"
    subprocess.run(
        [TMUX, "-S", term.sock, "new-session", "-d", "-x", "100", "-y", "30", line],
        env=term.env,
        check=True,
    )
    try:
        yield term
    finally:
        term.tmux("kill-server")


def tui_shows_model_up(screen: Callable[[], str]) -> str:
    def model_up() -> str | None:
        text = screen()
        rows = [line for line in text.splitlines() if "iris" in line]
        return text if any(" up" in line.lower() for line in rows) else None

    return wait_for(model_up, 60, what="the TUI showing the demo model up")


@needs_tmux
def test_vigil_demo_opens_the_tui_and_quitting_stops_everything(
    tmp_path: Path, leftovers: list[psutil.Process]
) -> None:
    # The TUI comes up with the demo model and this host's values, and `q` stops the agent and
    # the model server and removes the demo's temporary dir.
    with demo_in_tmux(tmp_path) as term:
        workdir, procs = demo_started(tmp_path / "tmp", leftovers)
        shown = tui_shows_model_up(term.screen)
        assert "cpu" in shown.lower(), shown
        term.tmux("send-keys", "q")
        assert term.exit_code() == "0"
        assert_cleaned_up(workdir, procs)
        left = [
            p.info["pid"]
            for p in psutil.process_iter(["pid", "cmdline"])
            if any(str(tmp_path / "tmp") in part for part in p.info["cmdline"] or ())
        ]
        assert left == []


@needs_tmux
def test_closing_the_demos_terminal_stops_everything(
    tmp_path: Path, leftovers: list[psutil.Process]
) -> None:
    # A dropped ssh connection or a killed tmux window: the terminal hangs up (SIGHUP). The
    # agent and the model server run in sessions of their own, so only the demo can stop them.
    with demo_in_tmux(tmp_path) as term:
        workdir, procs = demo_started(tmp_path / "tmp", leftovers)
        tui_shows_model_up(term.screen)
        term.tmux("kill-window")
        assert_cleaned_up(workdir, procs)


@needs_tmux
def test_sigterm_to_the_demo_stops_everything_and_gives_the_terminal_back(
    tmp_path: Path, leftovers: list[psutil.Process]
) -> None:
    with demo_in_tmux(tmp_path, then="; exec sleep 600") as term:
        workdir, procs = demo_started(tmp_path / "tmp", leftovers)
        tui_shows_model_up(term.screen)
        psutil.Process(term.demo_pid()).send_signal(signal.SIGTERM)
        assert term.exit_code() == str(128 + signal.SIGTERM)
        assert_cleaned_up(workdir, procs)
        # Textual shut down: the normal screen is back, showing what the demo printed first.
        assert term.tmux("display-message", "-p", "#{alternate_on}").strip() == "0"
        assert "vigil demo: agent at http://127.0.0.1:" in term.screen()
