"""``bench/rollout.py --only rollback``: from a bad deploy to the known-good version serving
again, on the demo.

The demo agent (``vigil demo``'s config, probed every 2 s) deploys the bundled broken version
(``v2-broken.onnx``: other weights, so the canary gate's golden check fails it)
``--rollback-count`` times, each once v1 has three ok probe runs again (its baseline). An
independent client asks the model server every 10 ms and tells the versions apart by their
answers.

Per deploy:

* **client-observed time to known-good**: from the deploy request to the first answer of v1
  after the last wrong answer or failure (the model serving the known-good version again, for
  good); with the wrong answers the client got (their count and the time from the first to the
  last) and the time without any answer;
* **as Vigil records it**: request to ``rolled_back``, and the gate's decision
  (``checks.failed_ms``) to ``checks.restored_ms`` (the known-good version's startup gate
  open: the *time to restore* of the DORA keys).

There is no target.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchlib import BenchError, percentiles, wait_for
from rollout_demo import Poller, demo_site


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rollback")
    group.add_argument("--rollback-count", type=int, default=10, help="bad deploys (default 10)")
    group.add_argument("--rollback-bake", default="6s", help="each deploy's bake (default 6s)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with demo_site() as site:
        poller = Poller(site.model_url).start()
        try:
            good: tuple[float, ...] = wait_for(
                lambda: next((p.answer for p in reversed(poller.polls) if p.answer), ()),
                10,
                "the client's first answer",
            )
            last_end = 0
            for _ in range(args.rollback_count):
                site.settle(last_end)
                dep = site.deploy("v2-broken.onnx", args.rollback_bake)
                if dep["state"] != "rolled_back":
                    raise BenchError(f"the broken version ended {dep['state']}, not rolled back")
                start, end = dep["requested_ms"], dep["finished_ms"]
                # The client's view settles once it has seen v1 answer after the rollback.
                wait_for(
                    lambda end=end: poller.answered(good, end),  # type: ignore[misc]
                    30,
                    "v1 answering the client again",
                )
                polls = poller.between(start, end + 30_000)
                not_good = [i for i, p in enumerate(polls) if p.answer != good]
                back = next(
                    p for p in polls[(not_good[-1] + 1 if not_good else 0) :] if p.answer == good
                )
                wrong = [p for p in polls if p.answer is not None and p.answer != good]
                checks = dep["checks"]
                rows.append(
                    {
                        "deployment": dep["id"],
                        "client_to_known_good_ms": round(back.done_ms - start, 1),
                        "client_wrong_answers": len(wrong),
                        "client_wrong_for_ms": (
                            round(wrong[-1].done_ms - wrong[0].done_ms, 1) if wrong else 0.0
                        ),
                        "client_failed_requests": sum(1 for p in polls if p.answer is None),
                        "vigil_request_to_rolled_back_ms": end - start,
                        "vigil_time_to_restore_ms": checks["restored_ms"] - checks["failed_ms"],
                        "vigil_bake_to_failed_ms": checks["failed_ms"] - checks["bake_started_ms"],
                        "error": dep["error"],
                    }
                )
                last_end = end
        finally:
            poller.stop()

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in rows]

    return {
        "settings": {
            "deploys": args.rollback_count,
            "bake": args.rollback_bake,
            "client": "one thread, http.client keep-alive, an infer request every 10 ms",
            "server": "agent.demo.server (vigil demo's), probed every 2 s",
        },
        "client_to_known_good_ms": percentiles(col("client_to_known_good_ms"), (50, 95), 1),
        "client_wrong_for_ms": percentiles(col("client_wrong_for_ms"), (50, 95), 1),
        "client_wrong_answers": sum(r["client_wrong_answers"] for r in rows),
        "client_failed_requests": sum(r["client_failed_requests"] for r in rows),
        "vigil_request_to_rolled_back_ms": percentiles(
            col("vigil_request_to_rolled_back_ms"), (50, 95), 0
        ),
        "vigil_time_to_restore_ms": percentiles(col("vigil_time_to_restore_ms"), (50, 95), 0),
        "vigil_bake_to_failed_ms": percentiles(col("vigil_bake_to_failed_ms"), (50, 95), 0),
        "deploys": rows,
        "targets_met": {},
    }


def render(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        f"{s['deploys']} deploys of the broken version (each rolled back), bake {s['bake']}; "
        f"{s['client']}",
        "",
        "| per bad deploy (ms) | p50 | p95 | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in [
        ("client_to_known_good_ms", "**request to v1 serving again, seen by the client**"),
        ("client_wrong_for_ms", "wrong answers seen by the client: first to last"),
        ("vigil_request_to_rolled_back_ms", "request to `rolled_back`, as Vigil records it"),
        ("vigil_bake_to_failed_ms", "bake start to the gate's failure (Vigil)"),
        (
            "vigil_time_to_restore_ms",
            "gate's failure to v1's startup gate (Vigil's time to restore)",
        ),
    ]:
        p = r[key]
        lines.append(f"| {label} | {p['p50']} | {p['p95']} | {p['min']} | {p['max']} |")
    lines += [
        "",
        f"wrong answers the client got: {r['client_wrong_answers']} in all; failed requests "
        f"(no answer, the two restarts): {r['client_failed_requests']} in all",
    ]
    return "\n".join(lines)
