"""`vigil tui --url ssh://...` in a real terminal, stopped by SIGTERM or by its terminal going
away (SIGHUP): its ssh forward stops and the private directory of the forward's socket is
removed, as when `q` quits."""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import RunningAgent, child_env, running_agent, vigil_cmd, wait_for, write_config
from tests.sshd import HOST_ALIAS, Sshd, running_sshd, sshd_missing

TMUX = shutil.which("tmux")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sshd_missing() is not None, reason=sshd_missing() or ""),
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed (scripts/debian-deps.sh)"),
]


@pytest.fixture(scope="module")
def sshd_and_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sshd, RunningAgent]]:
    tmp = tmp_path_factory.mktemp("ssh")
    with running_sshd(tmp) as sshd, running_agent(write_config(tmp)) as agent:
        yield sshd, agent


def forwards(tmp: Path) -> list[psutil.Process]:
    """The `ssh -N -L` forwards whose socket lives under ``tmp``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "-N" in cmdline and any(str(tmp) in part for part in cmdline):
            found.append(proc)
    return found


def gone(procs: list[psutil.Process]) -> bool:
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


@pytest.mark.parametrize("how", ["SIGTERM", "closed terminal"])
def test_the_ssh_tui_stopped_by_a_signal_cleans_up(
    tmp_path: Path, sshd_and_agent: tuple[Sshd, RunningAgent], how: str
) -> None:
    assert TMUX is not None
    sshd, agent = sshd_and_agent
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    sock = str(tmp_path / "tmux.sock")
    env = child_env() | {
        "TMPDIR": str(tmp),
        "TERM": "xterm-256color",
        "VIGIL_SSH_COMMAND": f"ssh -F {shlex.quote(str(sshd.client_config))}",
    }
    url = f"ssh://{sshd.user}@{HOST_ALIAS}{agent.data_dir}"
    command = " ".join(shlex.quote(a) for a in vigil_cmd("tui", "--url", url))
    done = tmp_path / "exit-code"
    line = f"{command}; echo $? > {shlex.quote(str(done))}; exec sleep 600"
    subprocess.run(
        [TMUX, "-S", sock, "new-session", "-d", "-x", "120", "-y", "30", line],
        env=env,
        check=True,
    )

    def tmux(*args: str) -> str:
        assert TMUX is not None
        return subprocess.run(
            [TMUX, "-S", sock, *args], capture_output=True, text=True, env=env
        ).stdout

    try:
        # The host screen of the agent behind ssh: the forward is up.
        wait_for(lambda: "test-host" in tmux("capture-pane", "-p"), 60, what="the host screen")
        ssh = wait_for(lambda: forwards(tmp), 30, what="the ssh forward")
        assert list(tmp.glob("vigil-ssh-*")), "the forward's socket dir"
        if how == "SIGTERM":
            shell = psutil.Process(int(tmux("display-message", "-p", "#{pane_pid}").strip()))
            tui = next(c for c in shell.children() if "tui" in c.cmdline())
            tui.send_signal(signal.SIGTERM)
            code = wait_for(lambda: done.exists() and done.read_text().strip(), 30, what="exit")
            assert code == str(128 + signal.SIGTERM)
            assert tmux("display-message", "-p", "#{alternate_on}").strip() == "0"
        else:
            tmux("kill-window")
        wait_for(lambda: gone(ssh), 30, what="the ssh forward to stop")
        wait_for(lambda: not list(tmp.glob("vigil-ssh-*")), 30, what="the socket dir removed")
    finally:
        tmux("kill-server")
