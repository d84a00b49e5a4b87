"""Shared test helpers: start a real agent process, wait for things without fixed sleeps."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def child_env() -> dict[str, str]:
    """Environment for child Python processes: imports Vigil from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def vigil_cmd(*args: str) -> list[str]:
    """argv running the vigil CLI from this checkout with this interpreter."""
    return [sys.executable, "-m", "agent.cli", *args]


@dataclass
class RunningAgent:
    """A real ``vigil agent run`` process and how to talk to it."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    data_dir: Path
    url: str
    token: str
    log_path: Path

    def get(self, path: str, token: str | None = "default") -> tuple[int, Any]:
        """GET path; returns (status, parsed JSON or text)."""
        headers = {}
        tok = self.token if token == "default" else token
        if tok is not None:
            headers["Authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")

    def status(self) -> dict[str, Any]:
        code, body = self.get("/api/v1/status")
        assert code == 200, body
        return body

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def write_config(
    tmp: Path,
    body: str = "",
    *,
    sample_interval: str = "200ms",
    on_exit: str = "stop",
    audit_syslog: str = "",
) -> Path:
    """A config with a fresh data dir under ``tmp`` and the API on a free port, plus ``body``.

    ``on_exit = "stop"`` by default: a test's model servers must not outlive it (tests of
    adoption across agent restarts ask for "keep"). ``audit_syslog = ""`` by default: a test
    agent's signed checkpoints must not land in the developer's journal (/dev/log).
    """
    data = tmp / "data"
    cfg = tmp / "vigil.toml"
    cfg.write_text(
        f"""
[agent]
host = "test-host"
data_dir = "{data}"
listen = "127.0.0.1:0"
sample_interval = "{sample_interval}"
on_exit = "{on_exit}"
audit_syslog = "{audit_syslog}"
{body}
""",
        encoding="utf-8",
    )
    return cfg


@contextmanager
def running_agent(
    config_path: Path,
    startup_timeout: float = 20.0,
    env: dict[str, str] | None = None,
    *,
    umask: int = -1,
) -> Iterator[RunningAgent]:
    """Start ``vigil agent run`` on a config and yield once its API answers; stop it after.

    ``env`` adds variables to the agent's environment; ``umask`` (when not -1) is the one it
    starts with.
    """
    import tomllib

    data_dir = Path(tomllib.loads(config_path.read_text())["agent"]["data_dir"])
    log_path = config_path.parent / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            vigil_cmd("agent", "run", "--config", str(config_path)),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**child_env(), **(env or {})},
            start_new_session=True,
            umask=umask,
        )
    try:

        def ready() -> tuple[str, str] | None:
            if proc.poll() is not None:
                raise AssertionError(
                    f"agent exited {proc.returncode}:\n{log_path.read_text(errors='replace')}"
                )
            try:
                url = json.loads((data_dir / "api.json").read_text())["url"]
                return url, (data_dir / "api-token").read_text().strip()
            except (OSError, ValueError, KeyError):
                return None

        url, token = wait_for(ready, startup_timeout, what="the agent's api.json")
        yield RunningAgent(proc, config_path, data_dir, url, token, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def server_process(module: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m module args`` as its own process, for a server that prints
    ``listening on URL`` once it listens; yields the process and the URL, terminates it after
    (a test may kill it first)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line
        yield proc, line.split("listening on", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def serving_process(module: str, *args: str) -> Iterator[str]:
    """:func:`server_process` when only the URL matters."""
    with server_process(module, *args) as (_, url):
        yield url


def fake_llm(*args: str) -> contextlib.AbstractContextManager[str]:
    """``tests.fakes.llm_server`` in its own process with these arguments; yields its URL.

    Steer it with ``POST {url}/_control`` (:func:`control_fake`).
    """
    return serving_process("tests.fakes.llm_server", *args)


def control_fake(url: str, **behaviour: Any) -> None:
    """Change a running fake server's behaviour (``POST /_control`` with the fields)."""
    req = urllib.request.Request(
        url + "/_control",
        method="POST",
        data=json.dumps(behaviour).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200, resp.status
