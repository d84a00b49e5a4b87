"""Latency of the agent's API over one keep-alive connection: ``GET /api/v1/status`` and
``GET /metrics``, p50/p99 over ``--requests`` requests each, and ``GET /healthz`` (no token, a
constant answer: what the HTTP server itself costs).

Issue 14 replaced the aiohttp server in the agent with a small one of its own; this checks that
the agent answers no slower for it. It starts a real agent (``python -m agent.cli agent run``,
no models, a temporary data dir, the API on a free loopback port), waits for ``api.json``, then
sends requests one after another on a single ``http.client`` connection (keep-alive, as
Prometheus and the TUI use it) and times each from the request's first byte to the answer's
last. A warm-up of ``--warmup`` requests per path comes first. The connection must stay the
same one throughout (a server that closed it would be measured reconnecting): the run fails
if it does not.

``--baseline DIR`` also starts an agent from another checkout (a ``git archive`` of the commit
before the change, say) with the same interpreter, and alternates requests between the two
agents (A B, B A, ...), each on its own connection, so that a busy shared host weighs on both
alike; ``--rounds`` repeats the whole with fresh agents.

Run by hand from the repo root: ``.venv/bin/python bench/api_latency.py [--baseline DIR]
[--json]``. Exit code: 0 measured, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, BenchError, child_env, machine, percentiles, stop, wait_for

PATHS = ("/healthz", "/api/v1/status", "/metrics")


def start_agent(root: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A real agent from checkout ``root``; the process, its URL and its read token."""
    data = tmp / "data"
    cfg = tmp / "vigil.toml"
    cfg.write_text(
        f'[agent]\nhost = "bench"\ndata_dir = "{data}"\nlisten = "127.0.0.1:0"\n'
        'sample_interval = "1s"\n',
        encoding="utf-8",
    )
    env = child_env()
    env["PYTHONPATH"] = str(root)
    log = (tmp / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(cfg)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> tuple[str, str] | None:
        if proc.poll() is not None:
            raise BenchError(f"the agent exited {proc.returncode}: see {tmp / 'agent.log'}")
        try:
            url = json.loads((data / "api.json").read_text())["url"]
            return url, (data / "api-token.read").read_text().strip()
        except (OSError, ValueError, KeyError):
            return None

    url, token = wait_for(ready, 60, "the agent's api.json")
    return proc, url, token


class Conn:
    """One keep-alive connection to one agent; fails if the server closes it."""

    def __init__(self, url: str, token: str) -> None:
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.sock: object = None

    def get_ms(self, path: str) -> float:
        t0 = time.perf_counter_ns()
        self.conn.request("GET", path, headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
        if resp.status != 200 or not body:
            raise BenchError(f"GET {path}: HTTP {resp.status} {body[:200]!r}")
        if self.sock is None:
            self.sock = self.conn.sock
        elif self.conn.sock is not self.sock:
            raise BenchError(f"GET {path}: the server closed the keep-alive connection")
        return elapsed_ms


def measure(
    agents: dict[str, tuple[str, str]], requests: int, warmup: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Milliseconds per request for each agent and path, each agent over one connection.

    With several agents, requests alternate between them (A B, then B A, ...), so that what
    else the host is doing at any moment weighs on each alike.
    """
    conns = {name: Conn(url, token) for name, (url, token) in agents.items()}
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in agents}
    try:
        for path in PATHS:
            times: dict[str, list[float]] = {name: [] for name in agents}
            order = list(conns)
            for i in range(warmup + requests):
                for name in order if i % 2 == 0 else reversed(order):
                    ms = conns[name].get_ms(path)
                    if i >= warmup:
                        times[name].append(ms)
            for name, values in times.items():
                out[name][path] = percentiles(values, (50, 90, 99), digits=3)
    finally:
        for c in conns.values():
            c.conn.close()
    return out


def run_round(
    roots: dict[str, Path], requests: int, warmup: int
) -> dict[str, dict[str, dict[str, float]]]:
    with contextlib.ExitStack() as stack:
        agents: dict[str, tuple[str, str]] = {}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        for name, root in roots.items():
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vigil-api-lat-")))
            proc, url, token = start_agent(root, tmp)
            procs[name] = proc
            agents[name] = (url, token)
        try:
            # Past start-up: the first collection is in and the scheduler settled.
            time.sleep(2.0)
            return measure(agents, requests, warmup)
        finally:
            for name, proc in procs.items():
                code = stop(proc)
                if code != 0:
                    raise BenchError(f"the agent from {roots[name]} exited {code} on SIGTERM")
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout to measure alongside")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    roots = {"this": ROOT}
    if args.baseline is not None:
        roots["baseline"] = args.baseline.resolve()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in roots}
    try:
        for _ in range(args.rounds):
            for name, per_path in run_round(roots, args.requests, args.warmup).items():
                results[name].append(per_path)
    except BenchError as exc:
        print(f"api_latency: {exc}", file=sys.stderr)
        return 2
    report = {"machine": machine(), "requests": args.requests, "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, rounds in results.items():
        for i, per_path in enumerate(rounds):
            for path, stats in per_path.items():
                print(
                    f"{name:8} round {i + 1} {path:16} n={stats['n']:.0f} "
                    f"p50={stats['p50']:.3f} ms p90={stats['p90']:.3f} ms "
                    f"p99={stats['p99']:.3f} ms max={stats['max']:.3f} ms"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
