"""Simulated agents for ``tui_fleet.py``: N agents served by W worker processes, one loopback
port per agent, speaking the agent API's fleet routes (docs/api.md) over HTTP/1.1 keep-alive.

Each agent's values (CPU, per-core CPU, 8 GPUs, network, the models' last probes) change once
per ``--sample`` seconds, as an agent's samples do (``sample_interval``, 1 s by default), at its
own phase; the models' latency percentiles every 5 s. A body is rendered only when it is asked
for and its values changed since it was last rendered, so the simulation costs little (JSON
rendering of all 1,000 agents every second took most of a core, and showed as slow agents).

Routes (``Authorization: Bearer <TOKEN>`` required, query strings ignored):

* ``/api/v1/status``: host, 4 models, 2 processes, ~80 resource series, ``alert_counts``
  (about 12 KB of JSON).
* ``/api/v1/models``: the models with 5m and 1h percentiles, outcomes, info (about 6 KB).
* ``/api/v1/incidents``: the open incidents (one agent in 20 has one).
* ``/api/v1/summary``: the compact fleet row (about 0.5 KB) with an ``ETag``; a request whose
  ``If-None-Match`` names the current one is answered ``304 Not Modified``. ``--no-summary``
  answers it 404, as an agent older than the route does.

A worker is started as ``python fleetsim.py --first I --count N ...``: it prints its ports as
one JSON line, serves until its stdin closes, then prints what it served (requests per route,
304s, its CPU seconds) as one JSON line and exits.

Why not aiohttp's server: at 1,000 requests a second it cost the simulation a few hundred
microseconds a request, which on a 2-vCPU machine is CPU the TUI being measured does not get.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import benchlib  # noqa: F401 - first: puts the repo root on sys.path (this runs as a script)

from storage.records import (
    AgentStatus,
    ModelStatus,
    ProbeRun,
    ProcessStatus,
    ResourceValue,
    make_labels,
)

TOKEN = "bench-token"  # a throwaway token for simulated agents
GiB = 1024**3
DETAILS_S = 5.0
"""Latency percentiles are redrawn this often (the agent recomputes them about as often)."""
MODEL_NAMES = ("llama-70b", "mistral-7b", "embedder", "reranker")


def _res(name: str, value: float, now: int, **labels: object) -> dict[str, Any]:
    return ResourceValue(name=name, labels=make_labels(labels), ts_ms=now, value=value).to_json()


class SimAgent:
    """One simulated agent: its state, its bodies (rendered on demand), its HTTP answers.

    Args:
        index: Its number (the host is ``gpu-NNN``).
        seed: The fleet's seed; each agent draws from its own generator, so an agent's values
            do not depend on how the fleet is split into workers.
        sample_s: How often its values change.
        summary_route: Whether it serves ``/api/v1/summary`` (else 404, an older agent).
    """

    def __init__(self, index: int, seed: int, sample_s: float, summary_route: bool) -> None:
        self.index = index
        self.rng = rng = random.Random(seed * 1_000_003 + index)
        self.sample_s = sample_s
        self.summary_route = summary_route
        self.phase = rng.random() * sample_s
        self.host = f"gpu-{index:03d}"
        self.cpu = rng.uniform(5, 60)
        now = int(time.time() * 1000)
        self.started_ms = now - rng.randint(60_000, 9_000_000)
        # A realistic mix: most healthy, some degraded, a few failing.
        roll = index % 20
        self.model_states = (
            ("up", "up", "up", "down")
            if roll == 0
            else ("up", "degraded", "up", "up")
            if roll in (1, 2)
            else ("up",) * 4
        )
        self.incidents = 1 if roll == 0 else 0
        self.alert_counts = {
            "firing": 1 if roll == 0 else 0,
            "critical": 1 if roll == 0 else 0,
            "silenced": 0,
            "maintenance": 0,
            "pending": 0,
        }
        self.epoch = -1
        self.details_epoch = -1
        self.bodies: dict[str, bytes] = {}
        self.etag = b""
        self.served: dict[str, int] = {}
        self._build(now)

    def _build(self, now: int) -> None:
        """The status document once, as records render it; values then change in place."""
        models = tuple(
            ModelStatus(
                name,
                "openai" if i < 2 else "kserve_v2",
                f"http://127.0.0.1:{8000 + i}",
                state,
                now - 60_000,
                ProbeRun(
                    name,
                    now - 1000,
                    state != "down",
                    "ok" if state == "up" else "slow" if state == "degraded" else "refused",
                    e2e_ms=100.0,
                    ttft_ms=50.0 if i < 2 else None,
                ),
            )
            for i, (name, state) in enumerate(zip(MODEL_NAMES, self.model_states, strict=True))
        )
        status = AgentStatus(
            host=self.host,
            version="0.1.0",
            started_ms=self.started_ms,
            now_ms=now,
            models=models,
            processes=(
                ProcessStatus("vllm", "running", now - 3_600_000, pid=1000 + self.index),
                ProcessStatus("triton", "running", now - 3_600_000, pid=2000 + self.index),
            ),
            resources=(),
            gpu_available=True,
        ).to_json()
        self.cpu_total = _res("host.cpu.percent", self.cpu, now)
        self.cores = [_res("host.cpu.percent", 0.0, now, core=c) for c in range(32)]
        fixed = [
            _res("host.mem.total_bytes", 512 * GiB, now),
            _res("host.mem.used_bytes", 200 * GiB, now),
            _res("host.mem.available_bytes", 312 * GiB, now),
            _res("host.mem.percent", 39.0, now),
            _res("host.swap.total_bytes", 0, now),
            _res("host.load.1m", 3.2, now),
            _res("host.load.5m", 2.9, now),
            _res("host.load.15m", 2.5, now),
            _res("host.disk.used_bytes", 900 * GiB, now, mount="/"),
            _res("host.disk.total_bytes", 2000 * GiB, now, mount="/"),
            _res("host.disk.percent", 45.0, now, mount="/"),
        ]
        self.net = [
            _res("host.net.rx_bytes_per_s", 0.0, now, iface="eth0"),
            _res("host.net.tx_bytes_per_s", 0.0, now, iface="eth0"),
        ]
        self.gpus = [
            [
                _res("gpu.util.percent", 0.0, now, gpu=g),
                _res("gpu.mem.used_bytes", 0.0, now, gpu=g),
                _res("gpu.mem.total_bytes", 80 * GiB, now, gpu=g),
                _res("gpu.temperature_c", 0.0, now, gpu=g),
                _res("gpu.power_w", 0.0, now, gpu=g),
            ]
            for g in range(8)
        ]
        self.procs = [
            r
            for p in ("vllm", "triton")
            for r in (
                _res("process.cpu.percent", 0.0, now, process=p),
                _res("process.rss_bytes", 30 * GiB, now, process=p),
            )
        ]
        status["resources"] = [
            self.cpu_total,
            *self.cores,
            *fixed,
            *self.net,
            *(r for gpu in self.gpus for r in gpu),
            *self.procs,
        ]
        status["alert_counts"] = self.alert_counts
        self.status = status
        self.models_json: list[dict[str, Any]] = []
        self.ttft_p95: float | None = None
        self.e2e_p95: float | None = None

    # --- values ---------------------------------------------------------------------------

    def advance(self) -> None:
        """Move to the current sample, if it changed: new values, bodies to render again."""
        now_s = time.monotonic() + self.phase
        epoch = int(now_s / self.sample_s)
        if epoch == self.epoch:
            return
        self.epoch = epoch
        self.bodies.clear()
        rng = self.rng
        now = int(time.time() * 1000)
        self.cpu = min(100.0, max(0.0, self.cpu + rng.uniform(-8, 8)))
        self.cpu_total["value"] = self.cpu
        for r in (self.cpu_total, *self.cores, *self.net, *self.procs):
            r["ts_ms"] = now
        for r in self.cores:
            r["value"] = rng.uniform(0, 100)
        for r in self.net:
            r["value"] = rng.uniform(1e6, 1e8)
        for r in self.procs[::2]:
            r["value"] = rng.uniform(50, 400)
        for util, used, _total, temp, power in self.gpus:
            util["value"] = rng.uniform(20, 100)
            used["value"] = rng.uniform(20, 75) * GiB
            temp["value"] = rng.uniform(40, 80)
            power["value"] = rng.uniform(100, 700)
        self.status["now_ms"] = now
        self.status["uptime_s"] = (now - self.started_ms) / 1000
        for i, model in enumerate(self.status["models"]):
            run = model["last_run"]
            run["ts_ms"] = now - 1000
            run["e2e_ms"] = rng.uniform(50, 900)
            if i < 2:
                run["ttft_ms"] = rng.uniform(40, 400)
        details = int(now_s / DETAILS_S)
        if details != self.details_epoch:
            self.details_epoch = details
            self._draw_latencies()

    def _draw_latencies(self) -> None:
        rng = self.rng

        def pct(base: float) -> dict[str, Any]:
            return {
                "count": 60,
                "p50": base,
                "p95": base * 1.8,
                "p99": base * 2.5,
                "mean": base * 1.1,
                "max": base * 3,
            }

        empty = {"count": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
        self.models_json = []
        for i, model in enumerate(self.status["models"]):
            window = {
                "e2e_ms": pct(rng.uniform(50, 500)),
                "ttft_ms": pct(rng.uniform(40, 300)) if i < 2 else empty,
                "itl_ms": pct(rng.uniform(10, 40)) if i < 2 else empty,
            }
            self.models_json.append(
                {
                    **model,
                    "latency": {"5m": window, "1h": window},
                    "outcomes_1h": {"ok": 350, "slow": 5, "timeout": 5},
                    "availability_1h": 0.97,
                    "info": {"sha256": "ab" * 32, "size_bytes": 123456789, "opset": {"": 17}},
                    "incident": None,
                }
            )
        windows = [m["latency"]["5m"] for m in self.models_json]
        ttfts = [w["ttft_ms"]["p95"] for w in windows if w["ttft_ms"]["p95"] is not None]
        self.ttft_p95 = max(ttfts) if ttfts else None
        self.e2e_p95 = max(w["e2e_ms"]["p95"] for w in windows)

    # --- bodies ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The ``/api/v1/summary`` document (docs/api.md)."""
        utils = [gpu[0]["value"] for gpu in self.gpus]
        return {
            "host": self.host,
            "version": self.status["version"],
            "storage_ok": True,
            "models": [{"name": m["name"], "state": m["state"]} for m in self.status["models"]],
            "processes": [
                {"name": p["name"], "state": p["state"]} for p in self.status["processes"]
            ],
            "cpu_percent": self.cpu,
            "gpu": {
                "count": len(self.gpus),
                "util_percent": sum(utils) / len(utils),
                "mem_used_bytes": sum(gpu[1]["value"] for gpu in self.gpus),
                "mem_total_bytes": sum(gpu[2]["value"] for gpu in self.gpus),
            },
            "ttft_p95_ms": self.ttft_p95,
            "e2e_p95_ms": self.e2e_p95,
            "open_incidents": self.incidents,
            "alert_counts": self.alert_counts,
        }

    def body(self, path: str) -> bytes | None:
        """The current body of a route, rendered if its values changed; None: no such route."""
        body = self.bodies.get(path)
        if body is not None:
            return body
        if path == "/api/v1/status":
            doc: Any = self.status
        elif path == "/api/v1/models":
            doc = {"models": self.models_json}
        elif path == "/api/v1/incidents":
            doc = {"incidents": self._incidents()}
        elif path == "/api/v1/summary" and self.summary_route:
            doc = self.summary()
        else:
            return None
        body = self.bodies[path] = json.dumps(doc, separators=(",", ":")).encode()
        if path == "/api/v1/summary":
            self.etag = b'"' + hashlib.blake2b(body, digest_size=8).hexdigest().encode() + b'"'
        return body

    def _incidents(self) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        return [
            {
                "id": k + 1,
                "subject": "model:reranker",
                "kind": "model_down",
                "severity": "critical",
                "cause": "probe refused",
                "state": "open",
                "opened_ms": now - 120_000,
                "evidence": {},
            }
            for k in range(self.incidents)
        ]

    def answer(self, head: bytes) -> bytes:
        """The HTTP response to one request's head (request line and headers)."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1].split(b"?", 1)[0].decode() if len(parts) == 3 else ""
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self.served[path] = self.served.get(path, 0) + 1
        if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
            return _response(401, b'{"error":"token rejected"}')
        self.advance()
        body = self.body(path)
        if body is None:
            return _response(404, b'{"error":"not found"}')
        if path != "/api/v1/summary":
            return _response(200, body)
        if headers.get(b"if-none-match") == self.etag:
            self.served["304"] = self.served.get("304", 0) + 1
            return b"HTTP/1.1 304 Not Modified\r\nETag: " + self.etag + b"\r\n\r\n"
        return _response(200, body, b"ETag: " + self.etag + b"\r\n")


_REASONS = {200: b"OK", 401: b"Unauthorized", 404: b"Not Found"}


def _response(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (status, _REASONS[status], len(body), extra)
    ) + body


class SimProtocol(asyncio.Protocol):
    """One keep-alive connection to one simulated agent (GET requests only: no bodies)."""

    def __init__(self, agent: SimAgent) -> None:
        self.agent = agent
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536 and self.transport is not None:
                    self.transport.close()
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            assert self.transport is not None
            self.transport.write(self.agent.answer(head))


async def serve(first: int, count: int, seed: int, sample_s: float, summary_route: bool) -> None:
    """Serve agents ``first .. first + count - 1``; print their ports as one JSON line; run
    until stdin closes; then print what was served as one JSON line."""
    loop = asyncio.get_running_loop()
    agents = [SimAgent(i, seed, sample_s, summary_route) for i in range(first, first + count)]
    servers = []
    for agent in agents:
        server = await loop.create_server(
            lambda agent=agent: SimProtocol(agent), "127.0.0.1", 0, backlog=1024
        )
        servers.append(server)
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    closed = asyncio.Event()
    loop.add_reader(0, lambda: closed.set() if not os.read(0, 1) else None)
    await closed.wait()
    for server in servers:
        server.close()
    served: dict[str, int] = {}
    for agent in agents:
        for key, n in agent.served.items():
            served[key] = served.get(key, 0) + n
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"served": served, "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)


class SimFleet:
    """The worker processes of a simulated fleet (a context manager).

    Args:
        agents: How many agents.
        workers: How many processes serve them (each a contiguous share).
        seed: The fleet's seed.
        sample_s: How often each agent's values change.
        summary_route: Whether the agents serve ``/api/v1/summary``.
    """

    def __init__(
        self,
        agents: int,
        workers: int,
        seed: int = 1,
        sample_s: float = 1.0,
        summary_route: bool = True,
    ) -> None:
        self.ports: list[int] = []
        self.stats: dict[str, Any] = {}
        self._procs: list[subprocess.Popen[str]] = []
        workers = max(1, min(workers, agents))
        share, extra = divmod(agents, workers)
        first = 0
        for w in range(workers):
            count = share + (1 if w < extra else 0)
            args = [sys.executable, __file__, "--first", str(first), "--count", str(count)]
            args += ["--seed", str(seed), "--sample", str(sample_s)]
            if not summary_route:
                args.append("--no-summary")
            self._procs.append(
                subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
            first += count

    def __enter__(self) -> SimFleet:
        try:
            for proc in self._procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"a simulated agents' worker exited {proc.wait()}")
                self.ports += json.loads(line)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers; collect what they served into :attr:`stats`."""
        served: dict[str, int] = {}
        cpu_s = 0.0
        for proc in self._procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)  # its last line is short: the pipe holds it meanwhile
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                continue
            assert proc.stdout is not None
            out = proc.stdout.read()
            for line in out.splitlines():
                doc = json.loads(line) if line.startswith("{") else None
                if doc is not None:
                    cpu_s += doc["cpu_s"]
                    for key, n in doc["served"].items():
                        served[key] = served.get(key, 0) + n
        self._procs = []
        if served:
            self.stats = {"served": served, "cpu_s": round(cpu_s, 2)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one worker of simulated agents (see the docstring)")
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sample", type=float, default=1.0)
    p.add_argument("--no-summary", action="store_true")
    args = p.parse_args(argv)
    asyncio.run(serve(args.first, args.count, args.seed, args.sample, not args.no_summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
