"""``bench/rollout.py --only switch``: blue-green traffic switches through a real nginx.

Two copies of a model (``tests/fakes/color_server.py``, answering "blue" and "green") behind a
real nginx (Debian's package) started in a temporary prefix on loopback with the site
docs/deploy.md shows (upstream ``keepalive 16``, ``keepalive_timeout 4s``, 2 workers), exactly
as tests/integration/test_proxy_switch.py runs it. A steady client (``tests.nginx.SteadyClient``,
one thread) sends ``--switch-rate`` GETs a second through nginx, every third on a new
connection and the others on one keep-alive connection; a request that fails on a reused
connection before any answer is retried once on a new one, as HTTP clients do (RFC 9112
§9.3.1), and counted apart as a *stale keep-alive retry*.

Then ``--switch-count`` switches, alternating green and blue, each by the real
:class:`agent.deploy.nginx.NginxSwitch`: write the include, ``nginx -t``, SIGHUP to the master,
confirmed by the master's new worker generation and by the confirm URL answering from the new
address 3 times in a row. After each, the old copy's drain is awaited (no connection from
nginx left) and the client runs ``--switch-hold-s`` more before the next switch.

Reported: switch time (total and each step) p50/p95/max; the drain time; requests sent,
failed (any error or non-200 after the one retry: target 0), stale keep-alive retries, answers
from the old copy after a confirmed switch (target 0), and the client's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import BenchError, percentiles

from agent.deploy.nginx import NginxSwitch
from tests.nginx import NGINX, SteadyClient, color_backend, nginx_missing, running_nginx


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("switch")
    group.add_argument("--switch-count", type=int, default=20, help="switches (default 20)")
    group.add_argument(
        "--switch-rate", type=float, default=200.0, help="client requests/s (default 200)"
    )
    group.add_argument(
        "--switch-hold-s", type=float, default=0.5, help="client time between switches (0.5)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    why = nginx_missing()
    if why is not None:
        raise BenchError(why)
    nginx_version = subprocess.run(
        [str(NGINX), "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-switch-"))
    try:
        return asyncio.run(_run(args, tmp)) | {"nginx": nginx_version}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with (
        color_backend("blue") as blue,
        color_backend("green") as green,
        running_nginx(tmp, {"m": blue.address}) as nginx,
    ):
        switch = NginxSwitch(nginx.settings())
        preflight = await switch.preflight("m")
        if not preflight.ok:
            raise BenchError("; ".join(preflight.problems()))
        client = SteadyClient(nginx.url, "/m/", rate_per_s=args.switch_rate, new_every=3).start()
        results = []
        drains = []
        windows: list[tuple[float, float, str]] = []  # confirmed, next switch started, colour
        try:
            await asyncio.sleep(args.switch_hold_s)
            for i in range(args.switch_count):
                new, old = (green, blue) if i % 2 == 0 else (blue, green)
                started = time.monotonic()
                if windows:
                    windows[-1] = (windows[-1][0], started, windows[-1][2])
                results.append(await switch.switch("m", new.address))
                windows.append((time.monotonic(), float("inf"), new.color))
                drains.append(await switch.drain(old.address, timeout_s=30))
                await asyncio.sleep(args.switch_hold_s)
        finally:
            client.stop()
    answers = client.answers
    stale_after = sum(
        1
        for confirmed, until, color in windows
        for a in answers
        if confirmed < a.start < until and a.error is None and a.body != color
    )
    span_s = answers[-1].end - answers[0].start if answers else 0.0
    record: dict[str, Any] = {
        "settings": {
            "switches": args.switch_count,
            "rate_per_s": args.switch_rate,
            "hold_s": args.switch_hold_s,
            "nginx_workers": 2,
            "client": "one thread, http.client; every 3rd request on a new connection",
            "confirm": "worker generation (pid file) + URL answering from the new address x3",
        },
        "switch_ms": {
            "total": percentiles([r.total_ms for r in results], (50, 95), 1),
            "write": percentiles([r.write_ms for r in results], (50, 95), 1),
            "nginx_t": percentiles([r.check_ms for r in results], (50, 95), 1),
            "reload": percentiles([r.reload_ms for r in results], (50, 95), 1),
            "confirm": percentiles([r.confirm_ms for r in results], (50, 95), 1),
        },
        "total_ms_each": [round(r.total_ms, 1) for r in results],
        "drain_ms": percentiles([d.waited_ms for d in drains], (50, 95), 1),
        "drained": sum(d.drained for d in drains),
        "requests": len(answers),
        "achieved_rate_per_s": round(len(answers) / span_s, 1) if span_s else 0.0,
        "failed": len(client.failures()),
        "failures": [a.error for a in client.failures()][:5],
        "stale_keepalive_retries": sum(a.retried for a in answers),
        "old_copy_answers_after_confirm": stale_after,
        "client_latency_ms": percentiles([(a.end - a.start) * 1000 for a in answers], (50, 99), 2),
    }
    record["targets_met"] = {
        "no failed request": record["failed"] == 0,
        "no old-copy answer after a confirmed switch": stale_after == 0,
        "every old copy drained": record["drained"] == len(drains),
    }
    return record


def render(r: dict[str, Any]) -> str:
    s = r["settings"]
    sw = r["switch_ms"]
    lines = [
        f"{r['nginx']}; {s['switches']} switches, client at {s['rate_per_s']:g} req/s "
        f"(achieved {r['achieved_rate_per_s']:g}), {s['hold_s']:g} s between switches",
        "",
        "| switch step (ms) | p50 | p95 | max |",
        "|---|---:|---:|---:|",
    ]
    for key, label in [
        ("total", "**total** (write + test + reload + confirmed)"),
        ("write", "write the include (atomic, fsynced)"),
        ("nginx_t", "`nginx -t`"),
        ("reload", "reload (read the master pid, SIGHUP)"),
        ("confirm", "confirm (new workers up, old ones not accepting; URL x3)"),
    ]:
        p = sw[key]
        lines.append(f"| {label} | {p['p50']} | {p['p95']} | {p['max']} |")
    d = r["drain_ms"]
    lines.append(f"| old copy drained after confirm | {d['p50']} | {d['p95']} | {d['max']} |")
    lat = r["client_latency_ms"]
    lines += [
        "",
        f"requests {r['requests']}, **failed {r['failed']}**, stale keep-alive retries "
        f"{r['stale_keepalive_retries']}, old-copy answers after a confirmed switch "
        f"{r['old_copy_answers_after_confirm']}, drained {r['drained']}/{s['switches']}; "
        f"client latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms",
        "targets: "
        + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["targets_met"].items()),
    ]
    return "\n".join(lines)
