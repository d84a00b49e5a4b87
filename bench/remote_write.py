"""Measure remote_write (issue 18): send throughput, the agent's CPU with it on, and the replay
after a receiver outage, against a real Prometheus (Debian's ``prometheus`` with
``--web.enable-remote-write-receiver``, on loopback, one TSDB per part).

* ``throughput``: a store of ``--series`` x ``--samples`` raw samples (1 s apart, the newest a
  minute ago, written with the agent's own :class:`storage.ingest.SampleStore`) is forwarded by
  :class:`agent.forward.RemoteWrite` in this process, batches of ``--max-samples``, until it has
  caught up. Samples/s over the wall time, and this process's CPU seconds per 100,000 samples
  (read, encode and send: the reads and encoding run in threads, all counted), with the time
  the read+encode alone takes over the same store (no request) for the split. Prometheus's own
  CPU is reported beside it: on a small machine both share the cores.
* ``cpu``: two real agents (``sample_interval = 1s``, one supervised ``sleep``) run side by side
  over the same ``--duration`` window, one forwarding every ``--interval`` and one not; each is
  measured as ``bench/agent_overhead.py`` measures the agent (its own CPU seconds / wall time).
* ``replay``: a 10-minute outage, *simulated*: ``--outage-minutes`` of 1 s samples for the
  agent's own series and ``--replay-series`` more (a host with many GPUs and processes) are
  written into a fresh data dir with the remote_write cursor where the outage began, as an agent
  whose receiver was down that long leaves it; then a real agent is started on it with the
  receiver up, and the time from the agent's start to ``/api/v1/remote_write`` saying it has
  caught up (``ok``, ``sent_through_ms`` after its start) is the replay time. Prometheus is
  then asked for the samples back: all must be there.

Run by hand from the repo root: ``.venv/bin/python bench/remote_write.py [--json]``
(``--only throughput|cpu|replay``). Exit 0 when every sample arrived, 2 when the benchmark
could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
from agent_overhead import Subject, launched, measure
from benchlib import BenchError, child_env, machine, stop, wait_for

from agent.config.remotewrite import RemoteWriteConfig
from agent.forward import ForwardState, RemoteWrite, wire
from agent.forward.naming import Catalog
from storage import forwardcursor as fc
from storage.db import open_database
from storage.ingest import SampleStore
from storage.records import Sample, make_labels
from storage.samples import count_all_raw
from storage.writer import Writer

EXIT_OK, EXIT_ERROR = 0, 2
HOST_SERIES: list[
    tuple[str, dict[str, str]]
] = (  # what an agent on a small host stores every second, by name and labels
    [("host.cpu.percent", {}), ("host.mem.percent", {}), ("host.mem.used_bytes", {})]
    + [("host.cpu.percent", {"core": str(c)}) for c in range(8)]
    + [("host.disk.used_bytes", {"mount": m}) for m in ("/", "/data")]
    + [("host.net.rx_bytes_per_s", {"iface": i}) for i in ("eth0", "lo")]
)


# --- Prometheus ----------------------------------------------------------------------------


class Prometheus:
    """A Prometheus with its remote-write receiver on a free loopback port."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise BenchError("prometheus is not installed (scripts/debian-deps.sh installs it)")
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    "--web.listen-address=127.0.0.1:0",
                    "--web.enable-remote-write-receiver",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
        self.ps = psutil.Process(self.proc.pid)

        def bound() -> str | None:
            if self.proc.poll() is not None:
                raise BenchError(f"prometheus exited:\n{self.log.read_text()}")
            m = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', self.log.read_text())
            return m.group(1) if m else None

        address: str = wait_for(bound, 30, "prometheus to listen")
        self.url = f"http://{address}"
        wait_for(self._ready, 30, "prometheus to be ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def samples(self, instance: str, window_s: int) -> int:
        """How many raw samples Prometheus holds for ``instance`` over the last window."""
        args = urllib.parse.urlencode({"query": f'{{instance="{instance}"}}[{window_s}s]'})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{args}", timeout=120) as resp:
            body = json.loads(resp.read())
        return sum(len(r["values"]) for r in body["data"]["result"])

    def close(self) -> None:
        stop(self.proc)


@contextlib.contextmanager
def prometheus(tmp: Path) -> Iterator[Prometheus]:
    prom = Prometheus(tmp)
    try:
        yield prom
    finally:
        prom.close()


# --- a store to forward ----------------------------------------------------------------------


def fill(db: Path, names: list[tuple[str, dict[str, str]]], n: int, end_ms: int) -> int:
    """Write ``n`` samples 1 s apart, ending at ``end_ms``, for each series; returns the
    number written. Values walk like the agent's: percentages with one decimal, byte counts."""
    conn = open_database(db)
    store = SampleStore()
    rng = random.Random(18)
    start = end_ms - (n - 1) * 1000
    total = 0
    for lo in range(0, n, 600):  # ten minutes a transaction
        batch = []
        for i, (name, labels) in enumerate(names):
            lab = make_labels(labels)
            level = 50.0 + i
            for k in range(lo, min(n, lo + 600)):
                level = min(100.0, max(0.0, level + rng.uniform(-2, 2)))
                value = round(level, 1) if "percent" in name else float(int(level * 1e7))
                batch.append(Sample(name, lab, start + k * 1000, value))
        conn.execute("BEGIN")
        store.applied(store.write(conn, batch))
        conn.execute("COMMIT")
        total += len(batch)
    conn.close()
    return total


def many_series(count: int) -> list[tuple[str, dict[str, str]]]:
    """Host series plus process and GPU ones, ``count`` in all."""
    out = list(HOST_SERIES)
    i = 0
    while len(out) < count:
        out.append(("process.rss_bytes", {"process": f"worker-{i}"}))
        out.append(("gpu.util.percent", {"gpu": str(i)}))
        i += 1
    return out[:count]


# --- throughput ----------------------------------------------------------------------------


def throughput(tmp: Path, series: int, samples: int, max_samples: int) -> dict[str, Any]:
    db = tmp / "data" / "vigil.db"
    db.parent.mkdir(parents=True)
    end_ms = int(time.time() * 1000) - 60_000
    total = fill(db, many_series(series), samples, end_ms)
    conn = open_database(db)
    fc.open_target(conn, fc.TARGET, end_ms - samples * 1000)
    # Read + encode alone, over the same store (the split of the cost).
    catalog = Catalog("bench", (("job", "vigil"),))
    catalog.add(fc.series_after(conn, 0))
    cursors: dict[int, int] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    read_s = 0.0
    while True:
        r0 = time.perf_counter()
        batch = fc.read_batch(conn, catalog.ids, cursors, end_ms - samples * 1000, max_samples)
        read_s += time.perf_counter() - r0
        if not batch.samples:
            break
        wire.encode((catalog.labels(c.series_id), c.ts, c.values) for c in batch.chunks)
        for c in batch.chunks:
            cursors[c.series_id] = c.ts[-1]
    local = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    local["read_s"] = read_s
    conn.close()
    with prometheus(tmp / "prom") as prom:
        writer = Writer(db)
        writer.start()
        try:
            rw = RemoteWrite(writer, db, lambda e: None, started_ms=0)
            cfg = RemoteWriteConfig(
                url=f"{prom.url}/api/v1/write", interval_s=3600, max_samples=max_samples
            )
            p0 = prom.cpu_s()

            async def run() -> tuple[float, float]:
                t0, c0 = time.perf_counter(), time.process_time()
                await rw.apply(cfg, "bench")
                while rw.stats.samples_sent < total or rw.stats.state != ForwardState.OK:
                    if rw.stats.state == ForwardState.RETRYING:
                        raise BenchError(f"remote_write failing: {rw.stats.last_error}")
                    await asyncio.sleep(0.005)
                took = (time.perf_counter() - t0, time.process_time() - c0)
                await rw.stop()
                return took

            wall, cpu = asyncio.run(run())
            prom_cpu = prom.cpu_s() - p0
        finally:
            writer.close()
        received = prom.samples("bench", samples + 600)
    return {
        "series": series,
        "samples": total,
        "max_samples_per_request": max_samples,
        "requests": rw.stats.requests,
        "wall_s": round(wall, 3),
        "samples_per_s": round(total / wall),
        "cpu_s": round(cpu, 3),
        "cpu_s_per_100k_samples": round(cpu / total * 100_000, 3),
        "read_encode_only": {
            "wall_s": round(local["wall_s"], 3),
            "read_s": round(local["read_s"], 3),
            "samples_per_s": round(total / local["wall_s"]),
        },
        "prometheus_cpu_s": round(prom_cpu, 3),
        "received": received,
        "complete": received == total,
    }


# --- the agent's CPU -----------------------------------------------------------------------


def agent_config(tmp: Path, host: str, remote_write: str | None) -> Path:
    text = f"""
[agent]
host = "{host}"
data_dir = {json.dumps(str(tmp / "data"))}
listen = "127.0.0.1:0"
sample_interval = "1s"
on_exit = "stop"
audit_syslog = ""

[[process]]
name = "sleeper"
command = ["sleep", "86400"]
"""
    if remote_write:
        text += f"\n[remote_write]\n{remote_write}\n"
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "vigil.toml"
    path.write_text(text, encoding="utf-8")
    return path


def api(tmp: Path, path: str) -> Any:
    info = json.loads((tmp / "data" / "api.json").read_text())
    token = (tmp / "data" / "api-token").read_text().strip()
    req = urllib.request.Request(info["url"] + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def agent(tmp: Path, config: Path, name: str) -> Iterator[Subject]:
    def ready() -> bool:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return bool(json.loads((tmp / "data" / "api.json").read_text())["url"])
        return False

    argv = [sys.executable, "-m", "agent.cli", "agent", "run", "--config", str(config)]
    with launched(
        name, f"vigil agent run ({name})", argv, tmp / "agent.log", ready, 30.0, env=child_env()
    ) as subject:
        yield subject


def agent_cpu(tmp: Path, duration_s: float, interval: str) -> dict[str, Any]:
    """Two agents over one window: one forwarding, one not."""
    with prometheus(tmp / "prom") as prom:
        rw = f'url = "{prom.url}/api/v1/write"\ninterval = "{interval}"'
        on_cfg = agent_config(tmp / "on", "bench-on", rw)
        off_cfg = agent_config(tmp / "off", "bench-off", None)
        with (
            agent(tmp / "on", on_cfg, "forwarding") as on,
            agent(tmp / "off", off_cfg, "not") as off,
        ):
            (on_use, off_use), host = measure([on, off], 10.0, duration_s)
            state = api(tmp / "on", "/api/v1/remote_write")
    return {
        "duration_s": duration_s,
        "interval": interval,
        "forwarding_cpu_pct_of_one_core": on_use.cpu_pct_of_one_core,
        "not_forwarding_cpu_pct_of_one_core": off_use.cpu_pct_of_one_core,
        "difference_pct_of_one_core": round(
            on_use.cpu_pct_of_one_core - off_use.cpu_pct_of_one_core, 3
        ),
        "forwarding_rss_peak_mb": round(on_use.rss_peak_bytes / 1e6, 1),
        "not_forwarding_rss_peak_mb": round(off_use.rss_peak_bytes / 1e6, 1),
        "samples_sent": state["samples_sent"],
        "requests": state["requests"],
        "state": state["state"],
        "host_cpu_busy_pct": host.cpu_busy_pct,
        "loadavg_end": host.loadavg_end,
    }


# --- replay after an outage ----------------------------------------------------------------


def replay(tmp: Path, outage_minutes: float, extra_series: int, max_samples: int) -> dict[str, Any]:
    """The agent's own series learnt from a short run, then ``outage_minutes`` of them (and
    ``extra_series`` more) written unsent, then a real agent started on it to catch up."""
    with prometheus(tmp / "prom") as prom:
        learn = tmp / "learn"
        with agent(learn, agent_config(learn, "learn", None), "learning"):
            wait_for(lambda: api(learn, "/api/v1/status")["resources"], 30, "the first collection")
            time.sleep(2.5)  # rates need two readings
        conn = open_database(learn / "data" / "vigil.db")
        own = [(n, json.loads(lab)) for _, n, lab in fc.series_after(conn, 0)]
        conn.close()
        names = own + [s for s in many_series(extra_series + len(own)) if s not in own]
        names = names[: len(own) + extra_series]
        run = tmp / "replay"
        db = run / "data" / "vigil.db"
        db.parent.mkdir(parents=True)
        n = int(outage_minutes * 60)
        began_ms = int(time.time() * 1000) - n * 1000
        stored = fill(db, names, n, began_ms + (n - 1) * 1000)
        conn = open_database(db)
        fc.open_target(conn, fc.TARGET, began_ms - 1)  # the outage began: nothing sent since
        conn.close()
        rw = f'url = "{prom.url}/api/v1/write"\nmax_samples_per_request = {max_samples}'
        cfg = agent_config(run, "replay", rw)
        t0 = time.monotonic()
        start_ms = int(time.time() * 1000)
        with agent(run, cfg, "replaying") as subject:
            api_up_s = time.monotonic() - t0
            cpu0 = float(sum(subject.proc.cpu_times()[:2]))

            def caught_up() -> dict[str, Any] | None:
                state = api(run, "/api/v1/remote_write")
                if state["state"] == "retrying":
                    raise BenchError(f"remote_write failing: {state['last_error']}")
                through = state["sent_through_ms"] or 0
                return state if state["state"] == "ok" and through >= start_ms else None

            state: dict[str, Any] = wait_for(caught_up, 600, "the replay", poll_s=0.05)
            replay_s = time.monotonic() - t0
            cpu = float(sum(subject.proc.cpu_times()[:2])) - cpu0
        received = prom.samples("replay", n + 600)
        conn = open_database(db)
        in_store = count_all_raw(conn)  # the outage's samples and the agent's own since
        conn.close()
    return {
        "outage_minutes": outage_minutes,
        "simulated": True,
        "series": len(names),
        "agent_own_series": len(own),
        "samples_stored_during_outage": stored,
        "max_samples_per_request": max_samples,
        "agent_start_to_api_s": round(api_up_s, 2),
        "agent_start_to_caught_up_s": round(replay_s, 2),
        "replay_s": round(replay_s - api_up_s, 2),
        "agent_cpu_s_from_api_up": round(cpu, 2),
        "samples_sent": state["samples_sent"],
        "requests": state["requests"],
        "stored_at_stop": in_store,
        "received": received,
        "complete": received == in_store,
    }


# --- the command ---------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    lines = []
    if t := result.get("throughput"):
        lines.append(
            f"throughput: {t['samples']:,} samples ({t['series']} series) in {t['wall_s']} s: "
            f"{t['samples_per_s']:,} samples/s, {t['requests']} requests of <= "
            f"{t['max_samples_per_request']}; {t['cpu_s_per_100k_samples']} CPU s per 100k "
            f"samples; read+encode alone {t['read_encode_only']['samples_per_s']:,} samples/s "
            f"(read {t['read_encode_only']['read_s']} s); Prometheus CPU "
            f"{t['prometheus_cpu_s']} s; received {t['received']:,} (complete: {t['complete']})"
        )
    if c := result.get("cpu"):
        on, off = c["forwarding_cpu_pct_of_one_core"], c["not_forwarding_cpu_pct_of_one_core"]
        rss_on, rss_off = c["forwarding_rss_peak_mb"], c["not_forwarding_rss_peak_mb"]
        lines.append(
            f"agent CPU over {c['duration_s']:g} s (interval {c['interval']}): forwarding {on} %,"
            f" not {off} % of a core (difference {c['difference_pct_of_one_core']}); peak RSS "
            f"{rss_on} / {rss_off} MB; sent {c['samples_sent']} in {c['requests']} requests; "
            f"host busy {c['host_cpu_busy_pct']} %"
        )
    if r := result.get("replay"):
        lines.append(
            f"replay after a {r['outage_minutes']:g}-minute outage (simulated): "
            f"{r['samples_stored_during_outage']:,} samples of {r['series']} series caught up "
            f"{r['replay_s']} s after the API was up ({r['agent_start_to_caught_up_s']} s from "
            f"the agent's start), agent CPU {r['agent_cpu_s_from_api_up']} s, {r['requests']} "
            f"requests; received {r['received']:,} of {r['stored_at_stop']:,} stored at stop "
            f"(complete: {r['complete']})"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["throughput", "cpu", "replay"], action="append")
    p.add_argument("--series", type=int, default=200, help="throughput: series (200)")
    p.add_argument("--samples", type=int, default=1500, help="throughput: samples each (1500)")
    p.add_argument("--max-samples", type=int, default=2000, help="per request (2000)")
    p.add_argument("--duration", type=float, default=60.0, help="cpu: window, s (60)")
    p.add_argument("--interval", default="10s", help="cpu: remote_write interval (10s)")
    p.add_argument("--outage-minutes", type=float, default=10.0, help="replay (10)")
    p.add_argument("--replay-series", type=int, default=100, help="replay: extra series (100)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = args.only or ["throughput", "cpu", "replay"]
    result: dict[str, Any] = {"machine": machine()}
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-rw-bench-") as tmp:
            root = Path(tmp)
            if "throughput" in parts:
                result["throughput"] = throughput(
                    root / "t", args.series, args.samples, args.max_samples
                )
            if "cpu" in parts:
                result["cpu"] = agent_cpu(root / "c", args.duration, args.interval)
            if "replay" in parts:
                result["replay"] = replay(
                    root / "r", args.outage_minutes, args.replay_series, args.max_samples
                )
    except BenchError as exc:
        print(f"remote_write bench: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(result, indent=2) if args.json else render(result))
    return EXIT_OK


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
