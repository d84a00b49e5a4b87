"""Recorded outages against true ones: scripted faults of random length under a real agent.

Issue 13's truth check at scale. One ``vigil agent run`` watches ``--per-kind`` models of each
fault kind, every model on its own fake server on loopback, all probed over ``http`` every
``--interval`` with no jitter. Each model goes through ``--rounds`` faults one after another
(every model at once, so the whole run takes about ``rounds x 12 s``), each lasting a random
``--min-s``..``--max-s`` seconds, with a healthy pause of 2-4 s before it:

* **kill**: the server (not supervised) is SIGKILLed and started again on its port by the
  benchmark once the fault's length is over. True outage: kill -> the new server says it
  listens.
* **freeze**: SIGSTOP, then SIGCONT. The model's probe timeout is 800 ms, so two probes time out
  (down) within about 2 s. True outage: SIGSTOP -> SIGCONT.
* **slow**: the server (``tests/fakes/counting_server.py``) answers every request 600 ms late,
  over the canary's ``max_latency = "300ms"``; ``incident_after_degraded = "1s"``. True outage:
  the delay set -> the delay cleared.
* **crash**: a supervised ``[[process]]`` (``restart = "on-failure"``, ``backoff_reset =
  "2s"``: a crash after a healthy pause restarts at once) is SIGKILLed; the restarted server
  loads until the benchmark lets it listen (``--wait-file``), the fault's length after the
  kill. True outage: kill -> the new server accepts a connection (polled every 10 ms). Two
  incidents: the process's ``process_exited`` (exit -> ready) and the model's ``model_down``.

Every truth is read with ``time.time()``, the clock the agent stamps with; a signal's truth is
read just before sending it. After the last fault the agent is stopped and its database read:
each fault is matched with the incident of its subject that began within it. Per kind:
the true outage, the recorded one (``ttr_ms = resolved_ms - began_ms``) and their difference
(p50/max of the absolute error, and the signed mean), the start and end errors, MTTD (opened -
the true start, what an operator waits for; and opened - began, as the agent reports it) and
MTTR (the recorded ttr's mean). Faults with no incident are counted.

Target: every recorded outage within one probe interval + 100 ms of the truth (a fault is seen
by the next probe, at most one interval late, at either end).

Run by hand from the repo root: ``.venv/bin/python bench/kpi_truth.py [--json]``. Exit code: 0
target met, 1 missed, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from benchlib import ROOT, BenchError, machine, percentiles

from tests.helpers import RunningAgent, running_agent

EXIT_OK, EXIT_MISSED, EXIT_ERROR = 0, 1, 2
KINDS = ("kill", "freeze", "slow", "crash")
MANAGED = ROOT / "tests" / "fakes" / "managed_server.py"
COUNTING = ROOT / "tests" / "fakes" / "counting_server.py"
SLOW_DELAY_MS = 600.0
INCIDENT_KIND = {
    "kill": "model_down",
    "freeze": "model_down",
    "slow": "model_degraded",
    "crash": "model_down",
}


@dataclass
class Fault:
    """One injected fault and its truth (epoch seconds)."""

    kind: str
    model: str
    planned_s: float
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Measured:
    """A fault next to the incident recorded for it (None fields: no incident)."""

    fault: Fault
    subject: str
    incident_kind: str
    began_s: float | None = None
    opened_s: float | None = None
    resolved_s: float | None = None
    ttr_s: float | None = None

    @property
    def error_s(self) -> float | None:
        return None if self.ttr_s is None else self.ttr_s - self.fault.length_s


# --- servers -----------------------------------------------------------------------------


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
    """An unsupervised fake server; returns it and when it said it listens."""
    proc = subprocess.Popen(
        argv(script, *args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, time.time()
    proc.wait(5)
    raise BenchError(f"{script.name} {args} exited {proc.returncode} before listening")


def set_delay(port: int, delay_ms: float) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/_control",
        method="POST",
        data=json.dumps({"delay_ms": delay_ms}).encode(),
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def wait(predicate: Callable[[], object], timeout_s: float, what: str, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)


# --- the agent's view ----------------------------------------------------------------------


class Watch:
    """The agent's models, processes and open incidents, polled every 100 ms for everyone
    (one poller instead of one per model: the API is not what is measured here)."""

    def __init__(self, agent: RunningAgent) -> None:
        self.agent = agent
        self.models: dict[str, str] = {}
        self.processes: dict[str, dict[str, Any]] = {}
        self.open_subjects: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._poll()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        _, models = self.agent.get("/api/v1/models")
        _, procs = self.agent.get("/api/v1/processes")
        _, incs = self.agent.get("/api/v1/incidents?state=open&limit=1000")
        self.models = {m["name"]: m["state"] for m in models["models"]}
        self.processes = {p["name"]: p for p in procs["processes"]}
        self.open_subjects = {i["subject"] for i in incs["incidents"]}

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError, KeyError, TypeError):
                self._poll()

    def healthy(self, model: str, process: str | None) -> bool:
        subjects = {f"model:{model}"} | ({f"process:{process}"} if process else set())
        return (
            self.models.get(model) == "up"
            and not subjects & self.open_subjects
            and (process is None or self.processes.get(process, {}).get("state") == "running")
        )


# --- faults --------------------------------------------------------------------------------


@dataclass
class Target:
    """One model and what the benchmark holds of its server."""

    kind: str
    model: str
    port: int
    proc: subprocess.Popen[str] | None = None
    process: str | None = None
    go: Path | None = None


def inject(target: Target, length_s: float, agent_pid: Callable[[], int]) -> Fault:
    """Cause ``target``'s fault for ``length_s`` seconds; return its truth."""
    kind = target.kind
    if kind == "kill":
        assert target.proc is not None
        start = time.time()
        target.proc.kill()
        target.proc.wait(10)
        time.sleep(max(0.0, start + length_s - time.time()))
        target.proc, end = start_server(MANAGED, "--port", target.port)
    elif kind == "freeze":
        assert target.proc is not None
        start = time.time()
        target.proc.send_signal(signal.SIGSTOP)
        time.sleep(length_s)
        end = time.time()
        target.proc.send_signal(signal.SIGCONT)
    elif kind == "slow":
        start = time.time()
        set_delay(target.port, SLOW_DELAY_MS)
        time.sleep(max(0.0, start + length_s - time.time()))
        end = time.time()
        set_delay(target.port, 0)
    else:
        assert target.go is not None
        target.go.unlink()
        pid = agent_pid()
        start = time.time()
        os.kill(pid, signal.SIGKILL)
        time.sleep(length_s)
        target.go.touch()
        wait(lambda: listening(target.port), 30, f"{target.model} listening again", 0.01)
        end = time.time()
    return Fault(kind, target.model, length_s, start, end)


def config_body(targets: list[Target], interval_s: float) -> str:
    parts = []
    for t in targets:
        extra = ""
        timeout = "2s"
        if t.kind == "freeze":
            timeout = "800ms"
        if t.kind == "slow":
            extra = 'incident_after_degraded = "1s"\n[model.canary]\nmax_latency = "300ms"\n'
        if t.kind == "crash":
            assert t.go is not None and t.process is not None
            parts.append(
                f"""
[[process]]
name = "{t.process}"
command = {json.dumps(argv(MANAGED, "--port", t.port, "--wait-file", t.go))}
port = {t.port}
stop_timeout = "1s"
backoff_reset = "2s"
quarantine_after = 0
"""
            )
            extra = f'process = "{t.process}"\n'
        parts.append(
            f"""
[[model]]
name = "{t.model}"
protocol = "http"
url = "http://127.0.0.1:{t.port}/"
interval = "{interval_s:g}s"
timeout = "{timeout}"
jitter = "0s"
{extra}"""
        )
    return "".join(parts)


@contextlib.contextmanager
def unsupervised(targets: list[Target]) -> Iterator[None]:
    """Start the servers the agent does not supervise; kill them (thawed) at the end."""
    try:
        for t in targets:
            if t.kind in ("kill", "freeze"):
                t.proc = start_server(MANAGED, "--port", t.port)[0]
            elif t.kind == "slow":
                t.proc = start_server(COUNTING, "--port", t.port)[0]
        yield
    finally:
        for t in targets:
            if t.proc is not None and t.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    t.proc.send_signal(signal.SIGCONT)
                    t.proc.kill()
                t.proc.wait(10)


def run_faults(
    tmp: Path, per_kind: int, rounds: int, lo_s: float, hi_s: float, interval_s: float, seed: int
) -> tuple[list[Fault], Path]:
    """Run every model's faults under one agent; return the truths and the data dir."""
    rng = random.Random(seed)
    targets: list[Target] = []
    for kind in KINDS:
        for i in range(per_kind):
            t = Target(kind, f"{kind}-{i}", free_port())
            if kind == "crash":
                t.process, t.go = f"srv-{i}", tmp / f"srv-{i}.go"
                t.go.touch()
            targets.append(t)
    # Each model's plan, drawn up front so a seed repeats a run.
    plans = {
        t.model: [(rng.uniform(2, 4), rng.uniform(lo_s, hi_s)) for _ in range(rounds)]
        for t in targets
    }
    config = tmp / "vigil.toml"
    config.write_text(
        f"""
[agent]
host = "bench"
data_dir = {json.dumps(str(tmp / "data"))}
listen = "127.0.0.1:0"
sample_interval = "1s"
on_exit = "stop"
{config_body(targets, interval_s)}
""",
        encoding="utf-8",
    )
    faults: list[Fault] = []
    with (
        unsupervised(targets),
        running_agent(config, startup_timeout=30) as agent,
        Watch(agent) as watch,
    ):

        def one(t: Target) -> list[Fault]:
            done = []
            for pause_s, length_s in plans[t.model]:
                wait(lambda: watch.healthy(t.model, t.process), 60, f"{t.model} healthy", 0.05)
                time.sleep(pause_s)

                def pid() -> int:
                    found = watch.processes[t.process or ""]["pid"]
                    if not isinstance(found, int):
                        raise BenchError(f"{t.process} has no pid: {watch.processes}")
                    return found

                done.append(inject(t, length_s, pid))
            wait(lambda: watch.healthy(t.model, t.process), 60, f"{t.model} healthy", 0.05)
            return done

        with ThreadPoolExecutor(len(targets)) as pool:
            for found in pool.map(one, targets):
                faults.extend(found)
        if agent.stop() != 0:
            raise BenchError(f"agent exited {agent.proc.returncode}; log {agent.log_path}")
    return faults, tmp / "data"


# --- the record ----------------------------------------------------------------------------


def match(faults: list[Fault], data_dir: Path) -> tuple[list[Measured], list[str]]:
    """Each fault next to the incident of its subject (and kind) that began within it; and
    the incidents that match no fault (``subject kind``)."""
    conn = sqlite3.connect(f"file:{data_dir / 'vigil.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT id, subject, kind, began_ms, opened_ms, resolved_ms, ttr_ms FROM incidents"
        ).fetchall()
    finally:
        conn.close()
    out, used = [], set()
    for f in faults:
        subjects = [(f"model:{f.model}", INCIDENT_KIND[f.kind])]
        if f.kind == "crash":
            subjects.insert(0, (f"process:srv-{f.model.rsplit('-', 1)[1]}", "process_exited"))
        for subject, kind in subjects:
            m = Measured(f, subject, kind)
            for inc_id, subj, k, began, opened, resolved, ttr in rows:
                # A model's faults follow each other with healthy pauses between: the incident
                # that began during this one (or just before: a request already out) is ours.
                if subj == subject and k == kind and f.start_s - 0.5 <= began / 1000 <= f.end_s:
                    used.add(inc_id)
                    m.began_s, m.opened_s = began / 1000, opened / 1000
                    m.resolved_s = None if resolved is None else resolved / 1000
                    m.ttr_s = None if ttr is None else ttr / 1000
                    break
            out.append(m)
    return out, [f"{r[1]} {r[2]}" for r in rows if r[0] not in used]


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def summarize(measured: list[Measured], interval_s: float) -> list[dict[str, Any]]:
    """One row per fault kind and incident kind."""
    rows = []
    groups: dict[tuple[str, str], list[Measured]] = {}
    for m in measured:
        groups.setdefault((m.fault.kind, m.incident_kind), []).append(m)
    for (kind, inc_kind), ms in groups.items():
        got = [m for m in ms if m.ttr_s is not None]
        errors = [e for m in got if (e := m.error_s) is not None]
        rows.append(
            {
                "fault": kind,
                "incident": inc_kind,
                "faults": len(ms),
                "recorded": len(got),
                "truth_s": percentiles([m.fault.length_s for m in ms], (50,), 3),
                "ttr_s": percentiles([m.ttr_s for m in got if m.ttr_s is not None], (50,), 3),
                "abs_error_s": percentiles([abs(e) for e in errors], (50,), 3),
                "mean_error_s": _mean(errors),
                "began_error_s": percentiles(
                    [m.began_s - m.fault.start_s for m in got if m.began_s is not None], (50,), 3
                ),
                "resolved_error_s": percentiles(
                    [m.resolved_s - m.fault.end_s for m in got if m.resolved_s is not None],
                    (50,),
                    3,
                ),
                # Time to detect as an operator lives it (from the fault itself), and as the
                # agent reports it (from the first failed request).
                "mttd_s": _mean(
                    [m.opened_s - m.fault.start_s for m in got if m.opened_s is not None]
                ),
                "mttd_recorded_s": _mean(
                    [
                        m.opened_s - m.began_s
                        for m in got
                        if m.opened_s is not None and m.began_s is not None
                    ]
                ),
                "mttr_s": _mean([m.ttr_s for m in got if m.ttr_s is not None]),
                "within_target": len(got) == len(ms)
                and all(abs(e) <= interval_s + 0.1 for e in errors),
            }
        )
    return rows


def render(result: dict[str, Any]) -> str:
    """The summary: a Markdown table, as RESULTS.md shows it."""
    m = result["machine"]
    lines = [
        f"machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['os']}, kernel {m['kernel']}, "
        f"Python {m['python']}, load at start {m['loadavg_at_start']}, tree {m['git_commit']}"
        + (" (dirty)" if m["git_dirty"] else ""),
        f"command: {result['command']}",
        f"faults: {result['settings']}; took {result['took_s']:.0f}s",
        "",
        "| Fault | Incident | n (recorded) | True outage p50 | Recorded p50 | Abs. error "
        "p50 / max | Mean error | Start error p50 / max | End error p50 / max | MTTD from "
        "fault (recorded) | MTTR |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if not r["recorded"]:
            lines.append(f"| {r['fault']} | {r['incident']} | {r['faults']} (0) | | | | | | | | |")
            continue
        lines.append(
            f"| {r['fault']} | {r['incident']} | {r['faults']} ({r['recorded']}) | "
            f"{r['truth_s']['p50']:.2f} s | {r['ttr_s']['p50']:.2f} s | "
            f"{r['abs_error_s']['p50']:.3f} / {r['abs_error_s']['max']:.3f} s | "
            f"{r['mean_error_s']:+.3f} s | "
            f"{r['began_error_s']['p50']:+.3f} / {r['began_error_s']['max']:+.3f} s | "
            f"{r['resolved_error_s']['p50']:+.3f} / {r['resolved_error_s']['max']:+.3f} s | "
            f"{r['mttd_s']:.2f} s ({r['mttd_recorded_s']:.2f} s) | {r['mttr_s']:.2f} s |"
        )
    if result["unexpected"]:
        lines.append(f"\nincidents matching no fault: {result['unexpected']}")
    lines.append(
        f"\ntarget: every recorded outage within {result['settings']['interval_s']:g} s + 100 ms "
        "of the truth, every fault recorded -> " + ("PASS" if result["target_met"] else "FAIL")
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/kpi_truth.py",
        description="Recorded outages, MTTD and MTTR against injected faults (issue 13).",
    )
    p.add_argument("--per-kind", type=int, default=5, help="models per fault kind (default 5)")
    p.add_argument("--rounds", type=int, default=4, help="faults per model (default 4)")
    p.add_argument("--min-s", type=float, default=3.0, help="shortest fault (default 3)")
    p.add_argument("--max-s", type=float, default=8.0, help="longest fault (default 8)")
    p.add_argument("--interval", type=float, default=1.0, help="probe interval s (default 1)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    return p


def main(argv_: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the summary or JSON."""
    args = build_parser().parse_args(argv_)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-kpi-"))
    result: dict[str, Any] = {
        "machine": machine(),
        "command": "bench/kpi_truth.py " + " ".join(argv_ if argv_ is not None else sys.argv[1:]),
        "settings": {
            "per_kind": args.per_kind,
            "rounds": args.rounds,
            "length_s": [args.min_s, args.max_s],
            "interval_s": args.interval,
            "seed": args.seed,
        },
    }
    t0 = time.monotonic()
    try:
        faults, data_dir = run_faults(
            tmp, args.per_kind, args.rounds, args.min_s, args.max_s, args.interval, args.seed
        )
        measured, unexpected = match(faults, data_dir)
    except (BenchError, AssertionError) as exc:
        print(f"benchmark failed: {exc}\n(files kept in {tmp})", file=sys.stderr)
        return EXIT_ERROR
    result["took_s"] = time.monotonic() - t0
    result["rows"] = summarize(measured, args.interval)
    result["unexpected"] = unexpected
    result["target_met"] = (
        all(r["within_target"] for r in result["rows"]) and not result["unexpected"]
    )
    result["faults"] = [
        {**asdict(m.fault), **{k: v for k, v in asdict(m).items() if k != "fault"}}
        for m in measured
    ]
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
    return EXIT_OK if result["target_met"] else EXIT_MISSED


if __name__ == "__main__":
    sys.exit(main())
