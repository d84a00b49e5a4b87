"""``bench/rollout.py --only inplace``: the planned downtime of an in-place deploy on the demo.

The demo agent (``vigil demo``'s config: its KServe V2 server reading ``current``, probed every
2 s) deploys v3 and v1 in turn (the same answers, so each is promoted) ``--inplace-count``
times with a ``--inplace-bake`` bake, each once the previous version has three ok probe runs.
An independent client asks the model server for an answer every 10 ms the whole time.

Per deploy, the downtime two ways:

* **client-observed**: the longest time between two answers the client got during the deploy
  (the old version's last answer to the new version's first), and the requests that failed in
  it;
* **as Vigil records it**: the model's planned window, from its ``starting`` state change (the
  restart was asked for) to its next ``up`` (the new server's first answer opened its startup
  gate), which is what reports count as planned downtime.

There is no target: the numbers say how long an in-place deploy takes the model away, and how
close Vigil's record is to what a client saw.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchlib import BenchError, percentiles
from rollout_demo import Poller, demo_site, longest_gap


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inplace")
    group.add_argument("--inplace-count", type=int, default=10, help="deploys (default 10)")
    group.add_argument(
        "--inplace-bake", default="6s", help="each deploy's bake (default 6s, the demo's least)"
    )


def _vigil_window(changes: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    starting = next((e["ts_ms"] for e in changes if e["data"].get("to") == "starting"), None)
    if starting is None:
        return None, None
    up = next(
        (e["ts_ms"] for e in changes if e["ts_ms"] >= starting and e["data"].get("to") == "up"),
        None,
    )
    return starting, up


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with demo_site() as site:
        poller = Poller(site.model_url).start()
        try:
            last_end = 0
            for i in range(args.inplace_count):
                site.settle(last_end)
                version = "v3.onnx" if i % 2 == 0 else "v1.onnx"
                dep = site.deploy(version, args.inplace_bake)
                if dep["state"] != "promoted":
                    raise BenchError(f"deploy of {version} ended {dep['state']}: {dep['error']}")
                start, end = dep["requested_ms"], dep["finished_ms"]
                gap_ms, failed = longest_gap(poller.between(start - 100, end))
                starting, up = _vigil_window(site.state_changes(start))
                rows.append(
                    {
                        "deployment": dep["id"],
                        "version": version,
                        "client_gap_ms": round(gap_ms, 1),
                        "client_failed_requests": failed,
                        "vigil_planned_ms": (up - starting) if starting and up else None,
                        "deploy_ms": end - start,
                    }
                )
                last_end = end
        finally:
            poller.stop()
    gaps = [r["client_gap_ms"] for r in rows]
    vigil = [r["vigil_planned_ms"] for r in rows if r["vigil_planned_ms"] is not None]
    diffs = [
        r["vigil_planned_ms"] - r["client_gap_ms"]
        for r in rows
        if r["vigil_planned_ms"] is not None
    ]
    return {
        "settings": {
            "deploys": args.inplace_count,
            "bake": args.inplace_bake,
            "client": "one thread, http.client keep-alive, an infer request every 10 ms",
            "server": "agent.demo.server (vigil demo's), probed every 2 s",
        },
        "client_gap_ms": percentiles(gaps, (50, 95), 1),
        "vigil_planned_ms": percentiles([float(v) for v in vigil], (50, 95), 1),
        "vigil_minus_client_ms": percentiles(diffs, (50, 95), 1),
        "client_failed_requests": sum(r["client_failed_requests"] for r in rows),
        "deploy_ms": percentiles([float(r["deploy_ms"]) for r in rows], (50, 95), 0),
        "deploys": rows,
        "targets_met": {},
    }


def render(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        f"{s['deploys']} in-place deploys (v3 and v1 in turn, each promoted), bake {s['bake']}; "
        f"{s['client']}",
        "",
        "| per deploy (ms) | p50 | p95 | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in [
        (
            "client_gap_ms",
            "**downtime seen by the client** (last answer of the old to first of the new)",
        ),
        ("vigil_planned_ms", "planned downtime as Vigil records it (`starting` to `up`)"),
        ("vigil_minus_client_ms", "Vigil's record minus the client's gap"),
        ("deploy_ms", "whole deploy (request to promoted, bake included)"),
    ]:
        p = r[key]
        if p.get("n"):
            lines.append(f"| {label} | {p['p50']} | {p['p95']} | {p['min']} | {p['max']} |")
    lines += [
        "",
        f"client requests failed during the gaps: {r['client_failed_requests']} in all",
        "per deploy (client gap / Vigil's): "
        + ", ".join(f"{d['client_gap_ms']:.0f}/{d['vigil_planned_ms']}" for d in r["deploys"]),
    ]
    return "\n".join(lines)
