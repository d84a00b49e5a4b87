"""systemd integration: the notify protocol against a real datagram socket, the watchdog
stopping when the agent's loop wedges, and the installed unit passing systemd-analyze."""

from __future__ import annotations

import asyncio
import grp
import itertools
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.service import ServiceSpec, render_unit
from agent.config import load_config
from agent.runtime.daemon import Agent
from agent.runtime.sdnotify import Notifier
from tests.helpers import child_env, running_agent, vigil_cmd, wait_for, write_config


class Listener:
    """A NOTIFY_SOCKET: a real AF_UNIX datagram socket, read by a thread that timestamps
    every message (the thread keeps reading while the agent's loop is wedged)."""

    def __init__(self, path: str) -> None:
        self.address = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + path[1:] if path.startswith("@") else path
        self.sock.bind(bind_to)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if key in m]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(str(tmp_path / "notify.sock"))
    yield lst
    lst.close()


def test_messages_reach_a_path_socket(listener: Listener) -> None:
    n = Notifier({"NOTIFY_SOCKET": listener.address})
    assert n.enabled
    assert n.ready("models 1/1 up")
    assert n.status("line\nbreak")  # a newline would start a new field: it is flattened
    assert n.stopping()
    wait_for(lambda: len(listener.messages) >= 3, what="three datagrams")
    ready, status, stopping = (m for _, m in listener.messages[:3])
    assert ready == {"READY": "1", "STATUS": "models 1/1 up", "MAINPID": str(os.getpid())}
    assert status == {"STATUS": "line break"}
    assert stopping["STOPPING"] == "1"


def test_messages_reach_an_abstract_socket() -> None:
    lst = Listener(f"@vigil-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        assert Notifier({"NOTIFY_SOCKET": lst.address}).watchdog()
        wait_for(lambda: lst.with_key("WATCHDOG"), what="the ping")
    finally:
        lst.close()


def test_without_systemd_every_call_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready("x") and not n.watchdog()
    assert n.watchdog_s is None


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert Notifier({"WATCHDOG_USEC": "2000000"}).watchdog_s == 2.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_s == 2.0
    theirs = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(theirs).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_s is None


def test_a_missing_socket_never_stops_the_caller(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.ready("x") is False
    assert n.watchdog() is False


def test_agent_speaks_the_protocol(tmp_path: Path, listener: Listener) -> None:
    env_dump = tmp_path / "child-env.json"
    script = (
        "import json,os,sys,time; json.dump(dict(os.environ), open(sys.argv[1], 'w')); "
        "time.sleep(600)"
    )
    argv = [sys.executable, "-c", script, str(env_dump)]
    cfg = write_config(tmp_path, f'[[process]]\nname = "envdump"\ncommand = {json.dumps(argv)}\n')
    extra = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"}
    with running_agent(cfg, env=extra) as agent:
        _, ready = wait_for(lambda: (listener.with_key("READY") or [None])[0], what="READY=1")
        assert ready["MAINPID"] == str(agent.proc.pid)
        assert "processes" in ready["STATUS"] and "storage ok" in ready["STATUS"]
        # READY came after the first collection was stored.
        import sqlite3

        conn = sqlite3.connect(agent.data_dir / "vigil.db")
        try:
            assert conn.execute("SELECT count(*) FROM samples_head").fetchone()[0] > 0
        finally:
            conn.close()
        # Pings at half of WATCHDOG_USEC (sd_watchdog_enabled(3)): every ~100 ms here. Judged
        # by the median over 20 gaps, which a few late wake-ups on a loaded box do not move;
        # pinging at the full interval (200 ms) or twice as often (50 ms) falls outside.
        wait_for(lambda: len(listener.with_key("WATCHDOG")) >= 21, what="20 watchdog gaps")
        pings = [t for t, _ in listener.with_key("WATCHDOG")]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 0.07 <= statistics.median(gaps) <= 0.14, gaps
        assert max(gaps) < 0.5, gaps  # no ping missed, not even under load
        # The model servers must not inherit the agent's notify socket.
        child_env_seen = wait_for(
            lambda: json.loads(env_dump.read_text()) if env_dump.exists() else None,
            what="the child's environment",
        )
        assert "NOTIFY_SOCKET" not in child_env_seen and "WATCHDOG_USEC" not in child_env_seen
        assert agent.stop() == 0
    assert listener.with_key("STOPPING")


async def test_a_wedged_loop_stops_the_watchdog(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    agent = Agent(load_config(cfg))
    task = asyncio.create_task(agent.run())
    try:
        while not listener.with_key("READY"):
            await asyncio.sleep(0.02)
        while len(listener.with_key("WATCHDOG")) < 3:
            await asyncio.sleep(0.02)
        wedge_start = time.monotonic()
        time.sleep(0.8)  # a blocking call on the event loop: the wedge under test
        wedge_end = time.monotonic()
        n_after = len(listener.with_key("WATCHDOG"))
        while len(listener.with_key("WATCHDOG")) < n_after + 2:
            await asyncio.sleep(0.02)  # the loop runs again: so do the pings
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    during = [t for t, _ in listener.with_key("WATCHDOG") if wedge_start + 0.01 < t < wedge_end]
    assert during == [], "pings kept coming while the loop was wedged"


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    cfg = tmp_path / "vigil.toml"
    cfg.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n')
    units = tmp_path / "units"
    out = subprocess.run(
        vigil_cmd("agent", "install-service", "--config", str(cfg), "--unit-dir", str(units)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    unit = units / "vigil-agent.service"
    text = unit.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "KillMode=process",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={tmp_path / 'data'}",
        "PrivateTmp=yes",
        "ProtectHome=read-only",
    ):
        assert line in text.splitlines(), line
    data = tmp_path / "data"
    assert oct(data.stat().st_mode & 0o777) == "0o750"
    assert oct((data / "api-token").stat().st_mode & 0o777) == "0o600"
    # systemd-analyze returns 0 for settings it merely ignores: its stderr must be empty too.
    res = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_unit_for_a_service_user_has_no_capabilities(tmp_path: Path) -> None:
    spec = ServiceSpec(config=tmp_path / "c.toml", data_dir=tmp_path / "d", user="nobody")
    lines = render_unit(spec).splitlines()
    assert "User=nobody" in lines
    assert "CapabilityBoundingSet=" in lines
    root = render_unit(ServiceSpec(config=tmp_path / "c.toml", data_dir=tmp_path / "d"))
    assert "CapabilityBoundingSet=CAP_KILL" in root and "User=" not in root


@pytest.mark.skipif(
    os.geteuid() != 0, reason="giving the data dir and tokens to another user needs root"
)
def test_install_for_a_service_user_gives_it_the_data_dir_and_tokens(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    data = tmp_path / "var" / "vigil"  # parents created too
    cfg = tmp_path / "vigil.toml"
    cfg.write_text(f'[agent]\ndata_dir = "{data}"\n')
    units = tmp_path / "units"

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            vigil_cmd(
                "agent",
                "install-service",
                "--config",
                str(cfg),
                "--user",
                "nobody",
                "--unit-dir",
                str(units),
            ),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
        )

    out = install()
    assert out.returncode == 0, out.stderr
    assert f"{data} and its tokens owned by nobody" in out.stdout
    lines = (units / "vigil-agent.service").read_text().splitlines()
    assert "User=nobody" in lines
    assert f"Group={grp.getgrgid(nobody.pw_gid).gr_name}" in lines
    st = data.stat()
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert oct(st.st_mode & 0o777) == "0o750"
    tokens = sorted(p.name for p in data.iterdir())
    assert tokens == ["api-token", "api-token.read"]  # no temporary file left behind
    for name in tokens:
        st = (data / name).stat()
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), name
        assert oct(st.st_mode & 0o777) == "0o600", name
        assert (data / name).read_text().strip(), name

    # Rerun over the existing dir: the same tokens stay, still the user's, still private.
    before = {name: (data / name).read_text() for name in tokens}
    os.chmod(data / "api-token", 0o644)
    again = install()
    assert again.returncode == 0, again.stderr
    for name in tokens:
        st = (data / name).stat()
        assert (data / name).read_text() == before[name], name
        assert st.st_uid == nobody.pw_uid and oct(st.st_mode & 0o777) == "0o600", name


def test_dry_run_prints_and_changes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.toml"
    cfg.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n')
    out = subprocess.run(
        vigil_cmd(
            "agent",
            "install-service",
            "--config",
            str(cfg),
            "--dry-run",
            "--unit-dir",
            str(tmp_path / "units"),
        ),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Type=notify" in out.stdout
    assert not (tmp_path / "units").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--user", "no-such-user-xyz"], "no such user"),
        (["--read-write", "relative/dir"], "absolute path"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    cfg = tmp_path / "vigil.toml"
    cfg.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n')
    out = subprocess.run(
        vigil_cmd("agent", "install-service", "--config", str(cfg), "--dry-run", *args),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert out.returncode == 2 and expected in out.stderr, out.stderr


def test_a_bad_config_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.toml"
    cfg.write_text("[agent]\nsample_interval = 5\n")
    out = subprocess.run(
        vigil_cmd("agent", "install-service", "--config", str(cfg), "--dry-run"),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert out.returncode == 2 and "agent.sample_interval" in out.stderr
