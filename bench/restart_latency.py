"""Measure how fast a crashed or hung model server is running again, under Vigil and supervisord.

Issue 4's targets: from a crash (exit) to the new process running, p99 <= 50 ms over 100 crashes
and never slower than supervisord (``autorestart=true``) measured in the same run; the time from
a hang to a healthy restart; and no restart of a healthy process during 10 minutes of probe
noise. Three phases, each under a real supervisor started here with its config and sockets in a
temporary directory (loopback only):

**Crash.** The supervised child is a tiny program (C, compiled here when a C compiler exists;
else Python) that first reads ``CLOCK_MONOTONIC`` (system-wide, so comparable across processes)
and sends ``S pid ns`` to the benchmark's unix datagram socket, then waits for SIGUSR1. The
benchmark lets it run ``--healthy`` seconds (a healthy run, not a start-up failure), sends
SIGUSR1, and the child sends ``X pid ns`` and calls ``_exit(1)``. The latency of one crash is
the new child's ``S`` time minus the old child's ``X`` time: exit, reaping, the supervisor's
decision and the fork/exec of the new process, up to its first instruction in ``main``. Both
times are taken by the children themselves, so the benchmark's own delays do not count.

* Vigil: ``vigil agent run`` with ``restart = "always"``, ``quarantine_after = 0`` (a benchmark
  crashing its child 100 times is a crash loop by design) and ``backoff_reset = "100ms"``: the
  child runs ``--healthy`` (0.3 s) before each crash, longer than ``backoff_reset``, so every
  crash is "the first restart after a healthy period", which Vigil restarts at once. The
  backoff itself is left at its defaults, so a broken reset would show as 1 s+ restarts.
* supervisord (PyPI): ``autorestart=true``, ``startsecs=0``: the child counts as started once
  spawned, so its exit is an ordinary exit (EXITED, restarted at once) rather than a failed
  start (BACKOFF, restarted after 1 s, 2 s, ...). ``startsecs=1`` would need every child to run
  over a second and would measure the same code path.
* For scale, the spawn floor: the benchmark itself starts the same child with ``subprocess``
  and measures from just before ``Popen`` to the child's ``main``.

The first ``--warmup-crashes`` restarts of each supervisor are reported but not counted.

**Hang.** A small HTTP server (Python, started with ``-S``) is a Vigil ``[[process]]`` with
``port`` set, linked to an ``http`` model probed every 200 ms with a 200 ms timeout,
``hang_after_failures = 3``. On SIGUSR2 it stops answering (it accepts connections and never
replies), recording that instant; its next incarnation records its start, the moment it
listens and its first answered request. From the agent's audit events (read from its database
afterwards) the hang-to-healthy time is broken down into detection (hang -> the agent decides
it is hung), stop (SIGTERM to the tree, waiting for it and its port), restart to the new
process's ``main``, its own start-up to listening, listening to its first answered probe, and
the agent's ``process.ready``. Between hangs the server stays healthy for ``--hang-healthy``
seconds, longer than its ``backoff_reset`` (1 s), so each hang is again a first restart.

**Noise.** The same server and probe, healthy but noisy, for ``--noise-duration`` seconds: a
random 10 % of requests are slowed by 20-120 ms, 4 % fail (HTTP 503, a connection closed
without an answer, or an answer later than the probe's timeout), never two failures within
three requests, so fewer in a row than ``hang_after_failures``. The agent must restart nothing.
A closed connection is mostly absorbed before the agent sees it: aiohttp retries an idempotent
GET once on a dropped connection, so the failures the agent saw are counted from its own probe
runs (its database), next to what the server injected.

Run by hand from the repo root: ``.venv/bin/python bench/restart_latency.py [--json]``
(``--noise-duration 60`` for a quick run). Exit code: 0 every target met (the noise target
needs the full 600 s), 1 a target missed or not judged, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
from benchlib import (
    ROOT,
    BenchError,
    child_env,
    machine,
    percentiles,
    stop,
    version,
    wait_for,
)

EXIT_OK, EXIT_MISSED, EXIT_ERROR = 0, 1, 2
TARGET_P99_MS = 50.0
TARGET_NOISE_S = 600.0
HANG_BACKOFF_RESET = "1s"

CRASHER_C = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long long t0 = now_ns();  /* first thing in main: "the new process is running" */
    if (argc < 2) return 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    char buf[96];
    int n = snprintf(buf, sizeof buf, "S %d %lld", (int)getpid(), t0);
    sendto(fd, buf, n, 0, (struct sockaddr *)&addr, sizeof addr);
    int sig;
    sigwait(&set, &sig);
    n = snprintf(buf, sizeof buf, "X %d %lld", (int)getpid(), now_ns());
    sendto(fd, buf, n, 0, (struct sockaddr *)&addr, sizeof addr);
    _exit(1);
}
"""

CRASHER_PY = """\
import time
T0 = time.monotonic_ns()  # first thing: "the new process is running"
import os, signal, socket, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(f"S {os.getpid()} {T0}".encode(), sys.argv[1])
signal.sigwait({signal.SIGUSR1})
s.sendto(f"X {os.getpid()} {time.monotonic_ns()}".encode(), sys.argv[1])
os._exit(1)
"""

SERVER_PY = """\
import time
T0 = time.monotonic_ns()
import os, random, signal, socket, sys, threading

EV, PORT, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TIMEOUT_S = float(sys.argv[4])
ev = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def send(kind, ns=None, extra=""):
    msg = f"{kind} {os.getpid()} {ns or time.monotonic_ns()} {extra}".strip()
    try:
        ev.sendto(msg.encode(), EV)
    except OSError:
        pass


send("S", T0)
hung = threading.Event()
lock = threading.Lock()
state = {"answered": 0, "since_fail": 99}
OK = b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nok\\n"
BUSY = (b"HTTP/1.1 503 Service Unavailable\\r\\nContent-Length: 5\\r\\n"
        b"Connection: close\\r\\n\\r\\nbusy\\n")


def on_usr2(*_):
    hung.set()
    send("H")


signal.signal(signal.SIGUSR2, on_usr2)


def decide():
    # At most one failure in any three requests: fewer in a row than hang_after_failures.
    if MODE != "noise":
        return "ok", 0.0
    with lock:
        r = random.random()
        if state["since_fail"] >= 2 and r < 0.04:
            state["since_fail"] = 0
            return random.choice(("503", "close", "late")), 0.0
        state["since_fail"] += 1
        if r < 0.14:
            return "spike", random.uniform(0.02, 0.12)
        return "ok", 0.0


def handle(conn):
    with conn:
        data = b""
        try:
            while b"\\r\\n\\r\\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            if hung.is_set():
                while True:
                    time.sleep(3600)  # accepted, never answered: a hung server
            action, delay = decide()
            if action != "ok":
                send("N", extra=action)
            if action == "spike":
                time.sleep(delay)
            elif action == "503":
                conn.sendall(BUSY)
                return
            elif action == "close":
                return
            elif action == "late":
                time.sleep(TIMEOUT_S * 2)
            conn.sendall(OK)
            with lock:
                state["answered"] += 1
                first = state["answered"] == 1
            if first:
                send("A")
        except OSError:
            return


sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", PORT))
sock.listen(64)
send("L")
print(f"listening on 127.0.0.1:{PORT} mode={MODE}", flush=True)
while True:
    conn, _ = sock.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


@dataclass(frozen=True)
class Msg:
    """One datagram from a child: kind, pid, its CLOCK_MONOTONIC time, extra words."""

    kind: str
    pid: int
    ns: int
    extra: str = ""


class Inbox:
    """The unix datagram socket the children report to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.pending: list[Msg] = []
        self.seen: list[Msg] = []

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _recv(self, timeout_s: float) -> Msg | None:
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            raw = self.sock.recv(512).decode()
        except TimeoutError:
            return None
        kind, pid, ns, *extra = raw.split()
        msg = Msg(kind, int(pid), int(ns), " ".join(extra))
        self.seen.append(msg)
        return msg

    def drain(self) -> list[Msg]:
        """Everything that has arrived, without waiting."""
        while (msg := self._recv(0.001)) is not None:
            self.pending.append(msg)
        out, self.pending = self.pending, []
        return out

    def expect(
        self,
        kind: str,
        timeout_s: float,
        what: str,
        *,
        pid: int | None = None,
        not_pid: int | None = None,
    ) -> Msg:
        """The first ``kind`` message (from ``pid``, or not from ``not_pid``); others are kept
        for later."""

        def wanted(m: Msg) -> bool:
            return m.kind == kind and pid in (None, m.pid) and m.pid != not_pid

        for i, old in enumerate(self.pending):
            if wanted(old):
                return self.pending.pop(i)
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is None:
                break
            if wanted(msg):
                return msg
            self.pending.append(msg)
        raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")


# --- helpers --------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mono_to_epoch_offset_ns() -> int:
    """time.time_ns() - time.monotonic_ns(), the tightest of a few readings."""
    best: tuple[int, int] | None = None
    for _ in range(20):
        a = time.monotonic_ns()
        wall = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, wall - (a + b) // 2)
    assert best is not None
    return best[1]


def kill_quietly(pid: int, sig: int) -> None:
    """Signal ``pid`` if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# --- the children ---------------------------------------------------------------------------


def build_crasher(tmp: Path, kind: str) -> tuple[list[str], str]:
    """The crashing child's argv prefix (the inbox path is appended) and what it is."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if kind == "c" or (kind == "auto" and cc):
        if not cc:
            raise BenchError("--child c: no C compiler (cc or gcc) on PATH")
        src = tmp / "crasher.c"
        src.write_text(CRASHER_C)
        exe = tmp / "crasher"
        res = subprocess.run(
            [cc, "-O2", "-o", str(exe), str(src)], check=False, capture_output=True, text=True
        )
        if res.returncode != 0:
            raise BenchError(f"compiling the crasher failed:\n{res.stderr}")
        return [str(exe)], f"C program ({Path(cc).name} -O2)"
    path = tmp / "crasher.py"
    path.write_text(CRASHER_PY)
    return [sys.executable, "-S", "-I", str(path)], "Python script (python -S -I)"


@dataclass
class CrashRun:
    """The crash phase of one supervisor."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    warmup_ms: list[float] = field(default_factory=list)
    crash_to_signal_ms: list[float] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def crash_loop(
    inbox: Inbox, run: CrashRun, count: int, warmup: int, healthy_s: float, timeout_s: float
) -> None:
    """Crash the supervised child ``warmup + count`` times; record exit -> next start."""
    current = inbox.expect("S", timeout_s, f"{run.name}: the first child")
    for i in range(warmup + count):
        time.sleep(healthy_s)
        if inbox.drain():
            raise BenchError(f"{run.name}: a child started or exited unasked")
        kill_quietly(current.pid, signal.SIGUSR1)
        pid = current.pid
        gone = inbox.expect("X", timeout_s, f"{run.name}: child {pid} to crash", pid=pid)
        nxt = inbox.expect(
            "S", timeout_s, f"{run.name}: a new child after crash {i + 1}", not_pid=pid
        )
        ms = (nxt.ns - gone.ns) / 1e6
        (run.warmup_ms if i < warmup else run.latencies_ms).append(round(ms, 3))
        current = nxt
    run.stats = percentiles(run.latencies_ms, qs=(50, 95, 99), digits=2)


def spawn_floor(argv: list[str], inbox: Inbox, count: int) -> dict[str, float]:
    """From ``Popen`` to the child's ``main``, the child started by this benchmark directly."""
    samples = []
    for _ in range(count):
        t0 = time.monotonic_ns()
        proc = subprocess.Popen([*argv, str(inbox.path)], stdin=subprocess.DEVNULL)
        msg = inbox.expect("S", 10, "a child", pid=proc.pid)
        samples.append((msg.ns - t0) / 1e6)
        proc.kill()
        proc.wait()
    inbox.drain()
    return percentiles(samples, qs=(50, 95, 99), digits=2)


# --- Vigil ----------------------------------------------------------------------------------


@dataclass
class Agent:
    """A running ``vigil agent run``."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path


def agent_config(tmp: Path, name: str, body: str) -> Path:
    """A config with its own data dir, the API on a free loopback port, plus ``body``."""
    data = tmp / name / "data"
    path = tmp / name / "vigil.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""
[agent]
host = "bench"
data_dir = {json.dumps(str(data))}
listen = "127.0.0.1:0"
sample_interval = "1s"
on_exit = "stop"
{body}
""",
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def vigil_agent(config: Path) -> Iterator[Agent]:
    """Start the agent on ``config``, yield once its API is up, stop it (it must exit 0)."""
    data_dir = config.parent / "data"
    log_path = config.parent / "agent.log"
    argv = [sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(config)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=ROOT,
            start_new_session=True,
        )
    agent = Agent(proc, data_dir, log_path)
    ok = False
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise BenchError(
                    f"agent exited {proc.returncode}:\n{log_path.read_text(errors='replace')}"
                )
            with contextlib.suppress(OSError, ValueError, KeyError):
                return bool(json.loads((data_dir / "api.json").read_text())["url"])
            return False

        wait_for(ready, 30.0, "the agent's api.json")
        yield agent
        ok = True
    finally:
        try:
            code = stop(proc)
        except BenchError:
            if ok:
                raise
        else:
            if ok and code != 0:
                raise BenchError(f"agent exited {code} on SIGTERM (expected 0); log {log_path}")


def read_events(data_dir: Path, subject: str) -> list[dict[str, Any]]:
    """The agent's audit events about ``subject`` (read-only; the agent has stopped)."""
    conn = sqlite3.connect(f"file:{data_dir / 'vigil.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT ts, kind, message, data FROM events WHERE subject = ? ORDER BY seq",
            (subject,),
        ).fetchall()
    finally:
        conn.close()
    return [{"ts_ms": r[0], "kind": r[1], "message": r[2], "data": json.loads(r[3])} for r in rows]


def vigil_crashes(tmp: Path, argv: list[str], inbox: Inbox, args: argparse.Namespace) -> CrashRun:
    """The crash phase under a real ``vigil agent run``."""
    command = json.dumps([*argv, str(inbox.path)])
    config = agent_config(
        tmp,
        "vigil-crash",
        f"""
[[process]]
name = "crasher"
command = {command}
restart = "always"
backoff_reset = "100ms"
quarantine_after = 0
""",
    )
    run = CrashRun("vigil")
    with vigil_agent(config) as agent:
        crash_loop(inbox, run, args.crashes, args.warmup_crashes, args.healthy, 30.0)
    inbox.drain()
    events = read_events(agent.data_dir, "process:crasher")
    restarting = [e for e in events if e["kind"] == "process.restarting"]
    delayed = [e for e in restarting if e["data"].get("delay_s", 0) > 0]
    run.notes.append(
        f"{len(restarting)} process.restarting events, {len(delayed)} with a backoff delay"
    )
    if len(restarting) < args.crashes + args.warmup_crashes:
        raise BenchError(f"expected {args.crashes + args.warmup_crashes} restarts: {run.notes}")
    return run


# --- supervisord ----------------------------------------------------------------------------


def supervisord_version() -> str | None:
    """The installed supervisor's version, or None when it is not importable."""
    if importlib.util.find_spec("supervisor") is None:
        return None
    return version("supervisor") or "unknown"


def supervisord_crashes(
    tmp: Path, argv: list[str], inbox: Inbox, args: argparse.Namespace
) -> CrashRun:
    """The crash phase under a real ``supervisord`` (autorestart=true, startsecs=0)."""
    d = tmp / "supervisord"
    d.mkdir()
    command = " ".join([*argv, str(inbox.path)])
    conf = d / "supervisord.conf"
    conf.write_text(
        f"""
[unix_http_server]
file={d}/supervisor.sock

[supervisord]
nodaemon=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{d}/supervisor.sock

[program:crasher]
command={command}
autostart=true
autorestart=true
startsecs=0
startretries=3
stopsignal=TERM
stdout_logfile={d}/crasher.log
redirect_stderr=true
""",
        encoding="utf-8",
    )
    argv_sd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf), "-n"]
    log_path = d / "supervisord.out"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv_sd, stdout=log, stderr=subprocess.STDOUT, cwd=d, start_new_session=True
        )
    run = CrashRun("supervisord")
    try:
        crash_loop(inbox, run, args.crashes, args.warmup_crashes, args.healthy, 30.0)
    except BenchError as exc:
        text = (d / "supervisord.log").read_text(errors="replace")[-2000:]
        raise BenchError(f"{exc}\nsupervisord.log:\n{text}") from None
    finally:
        code = stop(proc)
        inbox.drain()
    if code != 0:
        raise BenchError(f"supervisord exited {code} on SIGTERM")
    return run


# --- hang -----------------------------------------------------------------------------------


def server_body(server: Path, inbox: Inbox, port: int, mode: str) -> str:
    """The ``[[process]]`` and ``[[model]]`` of the HTTP server in ``mode`` (hang/noise)."""
    argv = [sys.executable, "-S", str(server), str(inbox.path), str(port), mode, "0.2"]
    command = json.dumps(argv)
    return f"""
[[process]]
name = "server"
command = {command}
restart = "always"
port = {port}
hang_after_failures = 3
backoff_reset = {json.dumps(HANG_BACKOFF_RESET)}
stop_timeout = "5s"

[[model]]
name = "m"
protocol = "http"
url = "http://127.0.0.1:{port}/health"
interval = "200ms"
timeout = "200ms"
process = "server"
"""


def hang_phase(tmp: Path, inbox: Inbox, args: argparse.Namespace) -> dict[str, Any]:
    """Hang the server ``--hangs`` times under Vigil; time each hang to a healthy restart."""
    server = tmp / "server.py"
    server.write_text(SERVER_PY)
    port = free_port()
    config = agent_config(tmp, "vigil-hang", server_body(server, inbox, port, "hang"))
    hangs: list[dict[str, int]] = []
    with vigil_agent(config) as agent:
        first = inbox.expect("A", 30, "the server's first answer")
        current = first.pid
        for i in range(args.hangs):
            time.sleep(args.hang_healthy)
            inbox.drain()  # only what follows this hang counts
            kill_quietly(current, signal.SIGUSR2)
            pid = current
            h = inbox.expect("H", 10, "the hang", pid=pid)
            s = inbox.expect("S", 60, f"a new server {i + 1}", not_pid=pid)
            lis = inbox.expect("L", 30, "the new server listening", pid=s.pid)
            a = inbox.expect("A", 30, "the new server's first answer", pid=s.pid)
            hangs.append({"hang": h.ns, "start": s.ns, "listen": lis.ns, "answer": a.ns})
            current = s.pid
        time.sleep(0.5)  # the last process.ready reaches the database
        offset = mono_to_epoch_offset_ns()
    inbox.drain()
    events = read_events(agent.data_dir, "process:server")
    return {"hangs": breakdown(hangs, events, offset), "port": port}


def breakdown(
    hangs: list[dict[str, int]], events: list[dict[str, Any]], offset_ns: int
) -> dict[str, Any]:
    """Each hang's phases in ms, from the children's clocks and the agent's events."""
    rows: list[dict[str, float]] = []
    for h in hangs:
        t0 = (h["hang"] + offset_ns) / 1e6  # epoch ms

        def first(kind: str, after: float) -> dict[str, Any]:
            for e in events:
                if e["kind"] == kind and e["ts_ms"] >= after - 1:
                    return e
            raise BenchError(f"no {kind} event after the hang at {after:.0f}")

        hung = first("process.hung", t0)
        started = first("process.started", hung["ts_ms"])
        ready = first("process.ready", started["ts_ms"])
        restarting = first("process.restarting", hung["ts_ms"])
        stop_ms = float(hung["data"].get("stop_ms") or 0.0)
        start = (h["start"] - h["hang"]) / 1e6
        listen = (h["listen"] - h["hang"]) / 1e6
        answer = (h["answer"] - h["hang"]) / 1e6
        rows.append(
            {
                "detect_ms": round(hung["ts_ms"] - stop_ms - t0, 1),
                "stop_ms": round(stop_ms, 1),
                "backoff_s": float(restarting["data"].get("delay_s", 0.0)),
                "to_new_main_ms": round(start - (hung["ts_ms"] - t0), 1),
                "server_startup_ms": round(listen - start, 1),
                "listen_to_answer_ms": round(answer - listen, 1),
                "hang_to_answer_ms": round(answer, 1),
                "hang_to_ready_event_ms": round(ready["ts_ms"] - t0, 1),
            }
        )
    keys = list(rows[0]) if rows else []
    return {
        "each": rows,
        "p50": {k: round(statistics.median(r[k] for r in rows), 1) for k in keys},
        "max": {k: max(r[k] for r in rows) for k in keys},
    }


# --- noise ----------------------------------------------------------------------------------


def noise_phase(tmp: Path, inbox: Inbox, duration_s: float) -> dict[str, Any]:
    """A healthy, noisy server for ``duration_s``: count the agent's restarts (must be 0)."""
    server = tmp / "server.py"
    server.write_text(SERVER_PY)
    port = free_port()
    config = agent_config(tmp, "vigil-noise", server_body(server, inbox, port, "noise"))
    with vigil_agent(config) as agent:
        first = inbox.expect("A", 30, "the server's first answer")
        inbox.drain()
        t0_ms = int(time.time() * 1000)
        end = time.monotonic() + duration_s
        injected: dict[str, int] = {}
        starts = 0
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            for m in inbox.drain():
                if m.kind == "N":
                    injected[m.extra] = injected.get(m.extra, 0) + 1
                elif m.kind == "S":
                    starts += 1
        t1_ms = int(time.time() * 1000)
        pid_same = first.pid in psutil.pids()
    events = [
        e for e in read_events(agent.data_dir, "process:server") if t0_ms <= e["ts_ms"] <= t1_ms
    ]
    conn = sqlite3.connect(f"file:{agent.data_dir / 'vigil.db'}?mode=ro", uri=True)
    try:
        runs = conn.execute(
            "SELECT ok, category FROM probe_runs WHERE model = 'm' AND ts BETWEEN ? AND ? "
            "ORDER BY ts",
            (t0_ms, t1_ms),
        ).fetchall()
    finally:
        conn.close()
    longest = streak = 0
    categories: dict[str, int] = {}
    for ok, category in runs:
        categories[category] = categories.get(category, 0) + 1
        streak = 0 if ok else streak + 1
        longest = max(longest, streak)
    bad = ("process.hung", "process.exited", "process.restarting", "process.started")
    return {
        "duration_s": duration_s,
        "restarts": sum(1 for e in events if e["kind"] == "process.restarting"),
        "restart_events": [f"{e['kind']}: {e['message']}" for e in events if e["kind"] in bad],
        "server_starts": starts,
        "server_pid_unchanged": pid_same,
        "probe_runs": len(runs),
        "probe_categories": categories,
        "longest_failure_streak": longest,
        "injected": injected,
    }


def noise_verdict(noise: dict[str, Any] | None) -> bool | None:
    """Missed on any restart; met only over the issue's full 10 minutes; else not judged."""
    if noise is None:
        return None
    if noise["restarts"] or noise["server_starts"]:
        return False
    return True if noise["duration_s"] >= TARGET_NOISE_S else None


# --- report ---------------------------------------------------------------------------------


def _row(label: str, s: dict[str, float]) -> str:
    if not s.get("n"):
        return f"{label:14} (not run)"
    return (
        f"{label:14} {s['n']:>4} {s['p50']:>8.2f} {s['p95']:>8.2f} {s['p99']:>8.2f} "
        f"{s['max']:>8.2f} {s['mean']:>8.2f}"
    )


def render(result: dict[str, Any]) -> str:
    """The human-readable summary."""
    m = result["machine"]
    lines = [
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB, "
        f"{m['os']}, kernel {m['kernel']}, Python {m['python']}, supervisord "
        f"{m['supervisord'] or 'not installed'}, load {m['loadavg_at_start']}; "
        f"git {m['git_commit']}" + (" (uncommitted changes)" if m["git_dirty"] else ""),
        f"child: {result['child']}; {result['setup']}",
        "",
        "crash: child's exit -> new child's main, ms",
        f"{'':14} {'n':>4} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'mean':>8}",
    ]
    crash = result["crash"]
    lines.append(_row("vigil", crash["vigil"]["stats"]))
    if crash.get("supervisord"):
        lines.append(_row("supervisord", crash["supervisord"]["stats"]))
    else:
        lines.append(f"supervisord    skipped ({crash.get('supervisord_skipped')})")
    lines.append(_row("spawn floor", crash["spawn_floor"]))
    for name in ("vigil", "supervisord"):
        run = crash.get(name)
        if run:
            warm = ", ".join(f"{v:.2f}" for v in run["warmup_ms"])
            lines.append(f"  {name} warm-up restarts (not counted): [{warm}] ms")
            lines += [f"  {name}: {n}" for n in run["notes"]]
    hang = result.get("hang")
    if hang:
        lines += ["", "hang -> healthy restart (ms; p50 / max over hangs)"]
        p50, mx = hang["hangs"]["p50"], hang["hangs"]["max"]
        for k in p50:
            lines.append(f"  {k:24} {p50[k]:>9.1f} {mx[k]:>9.1f}")
    noise = result.get("noise")
    if noise:
        lines += [
            "",
            f"noise: {noise['duration_s']:g}s, {noise['probe_runs']} probes "
            f"{noise['probe_categories']}, longest failure streak "
            f"{noise['longest_failure_streak']}, injected {noise['injected']}",
            f"  restarts: {noise['restarts']}; server starts seen: {noise['server_starts']}; "
            f"first server still running: {noise['server_pid_unchanged']}",
        ]
        lines += [f"  {e}" for e in noise["restart_events"]]
    lines.append("")
    for name, ok in result["targets"].items():
        verdict = "met" if ok else "MISSED" if ok is False else "not judged (not run, or shorter)"
        lines.append(f"target {name}: {verdict}")
    lines.append(f"-> {'PASS' if result['pass'] else 'FAIL'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/restart_latency.py",
        description="Crash-to-running latency under Vigil and supervisord, hang-to-healthy "
        "time and false restarts under probe noise (issue 4).",
    )
    p.add_argument("--crashes", type=int, default=100, help="counted crashes each (default 100)")
    p.add_argument(
        "--warmup-crashes", type=int, default=3, help="uncounted first crashes (default 3)"
    )
    p.add_argument(
        "--healthy",
        type=float,
        default=0.3,
        help="seconds each child runs before its crash (default 0.3)",
    )
    p.add_argument("--hangs", type=int, default=5, help="hangs to time (default 5; 0 skips)")
    p.add_argument(
        "--hang-healthy",
        type=float,
        default=1.5,
        help="seconds the server is healthy before each hang (default 1.5)",
    )
    p.add_argument(
        "--noise-duration",
        type=float,
        default=600.0,
        help="seconds of probe noise (default 600; 0 skips)",
    )
    p.add_argument(
        "--child",
        choices=("auto", "c", "python"),
        default="auto",
        help="the crashing child: C (needs cc), Python, or C when a compiler exists",
    )
    p.add_argument(
        "--compare-supervisord",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure supervisord (default: when it is importable)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, dbs)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the summary or JSON."""
    args = build_parser().parse_args(argv)
    have_sd = supervisord_version() is not None
    compare = have_sd if args.compare_supervisord is None else args.compare_supervisord
    if compare and not have_sd:
        print("supervisor is not importable with this interpreter", file=sys.stderr)
        return EXIT_ERROR
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    inbox = Inbox(tmp / "inbox.sock")
    result: dict[str, Any] = {"machine": machine(supervisord=supervisord_version())}
    try:
        crasher, what = build_crasher(tmp, args.child)
        result["child"] = what
        result["setup"] = (
            f"{args.crashes} crashes (+{args.warmup_crashes} warm-up) each, the child healthy "
            f"{args.healthy:g}s before each; {args.hangs} hangs after {args.hang_healthy:g}s "
            f"healthy; {args.noise_duration:g}s of probe noise"
        )
        crash: dict[str, Any] = {"spawn_floor": spawn_floor(crasher, inbox, 20)}
        crash["vigil"] = vigil_crashes(tmp, crasher, inbox, args).__dict__
        if compare:
            crash["supervisord"] = supervisord_crashes(tmp, crasher, inbox, args).__dict__
        else:
            crash["supervisord"] = None
            crash["supervisord_skipped"] = (
                "--no-compare-supervisord" if args.compare_supervisord is False else "not installed"
            )
        result["crash"] = crash
        result["hang"] = hang_phase(tmp, inbox, args) if args.hangs > 0 else None
        result["noise"] = (
            noise_phase(tmp, inbox, args.noise_duration) if args.noise_duration > 0 else None
        )
    except BenchError as exc:
        print(f"benchmark failed: {exc}\n(files kept in {tmp})", file=sys.stderr)
        return EXIT_ERROR
    finally:
        inbox.close()
    v = crash["vigil"]["stats"]
    sd = crash["supervisord"]["stats"] if crash["supervisord"] else None
    targets: dict[str, bool | None] = {
        f"vigil p99 <= {TARGET_P99_MS:g} ms": v["p99"] <= TARGET_P99_MS,
        "vigil p50 and p99 <= supervisord's": (
            None if sd is None else v["p50"] <= sd["p50"] and v["p99"] <= sd["p99"]
        ),
        f"no restart in {TARGET_NOISE_S:g}s of probe noise": noise_verdict(result["noise"]),
    }
    result["targets"] = targets
    result["pass"] = all(ok is True for ok in targets.values())
    out: IO[str] = sys.stdout
    if args.json:
        json.dump(result, out, indent=2)
        out.write("\n")
    else:
        print(render(result), file=out)
    if args.keep:
        print(f"files kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return EXIT_OK if result["pass"] else EXIT_MISSED


if __name__ == "__main__":
    sys.exit(main())
