"""Measure the agent's own overhead: CPU (% of one core) and peak RSS at 1 s host sampling.

Issue 2's budget: the agent costs at most 1 % of one core and 80 MB of RSS on a realistic small
setup; issue 14 (a lean agent) lowered the RSS target to 45 MB. It also reports what importing
the daemon alone costs (modules, peak RSS).

This starts a real agent (``python -m agent.cli agent run``) with a temporary data dir,
``sample_interval = "1s"``, one supervised ``sleep`` child and, unless ``--no-model``, one
kserve_v2 model probing the bundled demo model every 5 s (the demo server is started here
first, on 127.0.0.1). After the API is up and a warm-up (so interpreter start-up and imports
are not counted) it samples the agent process with psutil every 0.5 s for ``--duration``
seconds (default 60):

* CPU: (user + system) CPU seconds of the agent process itself over the window / wall time,
  and the busiest 5 s of the window.
* RSS: the peak of the samples, the kernel's VmHWM (lifetime peak, start-up included: what
  sampling cannot miss) and USS at the end. The target is checked against the larger of the
  sampled peak and VmHWM.

Children (the supervised ``sleep``) are reported separately, for context. At the end the agent
is stopped with SIGTERM (it must exit 0; ``on_exit = "stop"`` so it takes its child along) and
its database is read (read-only) for the samples, series and probe runs written.

The peer is glances (PyPI), measured the same way at the same interval:
``glances -C EMPTY --disable-check-update --stdout cpu.total,mem.percent -t 1``. In stdout mode
glances still updates every enabled plugin each cycle (processes included) and prints two
values, so it is glances' collection cost without its curses UI. The empty config (``-C``)
keeps a user's glances.conf out of the numbers; ``--disable-check-update`` keeps it off PyPI,
so, like everything here, it sends nothing beyond loopback.

By default both run **concurrently**, over the same window: the agent's and glances' costs
depend on the host (how many processes there are to scan, what the load is), and on a shared
machine that changes from minute to minute, so measuring them side by side is the fair
comparison. Each costs the other little: one more process in its scans.
``--glances-mode sequential`` measures glances after the agent has stopped instead, for a run
where not even that is wanted. The host's state over each window (processes, load, busy %) is
recorded with the numbers.

Run by hand from the repo root: ``.venv/bin/python bench/agent_overhead.py [--json]``.
``make bench-deps`` installs glances. Exit code: 0 within the target, 1 target missed, 2 the
benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
from benchlib import ROOT, BenchError, child_env, machine, stop, version, wait_for

MB = 1_000_000  # the issue says "80 MB"; read as 10^6 bytes, the stricter reading
TARGET_CPU_PCT = 1.0
TARGET_RSS_BYTES = 45 * MB  # issue 14 (a lean agent); issue 2's budget was 80 MB
POLL_S = 0.5
CPU_WINDOW_S = 5.0  # the busiest-window figure; cpu_times ticks are 10 ms, too coarse per poll
DEMO_MODEL = ROOT / "agent" / "demo" / "model.onnx"
CANARY_INPUTS = '[{name = "input", shape = [1, 4], datatype = "FP32", data = [5.1, 3.5, 1.4, 0.2]}]'
EXIT_OK, EXIT_MISSED, EXIT_ERROR = 0, 1, 2


@dataclass
class Usage:
    """What one measured process cost over the window, and what the host was doing."""

    name: str
    command: str
    pid: int
    window_s: float
    window_start_utc: str
    cpu_s: float
    cpu_pct_of_one_core: float
    cpu_pct_max_window: float
    rss_peak_bytes: int
    rss_mean_bytes: int
    rss_end_bytes: int
    uss_end_bytes: int | None
    vm_hwm_bytes: int | None
    threads_end: int
    startup_s: float
    startup_cpu_s: float
    rss_at_ready_bytes: int
    children_cpu_pct_of_one_core: float
    children_rss_peak_bytes: int
    host_processes_mean: float
    host_cpu_busy_pct: float
    loadavg_end: list[float]
    children: list[str] = field(default_factory=list)
    polls: int = 0


@dataclass
class Storage:
    """What the agent wrote, read from its database after it stopped."""

    samples_total: int
    samples_in_window: int
    samples_in_window_exact: bool
    series: int
    probe_runs: int
    probe_runs_ok: int
    events: int
    db_bytes: int
    db_bytes_with_wal: int
    samples_committed_logged: int | None


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _vm_hwm(pid: int) -> int | None:
    """The kernel's peak RSS of a process (VmHWM), which sampling cannot miss."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


@dataclass
class Subject:
    """A started process under measurement, ready (its start-up is over)."""

    name: str
    command: str
    popen: subprocess.Popen[bytes]
    proc: psutil.Process
    started: float
    startup_s: float = 0.0
    startup_cpu_s: float = 0.0
    rss_at_ready: int = 0
    exit_code: int | None = None

    def mark_ready(self) -> None:
        """Note the start-up cost, before the warm-up and the window."""
        self.startup_s = time.monotonic() - self.started
        self.startup_cpu_s = _cpu_s(self.proc)
        self.rss_at_ready = int(self.proc.memory_info().rss)


class Sampler:
    """Polls one process (and, separately, its children) over a measurement window."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        self.proc = subject.proc
        self.t0 = 0.0
        self.cpu0 = 0.0
        self.start_utc = ""
        self.rss: list[int] = []
        self.cpu_points: list[tuple[float, float]] = []
        self.child_cpu0: dict[int, float] = {}
        self.child_cpu_last: dict[int, float] = {}
        self.child_names: dict[int, str] = {}
        self.children_rss_peak = 0

    def begin(self) -> None:
        """Start the window: take the CPU baselines of the process and its children."""
        self.t0 = time.monotonic()
        self.start_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.cpu0 = _cpu_s(self.proc)
        self.cpu_points.append((self.t0, self.cpu0))
        for child in self._children():
            with contextlib.suppress(psutil.Error):
                cpu = _cpu_s(child)
                self.child_cpu0[child.pid] = cpu
                self.child_cpu_last[child.pid] = cpu
        self.poll()

    def _children(self) -> list[psutil.Process]:
        try:
            return self.proc.children(recursive=True)
        except psutil.Error:
            return []

    def poll(self) -> None:
        """Take one sample: RSS and CPU of the process, RSS and CPU of its children."""
        if not self.proc.is_running() or self.proc.status() == psutil.STATUS_ZOMBIE:
            raise BenchError(f"{self.subject.name} (pid {self.proc.pid}) exited during the window")
        with self.proc.oneshot():
            self.rss.append(int(self.proc.memory_info().rss))
            self.cpu_points.append((time.monotonic(), _cpu_s(self.proc)))
        children_rss = 0
        for child in self._children():
            try:
                with child.oneshot():
                    children_rss += int(child.memory_info().rss)
                    cpu = _cpu_s(child)
                    # A child born inside the window is charged from zero.
                    self.child_cpu0.setdefault(child.pid, 0.0)
                    self.child_cpu_last[child.pid] = cpu
                    self.child_names.setdefault(child.pid, " ".join(child.cmdline()))
            except psutil.Error:
                continue
        self.children_rss_peak = max(self.children_rss_peak, children_rss)

    def end(self, host: HostWindow) -> Usage:
        """Close the window (the process must still be running) and summarise it."""
        self.poll()
        t1, cpu1 = self.cpu_points[-1]
        wall = t1 - self.t0
        uss: int | None = None
        with contextlib.suppress(psutil.Error, AttributeError):
            uss = int(self.proc.memory_full_info().uss)
        busiest = 0.0
        for i, (ta, ca) in enumerate(self.cpu_points):
            for tb, cb in self.cpu_points[i + 1 :]:
                if tb - ta >= CPU_WINDOW_S:
                    busiest = max(busiest, 100.0 * (cb - ca) / (tb - ta))
                    break
        children_cpu = sum(self.child_cpu_last[p] - self.child_cpu0[p] for p in self.child_cpu_last)
        s = self.subject
        return Usage(
            name=s.name,
            command=s.command,
            pid=self.proc.pid,
            window_s=round(wall, 3),
            window_start_utc=self.start_utc,
            cpu_s=round(cpu1 - self.cpu0, 3),
            cpu_pct_of_one_core=round(100.0 * (cpu1 - self.cpu0) / wall, 3),
            cpu_pct_max_window=round(busiest, 3),
            rss_peak_bytes=max(self.rss),
            rss_mean_bytes=int(sum(self.rss) / len(self.rss)),
            rss_end_bytes=self.rss[-1],
            uss_end_bytes=uss,
            vm_hwm_bytes=_vm_hwm(self.proc.pid),
            threads_end=self.proc.num_threads(),
            startup_s=round(s.startup_s, 3),
            startup_cpu_s=round(s.startup_cpu_s, 3),
            rss_at_ready_bytes=s.rss_at_ready,
            children_cpu_pct_of_one_core=round(100.0 * children_cpu / wall, 3),
            children_rss_peak_bytes=self.children_rss_peak,
            host_processes_mean=round(host.processes_mean(), 1),
            host_cpu_busy_pct=round(host.cpu_busy_pct, 1),
            loadavg_end=host.loadavg_end,
            children=sorted(set(self.child_names.values())),
            polls=len(self.rss),
        )


class HostWindow:
    """What the host was doing over a window: process count, CPU busy %, load."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the baseline for the window's busy %
        self.processes: list[int] = []
        self.cpu_busy_pct = 0.0
        self.loadavg_end: list[float] = []
        self.start_ms = int(time.time() * 1000)
        self.end_ms = self.start_ms

    def poll(self) -> None:
        """Count the host's processes once."""
        self.processes.append(len(psutil.pids()))

    def close(self) -> None:
        """End the window."""
        self.cpu_busy_pct = psutil.cpu_percent(interval=None)
        self.loadavg_end = [round(x, 2) for x in os.getloadavg()]
        self.end_ms = int(time.time() * 1000)

    def processes_mean(self) -> float:
        """Mean number of processes on the host over the window."""
        return sum(self.processes) / len(self.processes) if self.processes else 0.0


def measure(
    subjects: Sequence[Subject], warmup_s: float, duration_s: float
) -> tuple[list[Usage], HostWindow]:
    """Warm up, then poll every subject every POLL_S for ``duration_s`` seconds, together."""
    time.sleep(warmup_s)
    samplers = [Sampler(s) for s in subjects]
    host = HostWindow()
    for sampler in samplers:
        sampler.begin()
    host.poll()
    t0 = min(s.t0 for s in samplers)
    deadline = t0 + duration_s
    next_poll = t0 + POLL_S
    while next_poll < deadline:
        time.sleep(max(0.0, next_poll - time.monotonic()))
        for sampler in samplers:
            sampler.poll()
        host.poll()
        next_poll += POLL_S
    time.sleep(max(0.0, deadline - time.monotonic()))
    host.close()
    return [sampler.end(host) for sampler in samplers], host


@contextlib.contextmanager
def launched(
    name: str,
    command: str,
    argv: list[str],
    log_path: Path,
    is_ready: Callable[[], bool],
    timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Iterator[Subject]:
    """Start a process, wait until ``is_ready()``, yield it; SIGTERM it on the way out."""
    started = time.monotonic()
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    subject = Subject(name, command, popen, psutil.Process(popen.pid), started)
    try:

        def ready() -> bool:
            if popen.poll() is not None:
                log = log_path.read_text(errors="replace")
                raise BenchError(f"{name} exited {popen.returncode}:\n{log}")
            return is_ready()

        wait_for(ready, timeout_s, f"{name} to be ready", poll_s=0.05)
        subject.mark_ready()
        yield subject
    finally:
        subject.exit_code = stop(popen)


@contextlib.contextmanager
def idle_processes(count: int) -> Iterator[None]:
    """``count`` idle ``sleep`` processes, not the agent's: a host with many processes.

    Collectors that scan every process on the host cost more on a busy host; this makes that
    visible on a quiet one (glances scans them all; the agent should not).
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen(["sleep", "86400"], stdin=subprocess.DEVNULL))
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


@contextlib.contextmanager
def demo_server(tmp: Path) -> Iterator[str]:
    """Run the bundled demo KServe V2 server on 127.0.0.1; yield its base URL."""
    argv = [sys.executable, "-m", "agent.demo.server", "--model", str(DEMO_MODEL)]
    argv += ["--name", "iris", "--host", "127.0.0.1", "--port", "0"]
    with open(tmp / "demo-server.log", "wb") as err:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=err,
            env=child_env(),
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode(errors="replace").strip()
        m = re.search(r"listening on (http://\S+)", line)
        if not m:
            log = (tmp / "demo-server.log").read_text(errors="replace")
            raise BenchError(f"demo server did not start (got {line!r}):\n{log}")
        yield m.group(1)
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def write_config(tmp: Path, interval: str, model_url: str | None) -> Path:
    """The agent's config: temp data dir, free port, a ``sleep`` child and the model."""
    data_dir = tmp / "data"
    # on_exit = "stop": the default ("keep") leaves the sleeper running for the next agent to
    # adopt, which a benchmark would leak, one per run.
    text = f"""
[agent]
host = "bench"
data_dir = {json.dumps(str(data_dir))}
listen = "127.0.0.1:0"
sample_interval = {json.dumps(interval)}
on_exit = "stop"

[[process]]
name = "sleeper"
command = ["sleep", "86400"]
"""
    if model_url is not None:
        text += f"""
[[model]]
name = "iris"
protocol = "kserve_v2"
url = {json.dumps(model_url)}
interval = "5s"
canary = {{ inputs = {CANARY_INPUTS} }}
"""
    path = tmp / "vigil.toml"
    path.write_text(text, encoding="utf-8")
    return path


def running_agent(tmp: Path, config: Path) -> contextlib.AbstractContextManager[Subject]:
    """The agent, ready once its API is bound (``api.json`` written)."""
    api_json = tmp / "data" / "api.json"

    def ready() -> bool:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return bool(json.loads(api_json.read_text())["url"])
        return False

    argv = [sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(config)]
    return launched(
        "vigil agent",
        "python -m agent.cli agent run --config vigil.toml",
        argv,
        tmp / "agent.log",
        ready,
        30.0,
        env=child_env(),
    )


def glances_argv(conf: Path, interval_s: float) -> list[str]:
    """The glances command line (after ``python -m glances``)."""
    return [
        "-C",
        str(conf),
        "--disable-check-update",
        "--stdout",
        "cpu.total,mem.percent",
        "-t",
        f"{interval_s:g}",
    ]


def running_glances(tmp: Path, interval_s: float) -> contextlib.AbstractContextManager[Subject]:
    """glances in stdout mode, ready once it printed its first values."""
    conf = tmp / "glances-empty.conf"
    conf.write_text("", encoding="utf-8")
    out = tmp / "glances.out"
    args = glances_argv(conf, interval_s)
    command = "glances " + " ".join(a if a != str(conf) else "EMPTY.conf" for a in args)
    return launched(
        "glances",
        command,
        [sys.executable, "-m", "glances", *args],
        out,
        # After its imports and first full update; with block-buffered stdout the first
        # flush may come a little later, which only lengthens the warm-up.
        lambda: out.exists() and out.stat().st_size > 0,
        60.0,
        cwd=tmp,
    )


def read_storage(data_dir: Path, start_ms: int, end_ms: int, agent_log: Path) -> Storage:
    """Count what the agent wrote (read-only; the agent has stopped and flushed).

    Raw samples are rows of ``samples`` in the original schema, or rows of ``samples_head``
    plus the counts of sealed ``sample_blocks`` since the tiered one (migration 0003). A block
    that straddles the window is counted pro rata, and then the window count is not exact.
    """
    db = data_dir / "vigil.db"
    if not db.exists():
        raise BenchError(f"no database at {db}")
    size = db.stat().st_size
    with_wal = size + sum(
        p.stat().st_size
        for p in (db.with_name(db.name + s) for s in ("-wal", "-shm"))
        if p.exists()
    )
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:

        def one(sql: str, *args: object) -> int:
            return int(conn.execute(sql, args).fetchone()[0] or 0)

        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        exact = True
        if "samples" in tables:
            total = one("SELECT count(*) FROM samples")
            in_window = one(
                "SELECT count(*) FROM samples WHERE ts BETWEEN ? AND ?", start_ms, end_ms
            )
        elif "samples_head" in tables:
            total = one("SELECT count(*) FROM samples_head")
            in_window = one(
                "SELECT count(*) FROM samples_head WHERE ts BETWEEN ? AND ?", start_ms, end_ms
            )
            if "sample_blocks" in tables:
                total += one("SELECT sum(n) FROM sample_blocks")
                for first, last, n in conn.execute(
                    "SELECT start_ts, end_ts, n FROM sample_blocks "
                    "WHERE end_ts >= ? AND start_ts <= ?",
                    (start_ms, end_ms),
                ):
                    if first >= start_ms and last <= end_ms:
                        in_window += n
                    else:
                        span = max(1, last - first)
                        overlap = min(last, end_ms) - max(first, start_ms)
                        in_window += round(n * max(0, overlap) / span)
                        exact = False
        else:
            raise BenchError(f"no samples table in {db} (tables: {sorted(tables)})")
        committed = None
        with contextlib.suppress(OSError):
            m = re.search(
                r"agent stopped .*?\bsamples=(\d+)", agent_log.read_text(errors="replace")
            )
            if m:
                committed = int(m.group(1))
        return Storage(
            samples_total=total,
            samples_in_window=in_window,
            samples_in_window_exact=exact,
            series=one("SELECT count(*) FROM series"),
            probe_runs=one("SELECT count(*) FROM probe_runs"),
            probe_runs_ok=one("SELECT count(*) FROM probe_runs WHERE ok"),
            events=one("SELECT count(*) FROM events"),
            db_bytes=size,
            db_bytes_with_wal=with_wal,
            samples_committed_logged=committed,
        )
    finally:
        conn.close()


def import_cost() -> dict[str, Any]:
    """What importing the daemon alone costs: modules loaded and the process's peak RSS, in a
    fresh interpreter (and a bare one for reference)."""
    code = (
        "import sys, re, json; n = len(sys.modules); {imp}; "
        "st = open('/proc/self/status').read(); "
        "print(json.dumps({{'modules': len(sys.modules), 'modules_at_start': n, "
        "'vm_hwm_bytes': int(re.search(r'VmHWM:\\s+(\\d+)', st).group(1)) * 1024}}))"
    )
    out: dict[str, Any] = {}
    for label, imp in (("interpreter", "pass"), ("daemon", "import agent.runtime.daemon")):
        proc = subprocess.run(
            [sys.executable, "-c", code.format(imp=imp)],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"importing the daemon failed:\n{proc.stderr}")
        out[label] = json.loads(proc.stdout)
    return out


def glances_available() -> bool:
    """Whether glances can be run with this interpreter."""
    return importlib.util.find_spec("glances") is not None


def parse_interval(text: str) -> float:
    """Seconds in ``1s``, ``500ms``, ``2m`` or a bare number of seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration such as 1s or 500ms, got {text!r}")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if value < 0.1:
        raise argparse.ArgumentTypeError("expected at least 100ms")
    return value


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / MB:.1f}"


def render(result: dict[str, Any]) -> str:
    """The human-readable summary."""
    rows: list[tuple[str, Usage]] = [("agent", Usage(**result["agent"]))]
    if result.get("glances"):
        rows.append(("glances", Usage(**result["glances"])))
    m = result["machine"]
    lines = [
        f"machine: {m['cpu_model']}, {m['cpus']} CPUs ({m['virtualization']}), "
        f"{m['ram_bytes'] / 2**30:.1f} GiB RAM, {m['os']}, kernel {m['kernel']}, "
        f"Python {m['python']}, psutil {m['psutil']}, glances {m['glances'] or 'not installed'}",
        f"run: {m['date_utc']}, git {m['git_commit']}"
        + (" (uncommitted changes)" if m["git_dirty"] else "")
        + f", load at start {m['loadavg_at_start']}, {m['host_processes_at_start']} processes",
        f"setup: {result['setup']}",
        "",
        f"{'':8} {'CPU %/core':>10} {'busiest 5s':>10} {'RSS peak MB':>11} {'VmHWM MB':>9} "
        f"{'USS MB':>7} {'threads':>7} {'start s':>7} {'children CPU%':>13} {'child RSS MB':>12}",
    ]
    for label, u in rows:
        lines.append(
            f"{label:8} {u.cpu_pct_of_one_core:>10.2f} {u.cpu_pct_max_window:>10.2f} "
            f"{_mb(u.rss_peak_bytes):>11} {_mb(u.vm_hwm_bytes):>9} {_mb(u.uss_end_bytes):>7} "
            f"{u.threads_end:>7} {u.startup_s:>7.1f} {u.children_cpu_pct_of_one_core:>13.2f} "
            f"{_mb(u.children_rss_peak_bytes):>12}"
        )
    lines.append("")
    for label, u in rows:
        lines.append(
            f"{label} window: {u.window_start_utc}, {u.window_s:.1f}s, {u.polls} polls; host "
            f"{u.host_processes_mean:.0f} processes, {u.host_cpu_busy_pct:.0f} % busy, "
            f"load at end {u.loadavg_end}"
        )
    s = Storage(**result["storage"])
    lines += [
        f"storage: {s.samples_total} samples ({s.samples_in_window} in the window"
        + ("" if s.samples_in_window_exact else ", approx.")
        + f"; {s.samples_committed_logged} committed per the agent's log), "
        f"{s.series} series, {s.probe_runs} probe runs ({s.probe_runs_ok} ok), {s.events} events, "
        f"db {s.db_bytes} bytes ({s.db_bytes_with_wal} with WAL/SHM)",
        f"agent exit code on SIGTERM: {result['agent_exit_code']}",
    ]
    imp = result.get("imports")
    if imp:
        d, i = imp["daemon"], imp["interpreter"]
        lines.append(
            f"imports: agent.runtime.daemon alone loads {d['modules']} modules, peak RSS "
            f"{_mb(d['vm_hwm_bytes'])} MB (the bare interpreter: {i['modules']} modules, "
            f"{_mb(i['vm_hwm_bytes'])} MB)"
        )
    if result.get("glances_skipped"):
        lines.append(f"glances: skipped ({result['glances_skipped']})")
    t = result["target"]
    cpu = "ok" if result["cpu_ok"] else "MISSED"
    rss = "ok" if result["rss_ok"] else "MISSED"
    lines.append(
        f"target: CPU <= {t['cpu_pct']} % of one core and peak RSS (max of sampled peak and "
        f"VmHWM) <= {t['rss_bytes'] / MB:.0f} MB"
        f" -> {'PASS' if result['pass'] else 'FAIL'} (cpu {cpu}, rss {rss})"
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/agent_overhead.py",
        description="Measure the Vigil agent's own CPU and RSS (<= 1%% of a core, <= 45 MB), "
        "and glances' in the same run.",
    )
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument(
        "--interval",
        default="1s",
        help="the agent's sample_interval and glances' -t, e.g. 1s (default 1s)",
    )
    p.add_argument("--warmup", type=float, default=5.0, help="seconds after start-up (default 5)")
    p.add_argument("--no-model", action="store_true", help="no [[model]] (and no demo server)")
    p.add_argument(
        "--extra-processes",
        type=int,
        default=0,
        metavar="N",
        help="start N idle processes first, to measure on a host with many processes",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument(
        "--compare-glances",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure glances (default: when it is importable)",
    )
    p.add_argument(
        "--glances-mode",
        choices=("concurrent", "sequential"),
        default="concurrent",
        help="measure glances over the same window as the agent (default), or after it",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the summary or JSON."""
    args = build_parser().parse_args(argv)
    interval_s = parse_interval(args.interval)
    compare = glances_available() if args.compare_glances is None else args.compare_glances
    if compare and not glances_available():
        print("glances is not importable with this interpreter (make bench-deps)", file=sys.stderr)
        return EXIT_ERROR
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    result: dict[str, Any] = {}
    glances: Usage | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(idle_processes(args.extra_processes))
            result["machine"] = machine(
                psutil=psutil.__version__,
                glances=version("glances"),
                host_processes_at_start=len(psutil.pids()),
            )
            url = None if args.no_model else stack.enter_context(demo_server(tmp))
            config = write_config(tmp, args.interval, url)
            mode = args.glances_mode if compare else "off"
            result["setup"] = (
                f"sample_interval={args.interval}, 1 process (sleep)"
                + ("" if url is None else ", 1 kserve_v2 model (demo iris, loopback) every 5s")
                + (f", {args.extra_processes} extra idle processes" if args.extra_processes else "")
                + f", warm-up {args.warmup:g}s, window {args.duration:g}s, poll {POLL_S}s"
                + f", glances {mode}"
            )
            with running_agent(tmp, config) as agent:
                if mode == "concurrent":
                    with running_glances(tmp, interval_s) as gl:
                        (usage, glances), host = measure([agent, gl], args.warmup, args.duration)
                else:
                    (usage,), host = measure([agent], args.warmup, args.duration)
            code = agent.exit_code
            storage = read_storage(tmp / "data", host.start_ms, host.end_ms, tmp / "agent.log")
            if mode == "sequential":
                with running_glances(tmp, interval_s) as gl:
                    (glances,), _ = measure([gl], args.warmup, args.duration)
    except BenchError as exc:
        print(f"benchmark failed: {exc}\n(files kept in {tmp})", file=sys.stderr)
        return EXIT_ERROR
    try:
        result["imports"] = import_cost()
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    result["agent"] = asdict(usage)
    result["storage"] = asdict(storage)
    result["agent_exit_code"] = code
    result["glances"] = None if glances is None else asdict(glances)
    if glances is None:
        result["glances_skipped"] = (
            "--no-compare-glances" if args.compare_glances is False else "not importable"
        )
    peak = max(usage.rss_peak_bytes, usage.vm_hwm_bytes or 0)
    cpu_ok = usage.cpu_pct_of_one_core <= TARGET_CPU_PCT
    rss_ok = peak <= TARGET_RSS_BYTES
    result["target"] = {"cpu_pct": TARGET_CPU_PCT, "rss_bytes": TARGET_RSS_BYTES}
    result.update(cpu_ok=cpu_ok, rss_ok=rss_ok, **{"pass": cpu_ok and rss_ok and code == 0})
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
    if code != 0:
        print(f"agent exited {code} on SIGTERM (expected 0)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK if result["pass"] else EXIT_MISSED


if __name__ == "__main__":
    sys.exit(main())
