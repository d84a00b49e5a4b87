"""The supervisor inside a real agent process: adoption across agent restarts (kill -9 and
on_exit), hangs caught by real probes, the startup gate and dependencies, quarantine, the
process API and CLI, and a systemd unit driven through a stand-in ``systemctl``."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fakes import systemctl
from tests.helpers import RunningAgent, child_env, running_agent, vigil_cmd, wait_for, write_config

pytestmark = pytest.mark.integration

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "managed_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server(*args: object) -> str:
    """The stand-in model server's argv, as a TOML array."""
    return json.dumps([sys.executable, "-S", str(FAKE), *(str(a) for a in args)])


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def reaper(tmp: Path) -> Iterator[list[int]]:
    """Kill, at the end, the pids a test adds to the list and those in ``*.pid`` files under
    ``tmp``: children left running for an agent that is gone are nobody's children."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        found = [read_pid(p) for p in tmp.rglob("*.pid")]
        for pid in [*pids, *(p for p in found if p is not None)]:
            with suppress(psutil.Error):
                proc = psutil.Process(pid)
                if str(FAKE) in " ".join(proc.cmdline()):
                    proc.kill()


def processes(agent: RunningAgent) -> dict[str, dict[str, Any]]:
    code, body = agent.get("/api/v1/processes")
    assert code == 200, body
    return {p["name"]: p for p in body["processes"]}


def wait_proc(
    agent: RunningAgent,
    name: str,
    ok: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Process ``name``'s status, once ``ok`` says it is what the test waits for."""
    last: dict[str, Any] = {}

    def check() -> bool:
        nonlocal last
        # The API answers before the agent has registered its processes: a read in that
        # window lists none yet, which is "not yet", not a failure.
        found = processes(agent).get(name)
        if found is None:
            return False
        last = found
        return ok(last)

    try:
        wait_for(check, timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {name} is {last}") from None
    return last


def wait_state(agent: RunningAgent, name: str, state: str, timeout: float = 15.0) -> dict:
    return wait_proc(agent, name, lambda p: p["state"] == state, f"{name} {state}", timeout)


def events(agent: RunningAgent, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Stored events of ``kind`` (a prefix) about process ``name``, oldest first."""
    query = f"/api/v1/events?limit=1000&kind={kind}"
    if name:
        query += f"&subject=process:{name}"
    code, body = agent.get(query)
    assert code == 200, body
    return body["events"][::-1]


def wait_event(
    agent: RunningAgent, kind: str, name: str, n: int = 1, timeout: float = 15.0
) -> dict[str, Any]:
    found = wait_for(
        lambda: (evs := events(agent, kind, name))[n - 1 :] and evs,
        timeout,
        what=f"{n} x {kind} of {name}",
    )
    return found[n - 1]


def post(
    agent: RunningAgent, path: str, token: str | None, operator: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if operator:
        headers["X-Vigil-Operator"] = operator
    req = urllib.request.Request(agent.url + path, method="POST", headers=headers, data=b"")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def vigil(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vigil_cmd(*args, "--config", str(cfg)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )


FAST = """
stop_timeout = "500ms"
backoff_initial = "50ms"
backoff_max = "200ms"
backoff_jitter = 0.0
"""


# --- agent restarts -------------------------------------------------------------------------


def test_kill_9_of_the_agent_then_the_next_agent_adopts_the_children(tmp_path: Path) -> None:
    port, worker = free_port(), tmp_path / "worker.pid"
    cfg = write_config(
        tmp_path,
        f"""
[[process]]
name = "srv"
command = {server("--port", port, "--fork-child", worker)}
port = {port}
{FAST}
[[model]]
name = "llm"
protocol = "tcp"
url = "tcp://127.0.0.1:{port}"
interval = "200ms"
process = "srv"
""",
    )
    with reaper(tmp_path) as strays:
        with running_agent(cfg) as agent:
            srv = wait_state(agent, "srv", "running")
            pid = srv["pid"]
            strays.append(pid)
            worker_pid = wait_for(lambda: read_pid(worker), what="the worker")
            agent.proc.kill()  # no shutdown at all: on_exit never runs
            agent.proc.wait(10)
        # The model server does not notice: its own session, its log a file, not a pipe.
        assert alive(pid) and alive(worker_pid) and listening(port)
        (agent.data_dir / "api.json").unlink()  # left by the killed agent

        with running_agent(cfg) as agent:
            adopted = wait_event(agent, "process.adopted", "srv")
            assert adopted["data"]["pid"] == pid
            srv = wait_state(agent, "srv", "running")
            assert (srv["pid"], srv["adopted"], srv["restarts"]) == (pid, True, 0)
            assert not events(agent, "process.started", "srv")[1:]  # only the first agent's
            assert agent.stop() == 0  # on_exit = "stop": the whole tree goes with it
        wait_for(lambda: not alive(pid) and not alive(worker_pid), 5, what="tree gone")
        assert not listening(port)


def test_on_exit_keep_leaves_the_children_for_the_next_agent_to_adopt(tmp_path: Path) -> None:
    body = f"""
[[process]]
name = "srv"
command = {server("--fork-child", tmp_path / "worker.pid")}
{FAST}
"""
    cfg = write_config(tmp_path, body, on_exit="keep")
    with reaper(tmp_path) as strays:
        with running_agent(cfg) as agent:
            pid = wait_state(agent, "srv", "running")["pid"]
            strays.append(pid)
            assert agent.stop() == 0
            assert "leaving processes running for the next agent names=srv" in agent.log()
        assert alive(pid)
        records = json.loads((agent.data_dir / "supervisor.json").read_text())
        assert records["srv"]["pid"] == pid

        # The next agent adopts it: same pid, no new start; this one stops it on exit.
        cfg = write_config(tmp_path, body, on_exit="stop")
        with running_agent(cfg) as agent:
            assert wait_event(agent, "process.adopted", "srv")["data"]["pid"] == pid
            assert wait_state(agent, "srv", "running")["adopted"] is True
            assert agent.stop() == 0
        wait_for(lambda: not alive(pid), 5, what="the child stopped with the agent")
        assert "srv" not in json.loads((agent.data_dir / "supervisor.json").read_text())


# --- healing ----------------------------------------------------------------------------------


def test_a_hung_server_is_restarted_whole_tree_and_its_incident_resolved(tmp_path: Path) -> None:
    port, hang, worker = free_port(), tmp_path / "hang", tmp_path / "worker.pid"
    cfg = write_config(
        tmp_path,
        f"""
[[process]]
name = "srv"
command = {server("--port", port, "--hang-file", hang, "--fork-child", worker)}
port = {port}
hang_after_failures = 2
{FAST}
[[model]]
name = "llm"
protocol = "http"
url = "http://127.0.0.1:{port}/"
interval = "200ms"
timeout = "300ms"
jitter = "0s"
process = "srv"
""",
    )
    with reaper(tmp_path), running_agent(cfg) as agent:
        first = wait_state(agent, "srv", "running")["pid"]
        worker_pid = wait_for(lambda: read_pid(worker), what="the worker")
        hang.touch()  # the next request hangs it: connections accepted, never answered

        hung = wait_event(agent, "process.hung", "srv")
        data = hung["data"]
        assert hung["message"].startswith("hung: 2 failed probes in a row (llm:")
        assert set(data["tree"]) == {first, worker_pid}
        assert data["killed"] is True and data["port_released"] is True
        assert [r["category"] for r in data["last_runs"]][-2:] == ["timeout", "timeout"]
        assert not alive(first) and not alive(worker_pid)

        srv = wait_proc(
            agent,
            "srv",
            lambda p: p["state"] == "running" and p["pid"] != first,
            "the restarted server running",
        )
        assert srv["restarts"] == 1 and srv["last_reason"].startswith("hung:")

        def resolved() -> list[dict[str, Any]]:
            code, body = agent.get("/api/v1/incidents?state=resolved")
            return [i for i in body["incidents"] if i["kind"] == "process_hung"]

        (incident,) = wait_for(resolved, what="the process_hung incident resolved")
        assert incident["subject"] == "process:srv" and incident["ttr_ms"] > 0
        assert incident["evidence"]["last_runs"]
        assert wait_for(lambda: processes(agent)["srv"]["incident"] is None)


def test_dependents_wait_for_a_slow_starting_dependency(tmp_path: Path) -> None:
    port, loaded = free_port(), tmp_path / "loaded"
    cfg = write_config(
        tmp_path,
        f"""
[[process]]
name = "app"
command = {server()}
depends_on = ["db"]
{FAST}
[[process]]
name = "db"
command = {server("--port", port, "--wait-file", loaded)}
startup_timeout = "30s"
{FAST}
[[model]]
name = "db-port"
protocol = "tcp"
url = "tcp://127.0.0.1:{port}"
interval = "10s"
process = "db"
""",
    )
    with reaper(tmp_path), running_agent(cfg) as agent:
        wait_for(lambda: events(agent, "process.started", "db"), what="db started")
        procs = processes(agent)
        assert procs["db"]["state"] == "starting"
        assert procs["app"]["state"] == "blocked" and procs["app"]["detail"] == "waiting for db"
        assert procs["app"]["pid"] is None and procs["app"]["depends_on"] == ["db"]

        loaded.touch()
        wait_state(agent, "app", "running")
        app_started = wait_event(agent, "process.started", "app")
        db_ready = wait_event(agent, "process.ready", "db")
        assert db_ready["seq"] < app_started["seq"]
        # The gate asked for a probe at once rather than waiting out the 10 s interval.
        wait_for(
            lambda: any(
                r["ok"] for r in agent.get("/api/v1/probe_runs?model=db-port")[1]["probe_runs"]
            ),
            what="the gate's probe stored",
        )


def test_a_crash_loop_is_quarantined_and_released_from_the_cli(tmp_path: Path) -> None:
    port, counter = free_port(), tmp_path / "runs"
    cfg = write_config(
        tmp_path,
        f"""
[[process]]
name = "crashy"
command = {server("--port", port, "--counter", counter, "--crash-first", 1000)}
port = {port}
quarantine_after = 2
{FAST}
""",
    )
    with reaper(tmp_path), running_agent(cfg) as agent:
        wait_state(agent, "crashy", "quarantined")
        wait_event(agent, "process.quarantined", "crashy")  # stored, and all before it
        exits = events(agent, "process.exited", "crashy")
        assert [e["data"]["returncode"] for e in exits] == [1, 1, 1]
        assert exits[-1]["data"]["log_tail"][-1] == "fatal: start-up failed on run 3"
        code, body = agent.get("/api/v1/incidents?state=open")
        assert {i["kind"] for i in body["incidents"]} == {"process_exited", "process_quarantined"}
        out = vigil(cfg, "status")
        assert out.returncode == 1, out.stderr  # a failure found
        assert "crashy  QUARANTINED" in out.stdout

        counter.write_text("1000")  # fixed: the next run comes up
        out = vigil(cfg, "process", "release", "crashy")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "crashy: release accepted (was quarantined)"
        wait_state(agent, "crashy", "running")
        released = wait_event(agent, "process.released", "crashy")
        assert "@" in released["data"]["by"]  # user@host of whoever ran the CLI

        out = vigil(cfg, "process", "release", "crashy")
        assert out.returncode == 1 and "HTTP 409" in out.stderr and "not quarantined" in out.stderr


# --- operator actions: API and CLI ----------------------------------------------------------


def test_process_api_actions_tokens_and_logs(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        f"""
[[process]]
name = "srv"
command = {server("--spam", 300)}
{FAST}
""",
    )

    def logged(n: int, token: str | None = "default") -> list[str]:
        code, body = agent.get(f"/api/v1/processes/srv/logs?lines={n}", token=token)
        assert code == 200 and body["name"] == "srv", body
        return list(body["lines"])

    with reaper(tmp_path), running_agent(cfg) as agent:
        pid = wait_state(agent, "srv", "running")["pid"]
        wait_for(lambda: logged(1) == ["x" * 99], what="the first run's output")
        read = (agent.data_dir / "api-token.read").read_text().strip()
        assert post(agent, "/api/v1/processes/srv/stop", None)[0] == 401
        code, body = post(agent, "/api/v1/processes/srv/stop", read)
        assert code == 403 and "operate" in body["error"]
        code, body = post(agent, "/api/v1/processes/nope/stop", agent.token)
        assert code == 404 and "no process named 'nope'; known: srv" in body["error"]
        code, body = post(agent, "/api/v1/processes/srv/release", agent.token)
        assert code == 409 and "not quarantined" in body["error"]
        code, body = post(agent, "/api/v1/processes/srv/start", agent.token)
        assert code == 409 and "already started" in body["error"]
        assert processes(agent)["srv"]["pid"] == pid  # nothing happened

        code, body = post(agent, "/api/v1/processes/srv/stop", agent.token, "carol@desk")
        assert code == 202 and body["accepted"] == "stop" and body["process"]["name"] == "srv"
        wait_state(agent, "srv", "stopped")
        wait_for(lambda: not alive(pid), 5, what="the process gone")
        stopped = wait_event(agent, "process.stopped", "srv")
        assert stopped["data"]["by"] == "carol@desk" and pid in stopped["data"]["tree"]
        action = wait_event(agent, "process.action", "srv")
        assert action["data"] == {
            "action": "stop",
            "by": "carol@desk",
            "state": "running",
            "token": "local-operate",  # the token that authorised it (issue 17)
        }

        code, _ = post(agent, "/api/v1/processes/srv/start", agent.token)
        assert code == 202
        new_pid = wait_state(agent, "srv", "running")["pid"]

        # Logs (read scope is enough): the output of both runs, in one file.
        wait_for(lambda: f"server pid={new_pid} start" in logged(4, read), what="the 2nd run")
        wait_for(lambda: logged(1, read) == ["x" * 99], what="all of its output")
        starts = [line for line in logged(100) if line.startswith("server pid=")]
        assert starts == [f"server pid={pid} start", f"server pid={new_pid} start"]
        assert agent.get("/api/v1/processes/srv/logs?lines=0")[0] == 400
        assert agent.get("/api/v1/processes/srv/logs?lines=x")[0] == 400
        assert agent.get("/api/v1/processes/nope/logs")[0] == 404


def test_stop_signal_is_what_a_stop_delivers(tmp_path: Path) -> None:
    record = tmp_path / "signals"
    cfg = write_config(
        tmp_path,
        f"""
[[process]]
name = "srv"
command = {server("--record-signals", record)}
stop_signal = "SIGINT"
stop_timeout = "10s"
""",
    )

    def received(pid: int) -> list[str]:
        """What ``pid`` wrote into the record: ``ready``, then the signals it got."""
        lines = record.read_text().splitlines() if record.exists() else []
        return [w[1] for w in map(str.split, lines) if w[0] == str(pid)]

    with reaper(tmp_path) as strays, running_agent(cfg) as agent:
        # By the operator's stop (API)...
        pid = wait_state(agent, "srv", "running")["pid"]
        strays.append(pid)
        wait_for(lambda: "ready" in received(pid), what="its signal handlers in place")
        code, _ = post(agent, "/api/v1/processes/srv/stop", agent.token, "ops")
        assert code == 202
        wait_state(agent, "srv", "stopped")
        assert set(received(pid)) == {"ready", "SIGINT"}
        stopped = wait_event(agent, "process.stopped", "srv")
        assert stopped["data"]["killed"] is False  # it went on SIGINT, within stop_timeout

        # ...and by the agent's own stop (on_exit = "stop").
        code, _ = post(agent, "/api/v1/processes/srv/start", agent.token, "ops")
        assert code == 202
        pid = wait_proc(
            agent, "srv", lambda p: p["state"] == "running" and p["pid"] != pid, "a new pid"
        )["pid"]
        strays.append(pid)
        wait_for(lambda: "ready" in received(pid), what="its signal handlers in place")
        assert agent.stop() == 0
        assert set(received(pid)) == {"ready", "SIGINT"}
        assert not alive(pid)


def test_process_cli_commands_and_exit_codes(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        f"""
[[process]]
name = "srv"
command = {server()}
{FAST}
""",
    )
    with reaper(tmp_path), running_agent(cfg) as agent:
        pid = wait_state(agent, "srv", "running")["pid"]
        wait_for(
            lambda: agent.get("/api/v1/processes/srv/logs?lines=1")[1]["lines"],
            what="the first run's output",
        )

        out = vigil(cfg, "process", "restart", "srv")
        assert (out.returncode, out.stdout.strip()) == (0, "srv: restart accepted (was running)")
        new = wait_proc(
            agent,
            "srv",
            lambda p: p["state"] == "running" and p["pid"] not in (None, pid),
            "new pid",
        )
        assert new["restarts"] == 1 and new["last_reason"].startswith("restarted by ")

        started = f"server pid={new['pid']} start"
        wait_for(
            lambda: agent.get("/api/v1/processes/srv/logs?lines=1")[1]["lines"] == [started],
            what="the new run's first line",
        )
        out = vigil(cfg, "process", "logs", "srv", "-n", "2")
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"server pid={pid} start\n{started}\n"

        out = vigil(cfg, "process", "stop", "srv")
        assert out.returncode == 0, out.stderr
        wait_state(agent, "srv", "stopped")
        out = vigil(cfg, "process", "start", "srv")
        assert out.returncode == 0 and "start accepted (was stopped)" in out.stdout
        wait_state(agent, "srv", "running")

        out = vigil(cfg, "process", "start", "srv")
        assert out.returncode == 1 and "HTTP 409" in out.stderr and "already started" in out.stderr
        out = vigil(cfg, "process", "stop", "nope")
        assert out.returncode == 1 and "HTTP 404" in out.stderr


# --- a systemd unit ----------------------------------------------------------------------------


def test_a_systemd_unit_through_a_stand_in_systemctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = systemctl.install(tmp_path / "bin")
    # The agent inherits this PATH (child_env copies the environment): its `systemctl` is ours.
    monkeypatch.setenv("PATH", f"{fake.bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = write_config(
        tmp_path,
        """
[[process]]
name = "vllm"
systemd_unit = "vllm.service"
poll_interval = "100ms"
startup_timeout = "10s"
""",
    )
    with running_agent(cfg) as agent:
        srv = wait_state(agent, "vllm", "running")
        assert (srv["kind"], srv["target"], srv["pid"]) == (
            "systemd",
            "systemd unit vllm.service",
            systemctl.FIRST_PID,
        )
        assert wait_event(agent, "process.adopted", "vllm")["data"]["pid"] == systemctl.FIRST_PID
        assert fake.actions() == []  # found active: adopted, not restarted

        fake.set("failed", "failed", 0, status=137)
        srv = wait_proc(
            agent,
            "vllm",
            lambda p: p["state"] == "running" and p["pid"] == systemctl.FIRST_PID + 1,
            "the unit restarted",
        )
        assert srv["last_exit"] == "unit failed/failed" and srv["restarts"] == 1
        assert fake.actions() == ["restart vllm.service"]
        exited = wait_event(agent, "process.exited", "vllm")
        assert exited["data"]["returncode"] == 137

        code, _ = post(agent, "/api/v1/processes/vllm/stop", agent.token, "ops")
        assert code == 202
        wait_state(agent, "vllm", "stopped")
        assert fake.actions() == ["restart vllm.service", "stop vllm.service"]
        code, _ = post(agent, "/api/v1/processes/vllm/start", agent.token, "ops")
        assert code == 202
        wait_state(agent, "vllm", "running")
        assert fake.actions()[-1] == "restart vllm.service"
    # on_exit = "stop" stops the unit with the agent, as it stops a child.
    assert fake.actions()[-1] == "stop vllm.service"


# --- config -------------------------------------------------------------------------------------


def test_a_bad_process_config_exits_2_naming_file_field_and_expectation(tmp_path: Path) -> None:
    # Every field's checks are unit tests (test_supervisor.py); this is the CLI's side.
    bad = tmp_path / "bad.toml"
    bad.write_text('[[process]]\nname = "a"\ncommand = ["x"]\ndepends_on = ["b"]\n')
    out = subprocess.run(
        vigil_cmd("agent", "run", "--config", str(bad)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert out.returncode == 2
    assert out.stderr.startswith(f"vigil: config refused: {bad}:4: process[0].depends_on: ")
    assert "names process 'b', but no [[process]] has that name" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another user needs root")
def test_a_process_runs_as_its_configured_user(tmp_path: Path) -> None:
    # /bin/sh rather than Python: the test interpreter may live where "nobody" cannot read.
    cfg = write_config(
        tmp_path,
        """
[[process]]
name = "unprivileged"
command = ["/bin/sh", "-c", "echo uid=$(id -u) user=$(id -un) home=$HOME; exec sleep 600"]
user = "nobody"
cwd = "/"
""",
    )
    with running_agent(cfg) as agent:
        pid = wait_for(
            lambda: next((p["pid"] for p in agent.status()["processes"]), None),
            what="the process",
        )
        line = wait_for(
            lambda: next(
                (
                    ln
                    for ln in agent.get("/api/v1/processes/unprivileged/logs?lines=5")[1]["lines"]
                    if ln.startswith("uid=")
                ),
                None,
            ),
            what="its first line",
        )
        nobody = pwd.getpwnam("nobody")
        assert line.split()[:2] == [f"uid={nobody.pw_uid}", "user=nobody"]
        assert psutil.Process(pid).uids().real == nobody.pw_uid
