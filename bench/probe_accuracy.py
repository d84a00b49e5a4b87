"""Measure the streaming probes' timing accuracy, their CPU cost and the agent's schedule drift.

Issue 3 asks for three numbers, all taken here over loopback only:

1. **TTFT and ITL error.** A fake LLM server (``tests/fakes/llm_server.py``) runs in its own
   process, injecting a TTFT (default 50 ms) and a per-token delay (default 20 ms). The
   openai (SSE), ollama (NDJSON) and tgi probes run in this process, exactly as the agent runs
   them (``PROBES[protocol](target).run(session)``, one shared ``HttpClient``),
   ``--requests`` (200) of ``--tokens`` (16) each, one at a time: with several at a time on a
   small host the fake server's own dispatch of a new request slows down (request leg p50
   0.6 / 1.1 / 2.0 ms at 1 / 2 / 4 at a time on 2 vCPUs), which would count as probe error.
   The server records, with ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, comparable across
   processes on Linux), when each request reached its handler and when it was about to write
   each content token (and when that write returned); the probe's own timer (request sent,
   each content arrival) is captured by wrapping ``GenerationRun.start_timer``. Requests are
   matched through a per-request API key (the server records the ``Authorization`` header).

   The reference ("true" value) is the server's: true TTFT = first token about to be written
   - request received by the handler, true gap i = token i about to be written - token i-1
   about to be written. error = measured - true, so the error is everything the probe adds:
   the request's way in (client serialisation, loopback, the server's HTTP parsing) and the
   token's way out (the write, loopback, the client's event loop waking, the timestamp). The
   before-write stamp is the conservative choice: the after-write stamp can come after the
   client has already run (a loopback wake-up may preempt the writer), which would hide part
   of the way out; errors against it are in the JSON. The error against the *injected* delays
   is shown as well; it also contains the fake's own lateness (``asyncio.sleep`` overshoot,
   building the response), which is not the probe's. Target: p99 of |error| <= 2 ms against
   the server's truth, for TTFT and for every ITL gap.

2. **CPU per streamed request.** The same probes against 256-token answers with TTFT 0 and
   ITL 1 ms (so every token arrives in its own read, the probe's worst case), sequentially;
   CPU time of this process (``getrusage(RUSAGE_SELF)``, user + system) / requests. Only the
   streamed request is counted: the side requests (``/v1/models``, ``/api/tags``,
   ``/health``) are switched off. ITL 0 (tokens coalesced into fewer reads) is shown too, and
   so is the floor: the same request read bare with the client (``chunks()``, no parsing),
   what any asyncio client pays; the probe's cost above it is Vigil's own.

3. **Schedule drift.** A real agent (``python -m agent.cli agent run``) with 200 ``[[model]]``
   entries (openai, streamed, 16 tokens at 50 ms / 20 ms) spread over several fake server
   processes, ``interval = "5s"``, ``jitter = "0s"``, for ``--drift-duration`` seconds. The
   agent is started through a small launcher that adds an APScheduler listener recording each
   job's *scheduled* run time (nothing else changes); the *actual* start is the probe run's
   ``ts`` in the agent's SQLite database (``now_ms()`` when the probe run began, 1 ms
   resolution). drift = actual - scheduled. The first round (at start-up) is shown
   separately; the target (< 100 ms at p99 and max) applies to the rounds after it. The TTFT
   the agent measured under that load is shown as well.

Every part also records how busy the whole host was meanwhile (all CPUs, whoever used them)
and the load average: a process cannot stamp an arrival while it waits for a CPU, and on a
busy host with a 4 ms tick (HZ=250) that wait alone reaches several milliseconds, so the
timing tails are only as good as the host was quiet.

Run by hand from the repo root: ``.venv/bin/python bench/probe_accuracy.py [--json]``.
Exit code: 0 all targets met, 1 a target missed, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import psutil
from benchlib import ROOT, BenchError, child_env, machine, percentiles, stop

from probes.base import ProbeTarget
from probes.httpclient import HttpClient
from probes.registry import PROBES
from probes.streaming import GenerationRun, StreamTimer

PROTOCOLS = ("openai", "ollama", "tgi")
SIDE_CHECKS = {"openai": "check_models", "ollama": "check_tags", "tgi": "check_health"}
MODEL = "fake-llm"
TARGET_ERROR_P99_MS = 2.0
TARGET_DRIFT_MS = 100.0
EXIT_OK, EXIT_MISSED, EXIT_ERROR = 0, 1, 2

# The agent, started with one APScheduler listener that records every probe job's scheduled
# run time (and skipped or missed runs), written as JSON when the agent exits.
AGENT_LAUNCHER = """
import atexit, json, os, sys
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED
import agent.runtime.schedule
from agent.cli import main

records = []
_start = agent.runtime.schedule.Scheduler.start

def _listen(event):
    if event.job_id.startswith("probe:"):
        times = getattr(event, "scheduled_run_times", None) or [event.scheduled_run_time]
        records.append([event.code, event.job_id[6:], [t.timestamp() for t in times]])

def start(self):
    self._sched.add_listener(
        _listen, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED
    )
    _start(self)

def _dump():
    with open(os.environ["VIGIL_BENCH_SCHEDULE_OUT"], "w") as f:
        json.dump({"submitted": EVENT_JOB_SUBMITTED, "records": records}, f)

agent.runtime.schedule.Scheduler.start = start
atexit.register(_dump)
sys.exit(main(["agent", "run", "--config", sys.argv[1]]))
"""


_SERVER_SEQ = itertools.count()


# --- statistics --------------------------------------------------------------------------


@dataclass
class Dist:
    """Percentiles of a sample of values, in milliseconds."""

    n: int
    p50: float
    p99: float
    max: float
    mean: float
    min: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Dist:
        """Summarise ``values`` (rounded to the microsecond)."""
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        p = percentiles(values, qs=(50, 99), digits=3)
        return cls(len(values), p["p50"], p["p99"], p["max"], p["mean"], p["min"])


@contextlib.contextmanager
def host_load(into: dict[str, Any]) -> Iterator[None]:
    """Record how busy the whole host was meanwhile: other work skews timings on a shared box.

    ``host_busy_pct`` is the busy share of all CPUs (100 = every CPU busy), whoever used them,
    this benchmark and its servers included; ``steal_pct`` is time the hypervisor took.
    """
    t0 = psutil.cpu_times()
    load0 = os.getloadavg()[0]
    try:
        yield
    finally:
        t1 = psutil.cpu_times()
        total = sum(t1) - sum(t0)
        idle = (t1.idle - t0.idle) + (getattr(t1, "iowait", 0) - getattr(t0, "iowait", 0))
        steal = getattr(t1, "steal", 0) - getattr(t0, "steal", 0)
        into["host"] = {
            "busy_pct": round(100 * (total - idle) / total, 1) if total > 0 else None,
            "steal_pct": round(100 * steal / total, 1) if total > 0 else None,
            "loadavg_1m_start": round(load0, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        }


# --- processes ---------------------------------------------------------------------------


@contextlib.contextmanager
def fake_servers(tmp: Path, count: int, *extra: str) -> Iterator[list[str]]:
    """Start ``count`` fake LLM server processes on loopback; yield their base URLs."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for i in range(count):
            log_path = tmp / f"fake-llm-{next(_SERVER_SEQ)}.log"
            argv = [sys.executable, "-m", "tests.fakes.llm_server", "--port", "0", *extra]
            with open(log_path, "wb") as err:
                proc = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=child_env(),
                    cwd=ROOT,
                    start_new_session=True,
                )
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline().decode(errors="replace").strip()
            m = re.search(r"listening on (http://\S+)", line)
            if not m:
                raise BenchError(
                    f"fake LLM server {i} did not start (got {line!r}):\n"
                    + log_path.read_text(errors="replace")
                )
            urls.append(m.group(1))
        yield urls
    finally:
        for proc in procs:
            with contextlib.suppress(BenchError):
                stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()


async def control(session: HttpClient, url: str, **changes: Any) -> None:
    """Change the fake's behaviour (``reset=True`` also clears its record)."""
    async with session.post(f"{url}/_control", json=changes) as resp:
        if resp.status != 200:
            raise BenchError(f"fake server refused {changes}: {await resp.text()}")


async def served(session: HttpClient, url: str) -> list[dict[str, Any]]:
    """What the fake recorded: one dict per generation request."""
    async with session.get(f"{url}/_stats") as resp:
        body = json.loads(await resp.read())
    return list(body["served"])


# --- 1 and 2: the probes in this process -------------------------------------------------


@contextlib.contextmanager
def captured_timers() -> Iterator[dict[str, StreamTimer]]:
    """Keep each run's StreamTimer, keyed by the run's API key (one key per request)."""
    timers: dict[str, StreamTimer] = {}
    original = GenerationRun.start_timer

    def start_timer(self: GenerationRun) -> StreamTimer:
        timer = original(self)
        timers[self.target.api_key or ""] = timer
        return timer

    GenerationRun.start_timer = start_timer  # type: ignore[method-assign]
    try:
        yield timers
    finally:
        GenerationRun.start_timer = original  # type: ignore[method-assign]


def _target(url: str, key: str, tokens: int, side_checks: bool, protocol: str) -> ProbeTarget:
    options: dict[str, Any] = {"model": MODEL, "max_tokens": tokens}
    if not side_checks:
        options[SIDE_CHECKS[protocol]] = False
    return ProbeTarget(name=MODEL, url=url, timeout_s=30.0, options=options, api_key=key)


async def _probe_many(
    session: HttpClient,
    url: str,
    protocol: str,
    n: int,
    tokens: int,
    concurrency: int,
    prefix: str,
    side_checks: bool = True,
) -> dict[str, Any]:
    """Run ``n`` probe runs, ``concurrency`` at a time; return {key: ProbeRun}."""
    sem = asyncio.Semaphore(concurrency)
    runs: dict[str, Any] = {}

    async def one(i: int) -> None:
        key = f"{prefix}-{i:05d}"
        async with sem:
            probe = PROBES[protocol](_target(url, key, tokens, side_checks, protocol))
            runs[key] = await probe.run(session)

    await asyncio.gather(*(one(i) for i in range(n)))
    bad = [r for r in runs.values() if not r.ok]
    if bad:
        raise BenchError(f"{protocol}: {len(bad)} of {n} probe runs failed, e.g. {bad[0].error}")
    return runs


async def accuracy_one(
    url: str, protocol: str, n: int, tokens: int, ttft_ms: float, itl_ms: float, concurrency: int
) -> dict[str, Any]:
    """TTFT and ITL errors of one protocol's probe against the fake server's own timestamps."""
    async with HttpClient() as session:
        await control(session, url, reset=True, ttft_ms=ttft_ms, itl_ms=itl_ms, tokens=tokens)
        with captured_timers() as timers:
            await _probe_many(session, url, protocol, 5, tokens, 1, "warmup")
            await control(session, url, reset=True)
            load: dict[str, Any] = {}
            with host_load(load):
                runs = await _probe_many(session, url, protocol, n, tokens, concurrency, "req")
        records = await served(session, url)
    by_key = {r["headers"].get("Authorization", "").removeprefix("Bearer "): r for r in records}
    ttft_err: list[float] = []  # measured - server truth (token about to be written)
    ttft_err_inj: list[float] = []  # measured - injected delay
    ttft_err_after: list[float] = []  # measured - server's after-write stamp
    gap_err: list[float] = []
    gap_err_inj: list[float] = []
    gap_err_after: list[float] = []
    leg_in: list[float] = []
    leg_out: list[float] = []
    run_vs_timer: list[float] = []
    coalesced = 0
    for key, run in runs.items():
        timer, rec = timers.get(key), by_key.get(key)
        if timer is None or rec is None:
            raise BenchError(f"{protocol}: request {key} not seen on both sides")
        got, sent, after = timer.content_ns, rec["write_ns"], rec["sent_ns"]
        if len(got) != len(sent) or len(got) != tokens:
            raise BenchError(
                f"{protocol}: {key}: {len(got)} content units measured, "
                f"{len(sent)} tokens sent, {tokens} expected"
            )
        measured_ttft = (got[0] - timer.start_ns) / 1e6
        true_ttft = (sent[0] - rec["start_ns"]) / 1e6
        ttft_err.append(measured_ttft - true_ttft)
        ttft_err_inj.append(measured_ttft - ttft_ms)
        ttft_err_after.append(measured_ttft - (after[0] - rec["start_ns"]) / 1e6)
        leg_in.append((rec["start_ns"] - timer.start_ns) / 1e6)
        leg_out.append((got[0] - sent[0]) / 1e6)
        run_vs_timer.append(abs((run.ttft_ms or math.nan) - measured_ttft))
        for (a, b), (sa, sb) in zip(itertools.pairwise(got), itertools.pairwise(sent), strict=True):
            gap_err.append((b - a - (sb - sa)) / 1e6)
            gap_err_inj.append((b - a) / 1e6 - itl_ms)
            coalesced += a == b
        for (a, b), (sa, sb) in zip(
            itertools.pairwise(got), itertools.pairwise(after), strict=True
        ):
            gap_err_after.append((b - a - (sb - sa)) / 1e6)
    if max(run_vs_timer) > 1e-6:
        raise BenchError(f"{protocol}: ProbeRun.ttft_ms differs from the captured timer")
    return {
        "protocol": protocol,
        "requests": n,
        "tokens": tokens,
        "concurrency": concurrency,
        "ttft_abs_error": asdict(Dist.of([abs(x) for x in ttft_err])),
        "ttft_error": asdict(Dist.of(ttft_err)),
        "ttft_abs_error_vs_injected": asdict(Dist.of([abs(x) for x in ttft_err_inj])),
        "itl_abs_error": asdict(Dist.of([abs(x) for x in gap_err])),
        "itl_error": asdict(Dist.of(gap_err)),
        "itl_abs_error_vs_injected": asdict(Dist.of([abs(x) for x in gap_err_inj])),
        "ttft_abs_error_vs_after_write": asdict(Dist.of([abs(x) for x in ttft_err_after])),
        "itl_abs_error_vs_after_write": asdict(Dist.of([abs(x) for x in gap_err_after])),
        "request_leg_ms": asdict(Dist.of(leg_in)),
        "first_token_leg_ms": asdict(Dist.of(leg_out)),
        "true_ttft_ms": asdict(
            Dist.of([(r["write_ns"][0] - r["start_ns"]) / 1e6 for r in by_key.values()])
        ),
        "gaps_coalesced": coalesced,
        **load,
    }


async def cpu_one(
    url: str, protocol: str, n: int, tokens: int, itl_ms: float, side_checks: bool = False
) -> dict[str, Any]:
    """CPU time of this process per streamed request (sequential, after a warm-up)."""
    async with HttpClient() as session:
        await control(session, url, reset=True, ttft_ms=0.0, itl_ms=itl_ms, tokens=tokens)
        with captured_timers() as timers:
            await _probe_many(session, url, protocol, 3, tokens, 1, "warmup", side_checks)
            timers.clear()
            load: dict[str, Any] = {}
            with host_load(load):
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                w0 = time.perf_counter()
                runs = await _probe_many(session, url, protocol, n, tokens, 1, "cpu", side_checks)
                wall = time.perf_counter() - w0
                r1 = resource.getrusage(resource.RUSAGE_SELF)
            floor = await _cpu_floor(session, url, protocol, n, tokens)
        await control(session, url, reset=True)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    units = [len(t.content_ns) for t in timers.values()]
    reads = [len(set(t.content_ns)) for t in timers.values()]
    if any(u != tokens for u in units):
        raise BenchError(f"{protocol}: expected {tokens} content units per run, got {units[:5]}")
    cpu_ms = (user + system) * 1000 / n
    return {
        "protocol": protocol,
        "requests": n,
        "tokens": tokens,
        "itl_ms": itl_ms,
        "side_checks": side_checks,
        "cpu_ms_per_request": round(cpu_ms, 3),
        "user_ms_per_request": round(user * 1000 / n, 3),
        "system_ms_per_request": round(system * 1000 / n, 3),
        "cpu_us_per_token": round(cpu_ms * 1000 / tokens, 2),
        "reads_per_request": round(statistics.fmean(reads), 1),
        "wall_ms_per_request": round(wall * 1000 / n, 1),
        "cpu_pct_of_one_core_while_streaming": round(100 * (user + system) / wall, 2),
        "ok": sum(r.ok for r in runs.values()),
        "floor_cpu_ms_per_request": round(floor, 3),
        **load,
    }


_STREAM_PATHS = {
    "openai": "/v1/chat/completions",
    "ollama": "/api/generate",
    "tgi": "/generate_stream",
}


async def _cpu_floor(session: HttpClient, url: str, protocol: str, n: int, tokens: int) -> float:
    """CPU ms per request of the same streamed request read bare: the client and asyncio alone.

    The same body as the probe sends, read with ``chunks()`` and one ``perf_counter_ns`` per
    read, no parsing: what any asyncio client pays. The probe's cost above this floor
    is Vigil's own (parsing, timing, judging the run).
    """
    probe = PROBES[protocol](_target(url, "floor", tokens, False, protocol))
    payload = probe._payload  # type: ignore[attr-defined]

    async def one() -> None:
        async with session.post(url + _STREAM_PATHS[protocol], json=payload) as resp:
            async for _chunk in resp.chunks():
                time.perf_counter_ns()

    for _ in range(3):
        await one()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(n):
        await one()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000 / n


# --- 3: schedule drift of a real agent ---------------------------------------------------


def drift_config(tmp: Path, urls: list[str], endpoints: int, interval: str, jitter: str) -> Path:
    """The agent's config: ``endpoints`` streamed openai models spread over ``urls``."""
    data_dir = tmp / "agent-data"
    parts = [
        f"""[agent]
host = "bench"
data_dir = {json.dumps(str(data_dir))}
listen = "127.0.0.1:0"
sample_interval = "1s"
log_level = "warning"
"""
    ]
    jitter_line = "" if jitter == "default" else f"jitter = {json.dumps(jitter)}\n"
    for i in range(endpoints):
        parts.append(f"""
[[model]]
name = "llm-{i:03d}"
protocol = "openai"
url = {json.dumps(urls[i % len(urls)])}
interval = {json.dumps(interval)}
{jitter_line}timeout = "4s"
canary = {{ model = "{MODEL}", max_tokens = 16 }}
""")
    path = tmp / "vigil.toml"
    path.write_text("".join(parts), encoding="utf-8")
    return path


def run_drift(
    tmp: Path, servers: int, endpoints: int, interval_s: float, duration_s: float, jitter: str
) -> dict[str, Any]:
    """Run a real agent probing ``endpoints`` models; pair scheduled and actual starts."""
    with fake_servers(
        tmp, servers, "--ttft-ms", "50", "--itl-ms", "20", "--tokens", "16", "--no-record"
    ) as urls:
        config = drift_config(tmp, urls, endpoints, f"{interval_s:g}s", jitter)
        schedule_out = tmp / "schedule.json"
        env = child_env() | {"VIGIL_BENCH_SCHEDULE_OUT": str(schedule_out)}
        log_path = tmp / "agent.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", AGENT_LAUNCHER, str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        data_dir = tmp / "agent-data"
        try:
            deadline = time.monotonic() + 60
            while not (data_dir / "api.json").exists():
                if proc.poll() is not None:
                    raise BenchError(
                        f"agent exited {proc.returncode}:\n{log_path.read_text(errors='replace')}"
                    )
                if time.monotonic() > deadline:
                    raise BenchError("the agent did not write api.json within 60 s")
                time.sleep(0.05)
            # Stop between two rounds, so no run is cut off by the shutdown.
            load: dict[str, Any] = {}
            with host_load(load):
                time.sleep(duration_s + interval_s / 2)
            agent_cpu = psutil.Process(proc.pid).cpu_times()
        finally:
            code = stop(proc)
    if code != 0:
        raise BenchError(f"agent exited {code} on SIGTERM:\n{log_path.read_text()[-2000:]}")
    if not schedule_out.exists():
        raise BenchError("the agent launcher wrote no schedule record")
    sched = json.loads(schedule_out.read_text())
    return (
        analyse_drift(
            sched, read_runs(data_dir), endpoints, interval_s, duration_s, servers, agent_cpu
        )
        | load
        | {"jitter": jitter}
    )


def read_runs(data_dir: Path) -> list[tuple[str, int, int, float | None, float | None]]:
    """(model, ts, ok, ttft_ms, itl_ms) of every probe run the agent stored."""
    conn = sqlite3.connect(f"file:{data_dir / 'vigil.db'}?mode=ro", uri=True)
    try:
        return list(
            conn.execute("SELECT model, ts, ok, ttft_ms, itl_ms FROM probe_runs ORDER BY ts")
        )
    finally:
        conn.close()


def analyse_drift(
    sched: dict[str, Any],
    runs: list[tuple[str, int, int, float | None, float | None]],
    endpoints: int,
    interval_s: float,
    duration_s: float,
    servers: int,
    agent_cpu: Any,
) -> dict[str, Any]:
    """Pair each model's scheduled run times with its stored runs, in order."""
    scheduled: dict[str, list[float]] = {}
    skipped = 0
    for code, model, times in sched["records"]:
        if code == sched["submitted"]:
            scheduled.setdefault(model, []).append(times[-1] * 1000)
        else:
            skipped += 1
    started: dict[str, list[int]] = {}
    for model, ts, _ok, _ttft, _itl in runs:
        started.setdefault(model, []).append(ts)
    first: list[float] = []
    steady: list[float] = []
    unmatched = 0
    for model, times in scheduled.items():
        actual = started.get(model, [])
        unmatched += abs(len(times) - len(actual))
        for k, (s, a) in enumerate(zip(sorted(times), actual, strict=False)):
            (first if k == 0 else steady).append(a - s)
    if len(scheduled) != endpoints or not steady:
        raise BenchError(f"scheduled runs seen for {len(scheduled)} of {endpoints} models")
    if min(first + steady) < -1.5:  # ts is floored to the ms; anything earlier is a mismatch
        raise BenchError(f"a probe run started {min(first + steady):.1f} ms before its schedule")
    ttft = [r[3] for r in runs if r[3] is not None]
    itl = [r[4] for r in runs if r[4] is not None]
    return {
        "endpoints": endpoints,
        "servers": servers,
        "interval_s": interval_s,
        "duration_s": duration_s,
        "rounds": round(len(first + steady) / endpoints, 1),
        "runs": len(runs),
        "runs_ok": sum(r[2] for r in runs),
        "skipped_or_missed": skipped,
        "unmatched": unmatched,
        "drift_ms": asdict(Dist.of(steady)),
        "first_round_drift_ms": asdict(Dist.of(first)),
        "agent_ttft_ms": asdict(Dist.of(ttft)),
        "agent_itl_ms": asdict(Dist.of(itl)),
        "agent_cpu_s": round(agent_cpu.user + agent_cpu.system, 2),
    }


# --- report ------------------------------------------------------------------------------


def judge(result: dict[str, Any]) -> dict[str, bool]:
    """Which targets were met."""
    verdict: dict[str, bool] = {}
    for acc in result.get("accuracy", []):
        p = acc["protocol"]
        verdict[f"{p}_ttft"] = acc["ttft_abs_error"]["p99"] <= TARGET_ERROR_P99_MS
        verdict[f"{p}_itl"] = acc["itl_abs_error"]["p99"] <= TARGET_ERROR_P99_MS
    drift = result.get("drift")
    if drift:
        verdict["drift"] = (
            drift["drift_ms"]["max"] < TARGET_DRIFT_MS
            and drift["skipped_or_missed"] == 0
            and drift["runs_ok"] == drift["runs"]
        )
    return verdict


def _d(d: dict[str, Any]) -> str:
    return f"{d['p50']:7.3f} {d['p99']:7.3f} {d['max']:7.3f}"


def render(result: dict[str, Any]) -> str:
    """The human-readable summary."""
    m = result["machine"]
    lines = [
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
        f"kernel {m['kernel']} (HZ {m.get('kernel_hz')}, {m.get('kernel_preempt')}), "
        f"Python {m['python']}, "
        f"load {m['loadavg_at_start']}; git {m['git_commit']}"
        + (" (uncommitted changes)" if m["git_dirty"] else ""),
        f"date: {m['date_utc']}",
    ]
    acc = result.get("accuracy")
    if acc:
        a0 = acc[0]
        s = result["settings"]
        lines += [
            "",
            f"TTFT/ITL error, ms (measured - server truth): {a0['requests']} requests x "
            f"{a0['tokens']} tokens per protocol, injected TTFT {s['ttft_ms']:g} ms / ITL "
            f"{s['itl_ms']:g} ms, {a0['concurrency']} at a time",
            f"{'':7} {'|TTFT err| p50/p99/max':>23}  {'|ITL err| p50/p99/max':>23}  "
            f"{'vs injected: TTFT p99':>21} {'ITL p99':>7}  {'req leg p50':>11} "
            f"{'1st-token leg p50':>17} {'host busy %':>11}",
        ]
        for a in acc:
            lines.append(
                f"{a['protocol']:7} {_d(a['ttft_abs_error'])}  {_d(a['itl_abs_error'])}  "
                f"{a['ttft_abs_error_vs_injected']['p99']:21.3f} "
                f"{a['itl_abs_error_vs_injected']['p99']:7.3f}  "
                f"{a['request_leg_ms']['p50']:11.3f} {a['first_token_leg_ms']['p50']:17.3f} "
                f"{a['host']['busy_pct']:11.0f}"
            )
    cpu = result.get("cpu")
    if cpu:
        lines += [
            "",
            "CPU of the probing process per streamed request (server in another process, "
            "side requests off):",
        ]
        for c in cpu:
            lines.append(
                f"{c['protocol']:7} {c['tokens']} tokens, ITL {c['itl_ms']:g} ms: "
                f"{c['cpu_ms_per_request']:.2f} ms CPU/request "
                f"({c['user_ms_per_request']:.2f} user + {c['system_ms_per_request']:.2f} sys; "
                f"{c['cpu_us_per_token']:.1f} us/token, {c['reads_per_request']:.0f} reads, "
                f"{c['cpu_pct_of_one_core_while_streaming']:.1f}% of a core while streaming; "
                f"bare client floor {c['floor_cpu_ms_per_request']:.2f} ms; "
                f"host busy {c['host']['busy_pct']:.0f}%)"
            )
    d = result.get("drift")
    if d:
        lines += [
            "",
            f"schedule drift: real agent, {d['endpoints']} openai endpoints on {d['servers']} "
            f"fake servers, every {d['interval_s']:g}s, jitter {d['jitter']}, {d['duration_s']:g}s "
            f"({d['rounds']:g} rounds); {d['runs']} runs, {d['runs_ok']} ok, "
            f"{d['skipped_or_missed']} skipped/missed, {d['unmatched']} unmatched",
            f"  drift (actual - scheduled start), rounds after the first: p50 "
            f"{d['drift_ms']['p50']:.1f} ms, p99 {d['drift_ms']['p99']:.1f} ms, max "
            f"{d['drift_ms']['max']:.1f} ms (n={d['drift_ms']['n']})",
            f"  first round (at start-up): p50 {d['first_round_drift_ms']['p50']:.1f} ms, "
            f"max {d['first_round_drift_ms']['max']:.1f} ms",
            f"  TTFT the agent measured meanwhile (server ~50 ms): p50 "
            f"{d['agent_ttft_ms']['p50']:.1f}, p99 {d['agent_ttft_ms']['p99']:.1f}, max "
            f"{d['agent_ttft_ms']['max']:.1f} ms; mean ITL p50 {d['agent_itl_ms']['p50']:.2f}, "
            f"p99 {d['agent_itl_ms']['p99']:.2f} ms; agent CPU {d['agent_cpu_s']:.1f} s",
            f"  host busy {d['host']['busy_pct']:.0f}% of {result['machine']['cpus']} CPUs, "
            f"load {d['host']['loadavg_1m_start']} -> {d['host']['loadavg_1m_end']}",
        ]
    verdict = result["targets_met"]
    missed = [k for k, ok in verdict.items() if not ok]
    lines += [
        "",
        f"targets: |TTFT| and |ITL| error p99 <= {TARGET_ERROR_P99_MS:g} ms per protocol; drift "
        f"max < {TARGET_DRIFT_MS:g} ms, no skipped runs -> "
        + ("PASS" if not missed else "FAIL (" + ", ".join(missed) + ")"),
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/probe_accuracy.py",
        description="Streaming probes' TTFT/ITL error, CPU per request and the agent's "
        "schedule drift (issue 3).",
    )
    p.add_argument("--requests", type=int, default=200, help="per protocol (default 200)")
    p.add_argument("--tokens", type=int, default=16, help="tokens per request (default 16)")
    p.add_argument("--ttft-ms", type=float, default=50.0, help="injected TTFT (default 50)")
    p.add_argument("--itl-ms", type=float, default=20.0, help="injected ITL (default 20)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="accuracy requests at a time (default 1: on a 2-CPU host, 2 or 4 at a time "
        "already delay the fake server's dispatch of a new request, which counts as error)",
    )
    p.add_argument("--cpu-requests", type=int, default=30, help="per protocol (default 30)")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        action="append",
        help="accuracy and CPU: only this protocol (repeatable; default all three)",
    )
    p.add_argument("--endpoints", type=int, default=200, help="drift: models (default 200)")
    p.add_argument("--servers", type=int, default=4, help="drift: fake servers (default 4)")
    p.add_argument("--drift-duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument(
        "--drift-jitter",
        default="0s",
        help="drift: each model's jitter, a duration or \"default\" (the agent's own: 10%% "
        'of the interval, at most 1s); default "0s", every probe due at the same instant',
    )
    p.add_argument(
        "--only",
        choices=("accuracy", "cpu", "drift"),
        action="append",
        help="run only this part (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the summary or JSON."""
    args = build_parser().parse_args(argv)
    parts = set(args.only or ("accuracy", "cpu", "drift"))
    protocols = [p for p in PROTOCOLS if not args.protocol or p in args.protocol]
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-probe-"))
    result: dict[str, Any] = {
        "machine": machine(),
        "command": "bench/probe_accuracy.py " + " ".join(argv or sys.argv[1:]),
        "settings": {"ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms},
    }
    try:
        if parts & {"accuracy", "cpu"}:
            with fake_servers(tmp, 1) as (url,):
                if "accuracy" in parts:
                    result["accuracy"] = [
                        asyncio.run(
                            accuracy_one(
                                url,
                                p,
                                args.requests,
                                args.tokens,
                                args.ttft_ms,
                                args.itl_ms,
                                args.concurrency,
                            )
                        )
                        for p in protocols
                    ]
                if "cpu" in parts:
                    result["cpu"] = [
                        asyncio.run(cpu_one(url, p, args.cpu_requests, 256, itl))
                        for itl in (1.0, 0.0)
                        for p in protocols
                    ]
        if "drift" in parts:
            result["drift"] = run_drift(
                tmp, args.servers, args.endpoints, 5.0, args.drift_duration, args.drift_jitter
            )
    except BenchError as exc:
        print(f"benchmark failed: {exc}\n(files kept in {tmp})", file=sys.stderr)
        return EXIT_ERROR
    result["targets_met"] = judge(result)
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
    return EXIT_OK if all(result["targets_met"].values()) else EXIT_MISSED


if __name__ == "__main__":
    sys.exit(main())
