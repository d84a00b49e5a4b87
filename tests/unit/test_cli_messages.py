"""What the CLI says when something is missing or wrong: counts, hints, connection errors, and
SIGHUP/SIGTERM turned into a clean stop. (The config-error examples of docs/configuration.md are
checked against what check-config prints in test_docs.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import commands as cli
from agent.cli import stopping
from agent.cli.api_client import AgentUnreachable, ApiClient, resolve_target
from tests.helpers import child_env

MODEL = 'name = "{name}"\nprotocol = "tcp"\nurl = "tcp://127.0.0.1:9"\n'
PROCESS = 'name = "{name}"\ncommand = ["true"]\n'


def config_with(tmp_path: Path, models: int, processes: int) -> Path:
    text = "".join(f"[[model]]\n{MODEL.format(name=f'm{i}')}" for i in range(models))
    text += "".join(f"[[process]]\n{PROCESS.format(name=f'p{i}')}" for i in range(processes))
    path = tmp_path / f"vigil-{models}-{processes}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("models", "processes", "said"),
    [
        (1, 1, "1 model, 1 process"),
        (2, 2, "2 models, 2 processes"),
        (0, 1, "0 models, 1 process"),
    ],
)
def test_check_config_counts_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: int, processes: int, said: str
) -> None:
    path = config_with(tmp_path, models, processes)
    assert cli.main(["agent", "check-config", "--config", str(path)]) == cli.EXIT_OK
    assert capsys.readouterr().out == f"{path}: ok ({said})\n"


def test_audit_verify_without_a_database_says_how_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.cli.api_client.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: the data dir is under XDG
    assert cli.main(["audit", "verify"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.rstrip().endswith("(pass --db or --config)")
    assert cli.main(["audit", "verify", "--db", str(tmp_path / "x.db")]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == f"vigil: no database at {tmp_path / 'x.db'}"


def test_no_local_agent_suggests_config_for_another_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.cli.api_client.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(AgentUnreachable) as default:
        resolve_target(None, None, None)
    assert "pass --config with that file, or --url" in str(default.value)
    config = config_with(tmp_path, 0, 1)
    with pytest.raises(AgentUnreachable) as named:
        resolve_target(None, None, config)
    assert f"is `vigil agent run --config {config}` running? or pass --url" in str(named.value)


def test_a_refused_connection_reads_plainly() -> None:
    # A bound socket that does not listen refuses connections, and keeps its port from reuse.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(AgentUnreachable) as refused:
            ApiClient(url, "token").status()
    assert (
        str(refused.value) == f"cannot connect to {url}: connection refused (is the agent running?)"
    )


def signal_self(sig: int) -> None:
    """Send ``sig`` to this process and let its Python handler run: the kernel delivers it
    before kill() returns, and the interpreter runs the handler at its next check, which the
    loop's backward jumps make."""
    os.kill(os.getpid(), sig)
    for _ in range(10):
        pass


@pytest.fixture
def main_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set from the main thread")
    # SIGHUP sends what is left for the terminal to /dev/null: not pytest's own, with -s.
    monkeypatch.setattr(stopping, "_detach", lambda fds: None)
    before = {s: signal.getsignal(s) for s in (*stopping.STOP_SIGNALS, signal.SIGINT)}
    yield
    assert {s: signal.getsignal(s) for s in before} == before, "handlers not restored"


@pytest.mark.usefixtures("main_thread")
@pytest.mark.parametrize("sig", stopping.STOP_SIGNALS)
def test_a_stop_signal_interrupts_like_ctrl_c(sig: int) -> None:
    with stopping.stop_signals_interrupt() as stop, pytest.raises(KeyboardInterrupt):
        signal_self(sig)
        pytest.fail("the signal did not interrupt")
    assert stop.received == [sig]


@pytest.mark.usefixtures("main_thread")
def test_a_stop_signal_cancels_an_event_loop_gracefully() -> None:
    # As inside the TUI: the running coroutine is cancelled (its finally runs, as Textual's
    # shutdown does), then KeyboardInterrupt comes out of asyncio.run.
    cleaned: list[str] = []

    async def app() -> None:
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.sleep(60)
        finally:
            cleaned.append("shut down")

    with stopping.stop_signals_interrupt() as stop, pytest.raises(KeyboardInterrupt):
        asyncio.run(app())
    assert stop.received == [signal.SIGHUP]
    assert cleaned == ["shut down"]


@pytest.mark.usefixtures("main_thread")
def test_later_stop_signals_do_not_interrupt_the_cleanup() -> None:
    # A closed terminal sends SIGHUP more than once, often with a SIGTERM after it.
    with stopping.stop_signals_interrupt() as stop:
        with pytest.raises(KeyboardInterrupt):
            signal_self(signal.SIGHUP)
        signal_self(signal.SIGHUP)
        signal_self(signal.SIGTERM)  # no KeyboardInterrupt: the cleanup carries on
    assert stop.received == [signal.SIGHUP, signal.SIGHUP, signal.SIGTERM]


HUNG = """
import os, signal, sys, threading
from agent.cli import stopping
with stopping.stop_signals_interrupt(grace_s=0.2) as stop:
    stop.on_forced_exit(lambda: open(sys.argv[1], "w").write("cleaned"))
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait()
    except KeyboardInterrupt:
        threading.Event().wait()  # stuck on the way out, as Textual was once
"""


def test_a_command_stuck_after_a_stop_signal_is_cleaned_up_and_ended(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    done = subprocess.run(
        [sys.executable, "-c", HUNG, str(marker)], env=child_env(), timeout=60, check=False
    )
    assert done.returncode == 128 + signal.SIGTERM
    assert marker.read_text() == "cleaned"


@pytest.mark.usefixtures("main_thread")
def test_the_tui_stopped_by_sigterm_exits_143(monkeypatch: pytest.MonkeyPatch) -> None:
    def tui(args: object) -> int:
        signal_self(signal.SIGTERM)
        raise AssertionError("not interrupted")

    monkeypatch.setattr(cli, "_tui", tui)
    assert cli.main(["tui"]) == 128 + signal.SIGTERM
