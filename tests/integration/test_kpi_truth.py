"""The KPIs against the truth: faults of known length injected into real model servers under a
real agent, and what the agent recorded (incidents, state changes, planned runs) compared with
what the test measured with its own clock.

Every time here is UTC epoch time (``time.time()``), the clock the agent stamps with. The
agent probes every second with no jitter, so each recorded edge may trail the true one by up
to one interval (the next probe is what sees it) plus scheduling slack: ``SLACK_S``. A signal's
truth (and a control request's) is the time read just before sending it: it takes effect after
that, never before.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storage.db import DB_FILENAME
from tests.helpers import (
    ROOT,
    RunningAgent,
    child_env,
    running_agent,
    vigil_cmd,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

MANAGED = ROOT / "tests" / "fakes" / "managed_server.py"
COUNTING = ROOT / "tests" / "fakes" / "counting_server.py"

INTERVAL_S = 1.0
SLACK_S = INTERVAL_S + 0.1
"""How far a recorded edge may sit from the true one: the probe that sees it comes up to one
interval later, plus 100 ms for the loaded test host."""
FAULT_S = 15.0
SLOW_DELAY_S = 0.6
"""The slow server's answer time, over the canary's ``max_latency`` (300 ms)."""


# --- plumbing ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def argv(script: Path, *args: object) -> list[str]:
    return [sys.executable, "-S", str(script), *(str(a) for a in args)]


def start_server(script: Path, *args: object) -> tuple[subprocess.Popen[str], float]:
    """A fake model server the agent does not supervise; returns it and when it listened
    (once it said so)."""
    proc = subprocess.Popen(
        argv(script, *args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, time.time()
    proc.wait(5)
    raise AssertionError(f"{script.name} {args} exited {proc.returncode} before listening")


@contextmanager
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    """The unsupervised servers a test starts, all killed at the end (frozen ones included)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                proc.wait(10)


def control(port: int, **fields: object) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/_control", method="POST", data=json.dumps(fields).encode()
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def server_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as resp:
        stats: dict[str, int] = json.loads(resp.read())
        return stats


def http_model(name: str, port: int, extra: str = "") -> str:
    return f"""
[[model]]
name = "{name}"
protocol = "http"
url = "http://127.0.0.1:{port}/"
interval = "{INTERVAL_S:g}s"
timeout = "5s"
jitter = "0s"
{extra}
"""


def models(agent: RunningAgent) -> dict[str, dict[str, Any]]:
    code, body = agent.get("/api/v1/models")
    assert code == 200, body
    return {m["name"]: m for m in body["models"]}


def processes(agent: RunningAgent) -> dict[str, dict[str, Any]]:
    code, body = agent.get("/api/v1/processes")
    assert code == 200, body
    return {p["name"]: p for p in body["processes"]}


def incidents(agent: RunningAgent) -> list[dict[str, Any]]:
    code, body = agent.get("/api/v1/incidents?limit=1000")
    assert code == 200, body
    incs: list[dict[str, Any]] = body["incidents"]
    return incs


def all_up(agent: RunningAgent, names: list[str]) -> bool:
    found = models(agent)
    return all(found.get(n, {}).get("state") == "up" for n in names)


def probe_runs(agent: RunningAgent, model: str) -> list[dict[str, Any]]:
    code, body = agent.get(f"/api/v1/probe_runs?model={model}&limit=1000")
    assert code == 200, body
    runs: list[dict[str, Any]] = body["probe_runs"]
    return runs


@dataclass
class Stored:
    """What the agent wrote to its database, read after it stopped."""

    incidents: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    changes: list[dict[str, Any]]
    """``model.state_changed`` events: subject, ts_ms, from, to."""


def stored(agent: RunningAgent) -> Stored:
    conn = sqlite3.connect(f"file:{agent.data_dir / DB_FILENAME}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        incs = [
            dict(r)
            for r in conn.execute(
                "SELECT id, subject, kind, began_ms, opened_ms, resolved_ms, ttr_ms, root_id, "
                "state FROM incidents ORDER BY id"
            )
        ]
        runs = [
            dict(r)
            for r in conn.execute(
                "SELECT model, ts AS ts_ms, end_ts AS end_ms, ok, category, planned "
                "FROM probe_runs ORDER BY ts"
            )
        ]
        changes = []
        for r in conn.execute(
            "SELECT subject, ts, data FROM events WHERE kind = 'model.state_changed' ORDER BY seq"
        ):
            data = json.loads(r["data"])
            changes.append(
                {"subject": r["subject"], "ts_ms": r["ts"], "from": data["from"], "to": data["to"]}
            )
    finally:
        conn.close()
    return Stored(incs, runs, changes)


# --- outages of known length ---------------------------------------------------------------------


@dataclass
class Truth:
    """A fault as the test caused it: from ``start_s`` to ``end_s`` (epoch seconds)."""

    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


def check_outage(
    name: str,
    truth: Truth,
    inc: dict[str, Any],
    problems: list[str],
    table: list[str],
) -> None:
    """Compare one resolved incident with the fault behind it; note any miss in ``problems``."""
    began, resolved = inc["began_ms"] / 1000, inc["resolved_ms"] / 1000
    ttr = inc["ttr_ms"] / 1000
    err = ttr - truth.length_s
    table.append(
        f"{name:<22} truth {truth.length_s:6.3f}s  recorded {ttr:6.3f}s  error {err:+.3f}s  "
        f"began {began - truth.start_s:+.3f}s  resolved {resolved - truth.end_s:+.3f}s  "
        f"detected after {(inc['opened_ms'] - inc['began_ms']) / 1000:.3f}s"
    )
    if inc["ttr_ms"] != inc["resolved_ms"] - inc["began_ms"]:
        problems.append(f"{name}: ttr_ms {inc['ttr_ms']} != resolved_ms - began_ms")
    if abs(err) > SLACK_S:
        problems.append(f"{name}: recorded outage {ttr:.3f}s, truth {truth.length_s:.3f}s")
    # A request in flight as the fault came fails too, and it was sent a little earlier.
    if not truth.start_s - 0.1 <= began <= truth.start_s + SLACK_S:
        problems.append(f"{name}: began {began - truth.start_s:+.3f}s from the fault's start")
    if not truth.end_s - 0.1 <= resolved <= truth.end_s + SLACK_S:
        problems.append(f"{name}: resolved {resolved - truth.end_s:+.3f}s from the fault's end")


def test_outages_of_known_length_are_recorded_as_long_as_they_lasted(tmp_path: Path) -> None:
    """Four faults at once, one per model, each ``FAULT_S`` long: a frozen server (SIGSTOP,
    SIGCONT), a killed one restarted on its port, a slow one (over its latency bound) and a
    supervised one SIGKILLed whose restart loads for the rest of the span. Each incident's
    outage, its start and its end, and the state change back to ``up``, land within one probe
    interval (+100 ms) of the truth."""
    port = {n: free_port() for n in ("frozen", "killed", "slowed", "crashed")}
    go = tmp_path / "weights-loaded"
    go.touch()
    slow_extra = 'incident_after_degraded = "1s"\n[model.canary]\nmax_latency = "300ms"'
    body = f"""
[[process]]
name = "crashy"
command = {json.dumps(argv(MANAGED, "--port", port["crashed"], "--wait-file", go))}
port = {port["crashed"]}
stop_timeout = "1s"
{http_model("frozen", port["frozen"])}
{http_model("killed", port["killed"])}
{http_model("crashed", port["crashed"], 'process = "crashy"')}
{http_model("slowed", port["slowed"], slow_extra)}
"""
    names = list(port)
    with servers() as procs, ExitStack() as stack:
        for name in ("frozen", "killed"):
            procs.append(start_server(MANAGED, "--port", port[name])[0])
        procs.append(start_server(COUNTING, "--port", port["slowed"])[0])
        frozen, killed = procs[0], procs[1]
        agent = stack.enter_context(running_agent(write_config(tmp_path, body)))
        wait_for(lambda: all_up(agent, names), 20, what="every model up")
        crashy_pid = processes(agent)["crashy"]["pid"]

        def freeze() -> Truth:
            start = time.time()
            frozen.send_signal(signal.SIGSTOP)
            time.sleep(FAULT_S)  # the fault's own length
            end = time.time()
            frozen.send_signal(signal.SIGCONT)
            return Truth(start, end)

        def kill_and_restart() -> Truth:
            start = time.time()
            killed.kill()
            killed.wait(10)
            time.sleep(max(0.0, start + FAULT_S - time.time()))  # the fault's own length
            proc, up = start_server(MANAGED, "--port", port["killed"])
            procs.append(proc)
            return Truth(start, up)

        def slow_down() -> Truth:
            # The server's delay does not move the recorded outage: it begins when the first
            # slow request was sent (not when its late answer came) and ends when the first
            # fast answer arrived, a few ms after that request went out. It moves only the
            # `degraded` stamp (the first slow answer's arrival), checked below.
            start = time.time()
            control(port["slowed"], delay_ms=SLOW_DELAY_S * 1000)
            time.sleep(FAULT_S)  # the fault's own length
            end = time.time()
            control(port["slowed"], delay_ms=0)
            return Truth(start, end)

        def crash() -> Truth:
            go.unlink()  # the restarted server loads until the test says it is done
            start = time.time()
            os.kill(crashy_pid, signal.SIGKILL)
            time.sleep(FAULT_S)  # the fault's own length
            go.touch()
            wait_for(lambda: listening(port["crashed"]), 10, 0.01, "the restarted server")
            return Truth(start, time.time())

        faults: dict[str, Callable[[], Truth]] = {
            "frozen": freeze,
            "killed": kill_and_restart,
            "slowed": slow_down,
            "crashed": crash,
        }
        with ThreadPoolExecutor(len(faults)) as pool:
            futures = {name: pool.submit(fn) for name, fn in faults.items()}
            truth = {name: f.result() for name, f in futures.items()}

        def settled() -> bool:
            incs = incidents(agent)
            return (
                len(incs) >= 5
                and all(i["state"] == "resolved" for i in incs)
                and all_up(agent, names)
                and processes(agent)["crashy"]["state"] == "running"
            )

        wait_for(settled, 20, what="every incident resolved and every model up")
        assert agent.stop() == 0
    rec = stored(agent)

    problems: list[str] = []
    table: list[str] = []
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for inc in rec.incidents:
        by_subject.setdefault(inc["subject"], []).append(inc)
    expected = {
        "model:frozen": ["model_down"],
        "model:killed": ["model_down"],
        "model:slowed": ["model_degraded"],
        "model:crashed": ["model_down"],
        "process:crashy": ["process_exited"],
    }
    got = {s: [i["kind"] for i in incs] for s, incs in by_subject.items()}
    assert got == expected, rec.incidents

    for subject, (inc,) in by_subject.items():
        name = subject.split(":", 1)[1]
        fault = truth["crashed" if name == "crashy" else name]
        check_outage(f"{subject} {inc['kind']}", fault, inc, problems, table)
    # The exit is seen as the child is reaped: process_exited begins (and opens) at the kill.
    crash_inc = by_subject["process:crashy"][0]
    if not 0 <= crash_inc["began_ms"] / 1000 - truth["crashed"].start_s <= 0.1:
        problems.append(f"process_exited began {crash_inc['began_ms']} at the kill")
    if by_subject["model:crashed"][0]["root_id"] != crash_inc["id"]:
        problems.append("model:crashed's model_down is not rooted in the process_exited incident")

    for name, fault in truth.items():
        ups = [
            c["ts_ms"] / 1000
            for c in rec.changes
            if c["subject"] == f"model:{name}"
            and c["to"] == "up"
            and c["ts_ms"] / 1000 > fault.start_s
        ]
        up = ups[0] if ups else None
        table.append(
            f"model:{name:<16} up stamped {up - fault.end_s:+.3f}s from the fault's end"
            if up
            else f"model:{name} never back up"
        )
        if up is None or not fault.end_s - 0.1 <= up <= fault.end_s + SLACK_S:
            problems.append(f"model:{name}: up at {up}, fault ended at {fault.end_s:.3f}")
    # Degraded is stamped when the first slow answer is in: one interval at most to send it,
    # plus the server's delay to answer it.
    degraded = [
        c["ts_ms"] / 1000
        for c in rec.changes
        if c["subject"] == "model:slowed" and c["to"] == "degraded"
    ]
    start = truth["slowed"].start_s
    if not degraded or not start <= degraded[0] <= start + SLACK_S + SLOW_DELAY_S:
        problems.append(f"model:slowed degraded at {degraded}, fault began {start:.3f}")

    # A restart after a crash is nobody's plan: the probes that failed meanwhile count.
    crash_runs = [
        r
        for r in rec.runs
        if r["model"] == "crashed"
        and truth["crashed"].start_s * 1000 <= r["ts_ms"] <= truth["crashed"].end_s * 1000
    ]
    if not crash_runs or any(r["planned"] for r in crash_runs) or all(r["ok"] for r in crash_runs):
        problems.append(f"crash restart runs: {crash_runs}")
    print("\n" + "\n".join(table))
    assert not problems, "\n".join(problems + table)


# --- planned windows -----------------------------------------------------------------------------


def test_planned_starts_open_no_incident_and_cost_no_availability(tmp_path: Path) -> None:
    """The agent's start, an operator's restart (the CLI) and a config change to the command
    and environment: each keeps the supervised server down for several probes (it loads until
    the test lets it listen), and none opens an incident or costs availability; the failed
    runs are stored as planned."""
    port, go = free_port(), tmp_path / "weights-loaded"

    def config(tag: str) -> str:
        return f"""
[[process]]
name = "warm"
command = {json.dumps(argv(MANAGED, "--port", port, "--wait-file", go, tag))}
env = {{ MODEL_TAG = "{tag}" }}
port = {port}
stop_timeout = "2s"
{http_model("warm", port, 'process = "warm"')}
"""

    cfg = write_config(tmp_path, config("v1"))
    windows: list[tuple[float, float]] = []

    def planned_start(agent: RunningAgent, begin: float, old_pid: int | None) -> None:
        """Let the server load through a few failed probes, then listen; wait until it is up."""
        wait_for(
            lambda: (
                len(
                    [
                        r
                        for r in probe_runs(agent, "warm")
                        if r["ts_ms"] >= begin * 1000 and not r["ok"]
                    ]
                )
                >= 3
            ),
            20,
            what="three failed probes while the server loads",
        )
        go.touch()
        wait_for(
            lambda: (
                (p := processes(agent)["warm"])["state"] == "running"
                and p["pid"] != old_pid
                and all_up(agent, ["warm"])
            ),
            20,
            what="the server running again and its model up",
        )
        windows.append((begin, time.time()))

    with running_agent(cfg) as agent:
        planned_start(agent, time.time() - 5, None)
        pid = processes(agent)["warm"]["pid"]

        go.unlink()
        begin = time.time()
        out = subprocess.run(
            vigil_cmd("process", "restart", "warm", "--config", str(cfg)),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        planned_start(agent, begin, pid)
        pid = processes(agent)["warm"]["pid"]

        go.unlink()
        begin = time.time()
        new = cfg.with_suffix(".new")
        new.write_text(cfg.read_text().replace('"v1"', '"v2"'), encoding="utf-8")
        new.replace(cfg)  # atomically, as the docs ask: the file watcher reloads it
        planned_start(agent, begin, pid)
        assert processes(agent)["warm"]["argv"][-1] == "v2"

        assert incidents(agent) == []
        warm = models(agent)["warm"]
        assert warm["availability_1h"] == 1.0, warm["outcomes_1h"]
        assert agent.stop() == 0
    rec = stored(agent)

    assert rec.incidents == []
    failed = [r for r in rec.runs if not r["ok"]]
    assert failed and all(r["planned"] for r in failed), failed
    for begin, end in windows:
        inside = [r for r in failed if begin * 1000 <= r["ts_ms"] <= end * 1000]
        assert len(inside) >= 3, (begin, end, failed)
    assert not [c for c in rec.changes if c["to"] in ("down", "degraded")], rec.changes


# --- one request on the wire ---------------------------------------------------------------------


def test_one_request_on_the_wire_while_the_server_starts(tmp_path: Path) -> None:
    """A supervised server that answers every request slowly (400 ms) and says "loading" for
    its first 4 s: the start-up gate (every 250 ms), the 1 s schedule and probe-now requests
    all want a probe at once, and the server never sees two requests of the model at a time."""
    port = free_port()
    body = f"""
[[process]]
name = "loader"
command = {json.dumps(argv(COUNTING, "--port", port, "--delay-ms", 400, "--loading-s", 4))}
port = {port}
{http_model("loader", port, 'process = "loader"')}
"""
    with running_agent(write_config(tmp_path, body)) as agent:
        stop = threading.Event()

        def probe_now() -> None:
            # An operator pressing "probe now" again and again while the server loads.
            while not stop.is_set():
                req = urllib.request.Request(
                    f"{agent.url}/api/v1/models/loader/probe",
                    method="POST",
                    data=b"",
                    headers={"Authorization": f"Bearer {agent.token}"},
                )
                with suppress(urllib.error.URLError), urllib.request.urlopen(req, timeout=5):
                    pass
                stop.wait(0.15)

        presser = threading.Thread(target=probe_now, daemon=True)
        presser.start()
        try:
            wait_for(
                lambda: processes(agent).get("loader", {}).get("state") == "running",
                20,
                what="the server ready",
            )
            seen = server_stats(port)["requests"]
            # A few more rounds with the server ready: schedule and probe-now still meet.
            wait_for(lambda: server_stats(port)["requests"] >= seen + 3, 10, what="3 more")
        finally:
            stop.set()
            presser.join(10)
        stats = server_stats(port)
        assert agent.stop() == 0
    runs = [r for r in stored(agent).runs if r["model"] == "loader"]
    assert stats["requests"] >= 10, stats
    assert stats["max_inflight"] == 1, stats
    # Every caller shared the run out rather than sending its own: one request, one run.
    # (the stats were read a moment before the agent stopped, which cancels a run still out).
    assert abs(len(runs) - stats["requests"]) <= 1, (stats, len(runs))
