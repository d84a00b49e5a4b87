"""The fleet TUI at 200 to 1,000 agents: time for a full fleet refresh, and from a key press to
repaint.

Targets: a full refresh (every agent polled, the table updated and repainted) in at most 1 s
(issue 5 at 200 agents, issue 18 at 1,000), and a key press repainted in at most 50 ms, for
every key type (issue 18; issue 5 asked for 100 ms), while the fleet is being polled.

Method:

* **The agents.** Worker processes (``bench/fleetsim.py``, one per 250 agents by default, at
  least two) speak the agent API for N simulated agents on N loopback ports:
  ``/api/v1/summary`` (the compact fleet row, with an ``ETag``), and for older clients or
  ``--no-summary`` ``/api/v1/status`` (host, 4 models, 2 processes, ~80 resource series with
  8 GPUs), ``/api/v1/models`` (percentiles over 5m and 1h) and ``/api/v1/incidents``;
  realistic payloads (about 0.6 KB, 11 KB, 5 KB of JSON per agent). An agent's values change
  once per ``--sample`` seconds; bodies are rendered when asked for after a change, so the
  simulation's own cost stays low and the numbers measure the TUI.
* **The TUI.** The real :class:`tui.app.FleetApp` with N :class:`tui.view.fleetview.FleetMember`
  (one aiohttp client each), in Textual's headless mode at 200x60 cells.
  The app's ``_display`` (where each compositor frame goes to the terminal) is wrapped to also
  render the frame's terminal output (``render_segments``, skipped by the headless driver), so
  a frame costs what it would on a terminal, minus the write.
* **Full refresh.** With periodic polling off, ``r`` (refresh now) is triggered; the time runs
  until the end of the table update that includes the last agent's answer (the repaint that
  follows is a frame like those of the key test, whose cost is reported on its own). Repeated
  ``--refreshes`` times after one warm-up round (connections open).
* **Key to repaint.** With the fleet polled every second (the default ``--refresh``), keys are
  sent through the driver as a terminal would (``down``, ``s`` re-sorting all rows, ``S``,
  ``/`` and typed filter text, ``escape``), at random moments. Each key's latency runs from
  sending it to the first frame painted whose state shows the key's effect (checked inside the
  display hook, so it is the frame the person would see).

Exit status: 0 when both targets are met at the 95th percentile (overall and for each key
type; maxima are reported too), 1 when one is missed, 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchlib import BenchError, machine, percentiles, version
from fleetsim import TOKEN, SimFleet

REFRESH_TARGET_S = 1.0
KEY_TARGET_S = 0.050
"""Issue 18: at most 50 ms from a key to its repaint at 1,000 agents, for every key type (issue 5
asked for 100 ms at 200)."""


# --- the measurements -----------------------------------------------------------------------


class FrameProbe:
    """Wraps ``App._display``: renders each frame's terminal output and checks a predicate."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.frames = 0
        self.last_frame_at = 0.0
        self.render_s: list[float] = []
        self.waiting: tuple[Callable[[], bool], float] | None = None
        self.hit_at: float | None = None
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            original(screen, renderable)
            if renderable is None:
                return
            started = time.perf_counter()
            with contextlib.suppress(Exception):
                renderable.render_segments(app.console)
            now = time.perf_counter()
            self.render_s.append(now - started)
            self.frames += 1
            self.last_frame_at = now
            if self.waiting is not None and self.hit_at is None and self.waiting[0]():
                self.hit_at = now

        app._display = display

    async def until(
        self, predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "state"
    ) -> float:
        """Wait for the first frame painted while ``predicate`` holds; its perf_counter."""
        self.hit_at = None
        self.waiting = (predicate, time.perf_counter())
        deadline = time.perf_counter() + timeout_s
        try:
            while self.hit_at is None:
                if time.perf_counter() > deadline:
                    raise BenchError(
                        f"no frame showed the expected {what} in {timeout_s:g}s "
                        f"(focus: {self.app.focused!r}, screen: {self.app.screen!r})"
                    )
                await asyncio.sleep(0.001)
            return self.hit_at
        finally:
            self.waiting = None


async def measure(ports: list[int], refreshes: int, keys: int, refresh_s: float) -> dict[str, Any]:
    from textual import events

    from tui.app import FleetApp
    from tui.fleet import FleetEntry
    from tui.screens.fleet import FleetScreen
    from tui.view.fleetview import SORT_KEYS, FleetMember

    members = [
        FleetMember(FleetEntry(f"gpu-{i:03d}", f"http://127.0.0.1:{port}", TOKEN, timeout_s=3.0))
        for i, port in enumerate(ports)
    ]
    app = FleetApp(members, refresh_s=3600.0)
    result: dict[str, Any] = {}
    async with app.run_test(size=(200, 60)) as pilot:
        screen = app.screen
        assert isinstance(screen, FleetScreen)
        probe = FrameProbe(app)
        driver = app._driver
        assert driver is not None

        def all_answered_since(t0: float) -> bool:
            return all(m.finished_at is not None and m.finished_at >= t0 for m in members)

        # Warm-up: the first round (opened at mount) opens every connection.
        deadline = time.monotonic() + 60
        while not all(m.summary is not None and m.error is None for m in members):
            if time.monotonic() > deadline:
                bad = [m for m in members if m.summary is None or m.error is not None]
                raise BenchError(f"{len(bad)} agents never answered: {bad[0].error}")
            await asyncio.sleep(1.0)
            screen.action_refresh_now()  # retry those that timed out while all connected
        for _ in range(600):  # the warm-up's last polls end (each has a timeout)
            if not any(m.busy for m in members):
                break
            await asyncio.sleep(0.05)
        failures = sum(1 for m in members if m.error is not None)

        # 1. Full refreshes, with periodic polling off.
        refresh_times: list[float] = []
        poll_times: list[float] = []
        for _ in range(refreshes):
            await asyncio.sleep(0.2)
            t_mono = time.monotonic()
            render_base = screen.render_count
            screen.action_refresh_now()
            for _ in range(3000):
                last = max(m.finished_at or 0 for m in members)
                if (
                    all_answered_since(t_mono)
                    and screen.render_count > render_base
                    and screen.rendered_at >= last
                ):
                    break
                await asyncio.sleep(0.002)
            else:
                raise BenchError("a full refresh did not end in 6 s")
            refresh_times.append(screen.rendered_at - t_mono)
            poll_times.append(last - t_mono)
        result["refresh_s"] = percentiles(refresh_times, qs=(50, 95))
        result["all_polls_answered_s"] = percentiles(poll_times, qs=(50, 95))
        result["errors_during_refresh"] = sum(1 for m in members if m.error is not None) + failures

        # 2. Key to repaint, with the fleet polled every refresh_s meanwhile.
        screen.refresh_s = refresh_s
        screen.action_refresh_now()
        await asyncio.sleep(1.0)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        table = screen.table
        rng = random.Random(5)
        latencies: dict[str, list[float]] = {}

        def press(key: str, char: str | None = None) -> float:
            t0 = time.perf_counter()
            driver.send_message(events.Key(key, char))
            return t0

        async def one(name: str, key: str, char: str | None, done: Callable[[], bool]) -> None:
            await asyncio.sleep(rng.uniform(0.03, 0.25))
            t0 = press(key, char)
            hit = await probe.until(done, what=f"effect of {name!r}")
            latencies.setdefault(name, []).append(hit - t0)

        sent = 0
        while sent < keys:
            # The cursor follows its agent when a sort by a live value reorders the rows, so
            # "moved" means: another agent is under it.
            if table.cursor_row >= table.row_count - 1:
                table.move_cursor(0)
            was = table.selected_key
            await one("down", "down", None, lambda was=was: table.selected_key != was)
            want = SORT_KEYS[(SORT_KEYS.index(screen.sort_key) + 1) % len(SORT_KEYS)]
            await one("s (sort)", "s", "s", lambda want=want: screen.sort_key == want)
            rev = not screen.sort_reverse
            await one("S (reverse)", "S", "S", lambda rev=rev: screen.sort_reverse == rev)
            await one("/ (filter)", "slash", "/", lambda: screen.query_one("#filter").has_focus)
            typed = ""
            for ch in "gpu-1":
                typed += ch
                key = "minus" if ch == "-" else ch
                await one(
                    "typing a filter", key, ch, lambda typed=typed: screen.filter_text == typed
                )
            await one("escape (clear)", "escape", None, lambda: screen.filter_text == "")
            sent += 10
        result["tui_cpu_share"] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        all_keys = [v for vs in latencies.values() for v in vs]
        result["key_s"] = percentiles(all_keys, qs=(50, 95))
        result["key_s_by_key"] = {k: percentiles(v, qs=(50, 95)) for k, v in latencies.items()}
        result["frame_render_s"] = percentiles(probe.render_s, qs=(50, 95))
        result["rows"] = len(table.keys())
        result["polls_total"] = sum(m.polls for m in members)
        await pilot.press("q")
    return result


def fmt_ms(p: dict[str, float]) -> str:
    return (
        f"p50 {p['p50'] * 1000:.1f} ms, p95 {p['p95'] * 1000:.1f} ms, "
        f"max {p['max'] * 1000:.1f} ms (n={p['n']})"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=200, help="simulated agents (default 200)")
    p.add_argument("--refreshes", type=int, default=20, help="full refreshes timed (default 20)")
    p.add_argument("--keys", type=int, default=100, help="key presses timed (default 100)")
    p.add_argument(
        "--refresh", type=float, default=1.0, help="poll period during the key test (default 1s)"
    )
    p.add_argument(
        "--workers",
        type=int,
        help="processes serving the simulated agents (default: one per 250 agents, at least 2)",
    )
    p.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="how often each simulated agent's values change (default 1s, as an agent samples)",
    )
    p.add_argument(
        "--no-summary",
        action="store_true",
        help="the agents do not serve /api/v1/summary (older agents: status, models, incidents)",
    )
    p.add_argument("--profile", metavar="FILE", help="write a cProfile of the TUI's run to FILE")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.agents < 1 or args.refreshes < 1 or args.keys < 1 or args.refresh <= 0:
        print(
            "tui_fleet: --agents, --refreshes, --keys and --refresh must be positive",
            file=sys.stderr,
        )
        return 2
    if args.sample <= 0 or (args.workers is not None and args.workers < 1):
        print("tui_fleet: --sample and --workers must be positive", file=sys.stderr)
        return 2
    workers = args.workers or max(2, -(-args.agents // 250))
    info = machine(textual=version("textual"), aiohttp=version("aiohttp"), rich=version("rich"))
    profiler = cProfile.Profile() if args.profile else None
    try:
        with SimFleet(
            args.agents, workers, args.seed, args.sample, summary_route=not args.no_summary
        ) as fleet:
            if profiler is not None:
                profiler.enable()
            result = asyncio.run(measure(fleet.ports, args.refreshes, args.keys, args.refresh))
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
    except (BenchError, RuntimeError) as exc:
        print(f"tui_fleet: {exc}", file=sys.stderr)
        return 2
    served = fleet.stats.get("served", {})
    summaries = served.get("/api/v1/summary", 0)
    result = {
        "machine": info,
        "agents": args.agents,
        "workers": workers,
        "sample_s": args.sample,
        "summary_route": not args.no_summary,
        **result,
        "served": served,
        "not_modified_share": round(served.get("304", 0) / summaries, 3) if summaries else None,
        "sim_cpu_s": fleet.stats.get("cpu_s"),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    # Judged at the 95th percentile (the maxima are printed too): one stall of a shared
    # machine should not decide, a regular one should. Every key type on its own, too.
    refresh_ok = result["refresh_s"]["p95"] <= REFRESH_TARGET_S
    key_ok = result["key_s"]["p95"] <= KEY_TARGET_S and all(
        p["p95"] <= KEY_TARGET_S for p in result["key_s_by_key"].values()
    )
    result["targets"] = {"refresh_p95_le_1s": refresh_ok, "key_p95_le_50ms_every_key": key_ok}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, args)
    return 0 if refresh_ok and key_ok else 1


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    """The result as text."""
    m = result["machine"]
    print(
        f"machine: {m['cpus']} x {m['cpu_model']}, {m['os']}, python {m['python']}, "
        f"textual {m.get('textual')}, aiohttp {m.get('aiohttp')}, "
        f"load {m['loadavg_at_start']} at start, {result['loadavg_at_end']} at end"
    )
    route = "served" if result["summary_route"] else "not served (older agents)"
    print(
        f"agents: {args.agents} simulated ({result['workers']} worker processes, values change "
        f"every {args.sample:g}s, /api/v1/summary {route}), {result['rows']} rows"
    )
    print(f"full refresh (poll all + table update): {fmt_ms(result['refresh_s'])}")
    print(f"  of which the slowest answer arrived:   {fmt_ms(result['all_polls_answered_s'])}")
    print(f"key press to repaint (polling every {args.refresh:g}s): {fmt_ms(result['key_s'])}")
    for key, p in result["key_s_by_key"].items():
        print(f"  {key:<18} {fmt_ms(p)}")
    print(f"frame output render: {fmt_ms(result['frame_render_s'])}")
    print(f"TUI CPU while polling every {args.refresh:g}s: {result['tui_cpu_share']:.0%} of a core")
    share = result["not_modified_share"]
    print(
        f"errors: {result['errors_during_refresh']}, polls: {result['polls_total']}, "
        f"served: {result['served']}"
        + (f" ({share:.0%} of summaries 304)" if share is not None else "")
        + f", simulation CPU: {result['sim_cpu_s']} s"
    )
    targets = result["targets"]
    print(
        f"targets (p95): refresh <= 1 s: {'met' if targets['refresh_p95_le_1s'] else 'MISSED'}; "
        "key to repaint <= 50 ms, every key: "
        f"{'met' if targets['key_p95_le_50ms_every_key'] else 'MISSED'}"
    )


if __name__ == "__main__":
    sys.exit(main())
