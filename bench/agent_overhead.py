"""Measure the agent's own overhead: CPU (% of one core) and peak RSS at 1 s host sampling.

Issue 2's budget: the agent costs at most 1 % of one core and 80 MB of RSS on a realistic small
setup. This starts a real agent (``python -m agent.cli agent run``) with a temporary data dir,
one supervised ``sleep`` child and, unless ``--no-model``, one kserve_v2 model probing the
bundled demo model every 5 s (the demo server is started here first). After the API is up and
a warm-up (so interpreter start-up and imports are not counted) it samples the agent process
with psutil every 0.5 s for ``--duration`` seconds:

* CPU: (user + system) CPU seconds of the agent process itself over the window / wall time.
* RSS: the peak of the samples, plus the kernel's VmHWM (lifetime peak, start-up included)
  and USS at the end.

Children (the supervised ``sleep``) are reported separately, for context. At the end the agent
is stopped with SIGTERM (it must exit 0) and its database is read (read-only) for the number
of samples, series and probe runs written and its size on disk.

For comparison, when glances is importable, the same measurement is made of
``glances --stdout cpu.total,mem.percent -t INTERVAL`` after the agent's run (not at the same
time, so neither disturbs the other).

Run by hand from the repo root: ``.venv/bin/python bench/agent_overhead.py [--json]``.
Exit code: 0 within the target, 1 target missed, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000  # the issue says "80 MB"; read as 10^6 bytes, the stricter reading
TARGET_CPU_PCT = 1.0
TARGET_RSS_BYTES = 80 * MB
POLL_S = 0.5
CPU_WINDOW_S = 5.0  # the busiest-window figure; cpu_times ticks are 10 ms, too coarse per poll
DEMO_MODEL = ROOT / "agent" / "demo" / "model.onnx"
CANARY_INPUTS = '[{name = "input", shape = [1, 4], datatype = "FP32", data = [5.1, 3.5, 1.4, 0.2]}]'
EXIT_OK, EXIT_MISSED, EXIT_ERROR = 0, 1, 2


class BenchError(Exception):
    """The benchmark could not run (not a target miss)."""


@dataclass
class Usage:
    """What one measured process cost over the window."""

    name: str
    command: str
    pid: int
    window_s: float
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
    children: list[str] = field(default_factory=list)
    polls: int = 0


@dataclass
class Storage:
    """What the agent wrote, read from its database after it stopped."""

    samples_total: int
    samples_in_window: int
    series: int
    probe_runs: int
    probe_runs_ok: int
    events: int
    db_bytes: int
    db_bytes_with_wal: int


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


class Sampler:
    """Polls one process (and, separately, its children) over a measurement window."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.t0 = 0.0
        self.cpu0 = 0.0
        self.rss: list[int] = []
        self.cpu_points: list[tuple[float, float]] = []
        self.child_cpu0: dict[int, float] = {}
        self.child_cpu_last: dict[int, float] = {}
        self.child_names: dict[int, str] = {}
        self.children_rss_peak = 0

    def begin(self) -> None:
        """Start the window: take the CPU baselines of the process and its children."""
        self.t0 = time.monotonic()
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
            raise BenchError(f"pid {self.proc.pid} exited during the measurement")
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

    def end(
        self,
        name: str,
        command: str,
        startup_s: float,
        startup_cpu_s: float,
        rss_at_ready: int,
    ) -> Usage:
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
        return Usage(
            name=name,
            command=command,
            pid=self.proc.pid,
            window_s=round(wall, 3),
            cpu_s=round(cpu1 - self.cpu0, 3),
            cpu_pct_of_one_core=round(100.0 * (cpu1 - self.cpu0) / wall, 3),
            cpu_pct_max_window=round(busiest, 3),
            rss_peak_bytes=max(self.rss),
            rss_mean_bytes=int(sum(self.rss) / len(self.rss)),
            rss_end_bytes=self.rss[-1],
            uss_end_bytes=uss,
            vm_hwm_bytes=_vm_hwm(self.proc.pid),
            threads_end=self.proc.num_threads(),
            startup_s=round(startup_s, 3),
            startup_cpu_s=round(startup_cpu_s, 3),
            rss_at_ready_bytes=rss_at_ready,
            children_cpu_pct_of_one_core=round(100.0 * children_cpu / wall, 3),
            children_rss_peak_bytes=self.children_rss_peak,
            children=sorted(set(self.child_names.values())),
            polls=len(self.rss),
        )


def measure(
    proc: psutil.Process,
    name: str,
    command: str,
    started: float,
    warmup_s: float,
    duration_s: float,
) -> Usage:
    """Warm up, then poll ``proc`` every POLL_S for ``duration_s`` seconds."""
    startup_s = time.monotonic() - started
    startup_cpu = _cpu_s(proc)
    rss_ready = int(proc.memory_info().rss)
    time.sleep(warmup_s)
    sampler = Sampler(proc)
    sampler.begin()
    deadline = sampler.t0 + duration_s
    next_poll = sampler.t0 + POLL_S
    while next_poll < deadline:
        time.sleep(max(0.0, next_poll - time.monotonic()))
        sampler.poll()
        next_poll += POLL_S
    time.sleep(max(0.0, deadline - time.monotonic()))
    return sampler.end(name, command, startup_s, startup_cpu, rss_ready)


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    """Poll ``predicate`` until truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def child_env() -> dict[str, str]:
    """Environment for child Python processes: import Vigil from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM a child and return its exit code (SIGKILL if it will not go)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise BenchError(f"pid {proc.pid} ignored SIGTERM for {timeout_s:.0f}s") from None


@contextlib.contextmanager
def demo_server(tmp: Path) -> Iterator[str]:
    """Run the bundled demo KServe V2 server; yield its base URL."""
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
    text = f"""
[agent]
host = "bench"
data_dir = {json.dumps(str(data_dir))}
listen = "127.0.0.1:0"
sample_interval = {json.dumps(interval)}

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


def run_agent(
    tmp: Path, config: Path, warmup_s: float, duration_s: float
) -> tuple[Usage, Storage, int]:
    """Start the agent, measure it, stop it; return its usage, its storage and exit code."""
    data_dir = tmp / "data"
    argv = [sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(config)]
    log_path = tmp / "agent.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=ROOT,
            start_new_session=True,
        )
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
        window_start_ms = int(time.time() * 1000) + int(warmup_s * 1000)
        usage = measure(
            psutil.Process(proc.pid),
            "vigil agent",
            "python -m agent.cli agent run",
            started,
            warmup_s,
            duration_s,
        )
        window_end_ms = int(time.time() * 1000)
    except BaseException:
        with contextlib.suppress(BenchError):
            stop(proc)
        raise
    code = stop(proc)
    return usage, read_storage(data_dir, window_start_ms, window_end_ms), code


def read_storage(data_dir: Path, start_ms: int, end_ms: int) -> Storage:
    """Count what the agent wrote (read-only; the agent has stopped and flushed)."""
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
            return int(conn.execute(sql, args).fetchone()[0])

        return Storage(
            samples_total=one("SELECT count(*) FROM samples"),
            samples_in_window=one(
                "SELECT count(*) FROM samples WHERE ts BETWEEN ? AND ?", start_ms, end_ms
            ),
            series=one("SELECT count(*) FROM series"),
            probe_runs=one("SELECT count(*) FROM probe_runs"),
            probe_runs_ok=one("SELECT count(*) FROM probe_runs WHERE ok"),
            events=one("SELECT count(*) FROM events"),
            db_bytes=size,
            db_bytes_with_wal=with_wal,
        )
    finally:
        conn.close()


def glances_available() -> bool:
    """Whether glances can be run with this interpreter."""
    return importlib.util.find_spec("glances") is not None


def run_glances(tmp: Path, interval_s: float, warmup_s: float, duration_s: float) -> Usage:
    """Measure ``glances --stdout cpu.total,mem.percent`` the same way as the agent."""
    argv = [sys.executable, "-m", "glances", "--stdout", "cpu.total,mem.percent"]
    argv += ["-t", f"{interval_s:g}"]
    out_path = tmp / "glances.out"
    started = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True
        )
    try:
        # Ready once it has printed its first line (imports and first update are done).
        def ready() -> bool:
            if proc.poll() is not None:
                raise BenchError(
                    f"glances exited {proc.returncode}:\n{out_path.read_text(errors='replace')}"
                )
            return out_path.stat().st_size > 0

        wait_for(ready, 60.0, "glances' first output")
        command = f"glances --stdout cpu.total,mem.percent -t {interval_s:g}"
        return measure(psutil.Process(proc.pid), "glances", command, started, warmup_s, duration_s)
    finally:
        with contextlib.suppress(BenchError):
            stop(proc)


def parse_interval(text: str) -> float:
    """Seconds in ``1s``, ``500ms``, ``2m`` or a bare number of seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration such as 1s or 500ms, got {text!r}")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if value < 0.1:
        raise argparse.ArgumentTypeError("expected at least 100ms")
    return value


def machine() -> dict[str, Any]:
    """Where the numbers were taken."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', Path("/etc/os-release").read_text(), re.M)
        if m:
            os_name = m.group(1)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_bytes": psutil.virtual_memory().total,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "psutil": psutil.__version__,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / MB:.1f}"


def render(result: dict[str, Any]) -> str:
    """The human-readable summary."""
    rows: list[tuple[str, Usage]] = [("agent", Usage(**result["agent"]))]
    if result.get("glances"):
        rows.append(("glances", Usage(**result["glances"])))
    m = result["machine"]
    lines = [
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB, "
        f"{m['os']}, Python {m['python']}, load {m['loadavg_at_start']}",
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
    s = Storage(**result["storage"])
    lines += [
        "",
        f"storage: {s.samples_total} samples ({s.samples_in_window} in the window), "
        f"{s.series} series, {s.probe_runs} probe runs ({s.probe_runs_ok} ok), {s.events} events, "
        f"db {s.db_bytes} bytes ({s.db_bytes_with_wal} with WAL/SHM)",
        f"agent exit code on SIGTERM: {result['agent_exit_code']}",
    ]
    if result.get("glances_skipped"):
        lines.append(f"glances: skipped ({result['glances_skipped']})")
    t = result["target"]
    cpu = "ok" if result["cpu_ok"] else "MISSED"
    rss = "ok" if result["rss_ok"] else "MISSED"
    lines.append(
        f"target: CPU <= {t['cpu_pct']} % of one core and peak RSS <= {t['rss_bytes'] / MB:.0f} MB"
        f" -> {'PASS' if result['pass'] else 'FAIL'} (cpu {cpu}, rss {rss})"
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/agent_overhead.py",
        description="Measure the Vigil agent's own CPU and RSS (issue 2: <= 1%% of a core, "
        "<= 80 MB).",
    )
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument(
        "--interval", default="1s", help="the agent's sample_interval, e.g. 1s (default 1s)"
    )
    p.add_argument(
        "--warmup", type=float, default=5.0, help="seconds after the API is up (default 5)"
    )
    p.add_argument("--no-model", action="store_true", help="no [[model]] (and no demo server)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument(
        "--compare-glances",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure glances (default: when it is importable)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the summary or JSON."""
    args = build_parser().parse_args(argv)
    interval_s = parse_interval(args.interval)
    compare = glances_available() if args.compare_glances is None else args.compare_glances
    if compare and not glances_available():
        print("glances is not importable with this interpreter", file=sys.stderr)
        return EXIT_ERROR
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    result: dict[str, Any] = {"machine": machine()}
    try:
        with contextlib.ExitStack() as stack:
            url = None if args.no_model else stack.enter_context(demo_server(tmp))
            config = write_config(tmp, args.interval, url)
            result["setup"] = (
                f"sample_interval={args.interval}, 1 process (sleep)"
                + ("" if url is None else ", 1 kserve_v2 model (demo iris) every 5s")
                + f", warm-up {args.warmup:g}s, window {args.duration:g}s, poll {POLL_S}s"
            )
            usage, storage, code = run_agent(tmp, config, args.warmup, args.duration)
        result["agent"] = asdict(usage)
        result["storage"] = asdict(storage)
        result["agent_exit_code"] = code
        if compare:
            result["glances"] = asdict(run_glances(tmp, interval_s, args.warmup, args.duration))
        else:
            result["glances"] = None
            result["glances_skipped"] = (
                "--no-compare-glances" if args.compare_glances is False else "not importable"
            )
    except BenchError as exc:
        print(f"benchmark failed: {exc}\n(files kept in {tmp})", file=sys.stderr)
        return EXIT_ERROR
    cpu_ok = usage.cpu_pct_of_one_core <= TARGET_CPU_PCT
    rss_ok = usage.rss_peak_bytes <= TARGET_RSS_BYTES
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
