"""Alert noise and delivery latency (issue 15): Vigil's notifications against a naive rule.

Everything runs through the real alert pipeline the daemon runs, on one asyncio loop, each
evaluation ``engine.evaluate -> notifier.step -> Sender.add``: the :class:`AlertEngine`, the
:class:`Notifier` (silences, maintenance, dependency folding, the router's groups), the durable
outbox on a real :class:`~storage.writer.Writer` (a temp SQLite file) and the real
:class:`~agent.alerting.outbox.Sender` running its delivery loop, which POSTs through the real
signed webhook channel to an aiohttp receiver on loopback in this process. The receiver checks
every signature (``webhook.verify``) and counts what it got.

**Noise** (``--hour``): one scripted hour replayed on an accelerated clock (an evaluation every
``--eval-s`` simulated seconds; the next evaluation waits until the webhook received everything
the previous one sent, so nothing is lost to the acceleration). The built-in rules plus one
custom rule, the routes at Alertmanager's default timers (``group_wait`` 30 s,
``group_interval`` 5 m, ``repeat_interval`` 4 h):

* **flap**: ``gpu.temperature_c`` of GPU 0 is 95 for 30 s, then 50 for 30 s, all hour, under a
  rule ``> 85`` with no ``for`` (``gpu_hot``);
* **outage**: at 10:00 the supervised process ``srv`` crashes (``backoff``, a
  ``process_exited`` incident) and its three models ``a b c`` go down at 10:05 (``model_down``
  incidents whose root is the process's); all is back at 12:00;
* **maintenance**: a one-off window ``upgrade`` from 35:00 to 50:00 over ``process:upg`` (which
  serves models ``d e f``), with start and end notices; during it ``upg`` is stopped twice for
  two minutes (37:00 and 44:00), its models down with it.

The **naive rule** is what a cron check mailing on a threshold sends: the same rules evaluated
at the same instants on the same state, without ``for``, hysteresis, grouping, folding, flap
control or maintenance: one notification each time an alert instance's condition goes from
false to true. (Its recoveries are counted apart, as ``naive_recoveries``.)

**Latency** (``--trials``): in real time, each trial is one alert instance of a rule
``probe.e2e_ms > 1000`` with ``for = --for-s``: its model's latency crosses the threshold at a
random instant (trials start ``--spacing-s`` apart, so several are pending at once), evaluated
every ``--interval-s`` (default 0.5 s; the agent's own default ``evaluate_interval`` is 5 s) with
``now`` read from the wall clock at each tick, as the agent's job does (``--scheduled-now``: the
tick's scheduled time instead). The route groups by model with ``group_wait = 0``
(a group wait is a deliberate delay, not latency). Latency = the webhook's receipt (``time.time()``
in its handler) - the crossing - ``for``, split into *decided* (the engine's firing transition -
crossing - ``for``: the evaluation tick's quantization) and *delivered* (receipt - decision: the
outbox write on the writer thread, the sender's wake-up, the signed POST). The channel keeps
its default token bucket (1/s, burst 5).

Targets: the flap at most 2 notifications where the naive rule sends 60 or more; the outage one
grouped message (plus its resolution); nothing but the window's notices during maintenance;
latency p99 <= 1 s beyond ``for``.

Run by hand from the repo root: ``.venv/bin/python bench/alert_noise.py [--json]``. Exit code:
0 targets met, 1 missed, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from benchlib import BenchError, machine, percentiles, version

from agent.alerting import (
    Aggregation,
    AlertEngine,
    MaintenanceCalendar,
    MaintenanceWindow,
    NotificationRequest,
    Notifier,
    Route,
    Rule,
    SilenceBook,
    Snapshot,
    SourceKind,
    effective_rules,
)
from agent.alerting.channels import WebhookSettings
from agent.alerting.channels.base import wall_ms
from agent.alerting.channels.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookChannel,
    verify,
)
from agent.alerting.outbox import Sender
from agent.alerting.outbox_store import OutboxStore
from agent.alerting.signals import RestartHistory, observe
from storage.records import Event, Incident, Labels, ModelStatus, ProcessStatus
from storage.writer import Writer

EXIT_OK, EXIT_MISSED, EXIT_ERROR = 0, 1, 2
S = 1000
MIN = 60 * S
SECRET = "bench-shared-secret"
DELIVERY_TIMEOUT_S = 15.0
"""How long (real seconds) the replay waits for one evaluation's notifications to arrive."""

# --- the receiver ----------------------------------------------------------------------------


@dataclass
class Received:
    at_s: float
    """``time.time()`` when the handler ran."""
    doc: dict[str, Any]


@dataclass
class Receiver:
    """A signed-webhook receiver on loopback: every POST checked, kept and counted."""

    got: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.time()
        ok = verify(
            SECRET,
            body,
            timestamp=request.headers.get(TIMESTAMP_HEADER, ""),
            signature=request.headers.get(SIGNATURE_HEADER, ""),
            now_s=at,
        )
        if not ok:
            self.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        self.got.append(Received(at, json.loads(body)))
        self._arrived.set()
        return web.Response(text="ok")

    def ids(self) -> set[str]:
        return {r.doc["id"] for r in self.got}

    async def wait_for(self, ids: set[str], timeout_s: float) -> None:
        """Until every id in ``ids`` arrived (woken by each arrival, no polling)."""
        deadline = time.monotonic() + timeout_s
        while not ids <= self.ids():
            self._arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                missing = len(ids - self.ids())
                raise BenchError(f"{missing} notification(s) not delivered in {timeout_s:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)


# --- the pipeline ----------------------------------------------------------------------------


class Pipeline:
    """Engine, notifier, outbox and sender as the daemon wires them, one webhook channel."""

    def __init__(
        self,
        tmp: Path,
        rules: Iterable[Rule],
        routes: Sequence[Route],
        url: str,
        *,
        clock: Callable[[], int] = wall_ms,
        windows: Iterable[MaintenanceWindow] = (),
    ) -> None:
        self.writer = Writer(tmp / "vigil.db")  # the daemon's defaults (1 s flush interval)
        self.writer.start()
        self.events: list[Event] = []
        self.engine = AlertEngine(rules, self.writer, self.emit)
        self.notifier = Notifier(
            routes, SilenceBook(self.writer, self.emit), MaintenanceCalendar(windows, self.emit)
        )
        # The channel stamps its signature with the wall clock (the receiver checks it against
        # its own); the sender's schedule runs on ``clock``, the accelerated one in the replay.
        channel = WebhookChannel(WebhookSettings(name="ops", url=url, secret=SECRET))
        self.sender = Sender(OutboxStore(self.writer), [channel], clock=clock)
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bench-alerts")

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.writer.submit_one(event)

    def start(self) -> None:
        self._task = asyncio.create_task(self.sender.run(), name="bench-sender")

    async def tick(self, now_ms: int, snap: Snapshot) -> list[NotificationRequest]:
        """One evaluation, as the daemon's alerting job (``AlertingJob.evaluate``) runs it: the
        rules on a thread of their own, the notifier and ``Sender.add`` on the loop."""
        loop = asyncio.get_running_loop()
        transitions = await loop.run_in_executor(self._pool, self.engine.evaluate, now_ms, snap)
        requests = self.notifier.step(now_ms, transitions, self.engine, snap)
        self.sender.add(requests)
        return requests

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sender.close()
        self._pool.shutdown(wait=True)
        self.writer.close()


# --- the scripted hour -----------------------------------------------------------------------

FLAP_RULE = Rule(
    name="gpu_hot",
    kind=SourceKind.SERIES,
    series="gpu.temperature_c",
    aggregation=Aggregation.LAST,
    window_s=10.0,
    op=">",
    threshold=85.0,
    summary="GPU {gpu} at {value:.0f} C > {threshold:.0f} C",
)
OUTAGE = ("srv", ("a", "b", "c"), 10 * MIN, 12 * MIN)
WINDOW_START, WINDOW_END = 35 * MIN, 50 * MIN
UPGRADE = ("upg", ("d", "e", "f"), ((37 * MIN, 39 * MIN), (44 * MIN, 46 * MIN)))
MODEL_DELAY = 5 * S
"""How long after their process's exit its models are seen down."""


class FnSeries:
    """A series reader over functions of time: ``{(name, labels): value_at(ms)}``."""

    def __init__(self, series: dict[tuple[str, Labels], Callable[[int], float]]) -> None:
        self.series = series

    def label_sets(self, name: str) -> list[Labels]:
        return [labels for n, labels in self.series if n == name]

    def points(
        self, name: str, labels: Labels, since_ms: int, until_ms: int
    ) -> list[tuple[int, float]]:
        fn = self.series.get((name, labels))
        return [(until_ms, fn(until_ms))] if fn is not None else []


def _down(
    proc: str, models: tuple[str, ...], t: int, t0: int, since: int, first_id: int, restarts: int
) -> tuple[ProcessStatus, list[ModelStatus], list[Incident]]:
    """A process down since ``since`` (relative ms) with its models down ``MODEL_DELAY`` later."""
    status = ProcessStatus(
        name=proc, state="backoff", since_ms=t0 + since, restarts=restarts, last_exit="exit 1"
    )
    models_down = t >= since + MODEL_DELAY
    ms = [
        ModelStatus(
            name=m,
            protocol="openai",
            url="http://127.0.0.1:1",
            state="down" if models_down else "up",
            since_ms=t0 + (since + MODEL_DELAY if models_down else 0),
        )
        for m in models
    ]
    root = Incident(
        first_id, f"process:{proc}", "process_exited", "warning", "exit 1", "open", t0 + since
    )
    incs = [root]
    if models_down:
        incs += [
            Incident(
                first_id + 1 + i,
                f"model:{m}",
                "model_down",
                "critical",
                "connection refused",
                "open",
                t0 + since + MODEL_DELAY,
                root_id=first_id,
            )
            for i, m in enumerate(models)
        ]
    return status, ms, incs


def _up(
    proc: str, models: tuple[str, ...], t0: int, restarts: int
) -> tuple[ProcessStatus, list[ModelStatus]]:
    return (
        ProcessStatus(name=proc, state="running", since_ms=t0, restarts=restarts),
        [
            ModelStatus(
                name=m, protocol="openai", url="http://127.0.0.1:1", state="up", since_ms=t0
            )
            for m in models
        ],
    )


def flap_value(t: int) -> float:
    """95 C for 30 s, then 50 C for 30 s: a crossing every 30 s."""
    return 95.0 if (t // (30 * S)) % 2 == 0 else 50.0


def hour_snapshot(t: int, t0: int) -> Snapshot:
    """The scripted state at ``t`` ms into the hour."""
    series = FnSeries({("gpu.temperature_c", (("gpu", "0"),)): lambda ms: flap_value(ms - t0)})
    procs: list[ProcessStatus] = []
    models: list[ModelStatus] = []
    incidents: list[Incident] = []
    name, names, start, end = OUTAGE
    if start <= t < end:
        p, ms, incs = _down(name, names, t, t0, start, 1, 0)
        procs.append(p)
        models += ms
        incidents += incs
    else:
        p, ms = _up(name, names, t0, 1 if t >= end else 0)
        procs.append(p)
        models += ms
    name, names, stops = UPGRADE
    restarts = sum(1 for _, back in stops if t >= back)
    for i, (down, back) in enumerate(stops):
        if down <= t < back:
            p, ms, incs = _down(name, names, t, t0, down, 10 + 10 * i, restarts)
            procs.append(p)
            models += ms
            incidents += incs
            break
    else:
        p, ms = _up(name, names, t0, restarts)
        procs.append(p)
        models += ms
    links = {m: OUTAGE[0] for m in OUTAGE[1]} | {m: UPGRADE[0] for m in UPGRADE[1]}
    return Snapshot(
        models=tuple(models),
        processes=tuple(procs),
        incidents=tuple(incidents),
        links=links,
        series=series,
    )


def scenario_of(labels: dict[str, str]) -> str:
    """Which of the hour's scenarios an alert instance belongs to."""
    if "gpu" in labels:
        return "flap"
    if labels.get("process") == OUTAGE[0] or labels.get("model") in OUTAGE[1]:
        return "outage"
    if labels.get("process") == UPGRADE[0] or labels.get("model") in UPGRADE[1]:
        return "maintenance"
    if labels.get("subject", "").split(":", 1)[-1] in (OUTAGE[0], *OUTAGE[1]):
        return "outage"
    if labels.get("subject", "").split(":", 1)[-1] in (UPGRADE[0], *UPGRADE[1]):
        return "maintenance"
    return "other"


class NaiveRule:
    """The same rules without any noise control: one notification per false -> true edge."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = rules
        self.restarts = RestartHistory()
        self.state: dict[tuple[str, Labels], bool] = {}
        self.fires: Counter[str] = Counter()
        self.recoveries: Counter[str] = Counter()

    def step(self, now_ms: int, snap: Snapshot) -> None:
        self.restarts.note(snap, now_ms)
        for rule in self.rules:
            for obs in observe(rule, snap, now_ms, self.restarts):
                labels = dict(obs.labels)
                key = (rule.name, tuple(sorted(labels.items())))
                on = obs.value is not None and rule.passes(obs.value, rule.threshold)
                was = self.state.get(key, False)
                if on and not was:
                    self.fires[scenario_of({**labels, "subject": obs.subject})] += 1
                elif was and not on:
                    self.recoveries[scenario_of({**labels, "subject": obs.subject})] += 1
                self.state[key] = on


def _doc_scenario(doc: dict[str, Any]) -> str:
    if str(doc["kind"]).startswith("maintenance"):
        return "maintenance"
    found = {scenario_of(dict(a["labels"])) for a in doc["alerts"]}
    return found.pop() if len(found) == 1 else "mixed:" + ",".join(sorted(found))


async def run_hour(tmp: Path, eval_s: float, hour_s: int, group_wait_s: float) -> dict[str, Any]:
    """Replay the scripted hour; count notifications per scenario, Vigil's and the naive ones."""
    receiver = Receiver()
    await receiver.start()
    t0 = (wall_ms() // MIN) * MIN
    now = [t0]
    rules, errors = effective_rules([FLAP_RULE])
    if errors:
        raise BenchError(f"rules do not validate: {', '.join(map(str, errors))}")
    window = MaintenanceWindow(
        name="upgrade",
        duration_s=(WINDOW_END - WINDOW_START) / S,
        starts_ms=t0 + WINDOW_START,
        subjects=(f"process:{UPGRADE[0]}",),
        notify=True,
        comment="vllm upgrade",
    )
    pipe = Pipeline(
        tmp,
        rules,
        [Route(channel="ops", group_wait_s=group_wait_s)],
        receiver.url,
        clock=lambda: now[0],
        windows=[window],
    )
    naive = NaiveRule(rules)
    pipe.start()
    sent: set[str] = set()
    started = time.monotonic()
    evaluations = 0
    try:
        step = int(eval_s * S)
        for t in range(0, hour_s * S, step):
            now[0] = t0 + t
            snap = hour_snapshot(t, t0)
            naive.step(now[0], snap)
            sent |= {r.notification_id for r in await pipe.tick(now[0], snap)}
            evaluations += 1
            await receiver.wait_for(sent, DELIVERY_TIMEOUT_S)
    finally:
        await pipe.close()
        await receiver.stop()
    took = time.monotonic() - started
    vigil: dict[str, Counter[str]] = {}
    for r in receiver.got:
        vigil.setdefault(_doc_scenario(r.doc), Counter())[str(r.doc["kind"])] += 1
    recorded: Counter[str] = Counter()
    for e in pipe.events:
        if e.kind == "alert.firing":
            recorded[scenario_of(dict(e.data["labels"]))] += 1
    rows = []
    for name in ("flap", "outage", "maintenance"):
        kinds = vigil.get(name, Counter())
        notices = kinds["maintenance_start"] + kinds["maintenance_end"]
        rows.append(
            {
                "scenario": name,
                "vigil": sum(kinds.values()) - notices,
                "vigil_kinds": dict(kinds),
                "vigil_notices": notices,
                "naive": naive.fires[name],
                "naive_recoveries": naive.recoveries[name],
                "recorded_firings": recorded[name],
            }
        )
    return {
        "rows": rows,
        "unattributed": {
            k: dict(v) for k, v in vigil.items() if k not in ("flap", "outage", "maintenance")
        },
        "messages": [
            {
                "t_s": round((r.doc["created_ms"] - t0) / S, 1),
                "kind": r.doc["kind"],
                "title": r.doc["title"],
            }
            for r in receiver.got
        ],
        "received": len(receiver.got),
        "distinct_ids": len(receiver.ids()),
        "bad_signatures": receiver.bad_signatures,
        "evaluations": evaluations,
        "replay_wall_s": round(took, 2),
    }


# --- latency ---------------------------------------------------------------------------------


class CrossingSeries:
    """``probe.e2e_ms`` per model: 200 ms until the model's crossing time, 5000 ms after."""

    def __init__(self, crossings: dict[str, int]) -> None:
        self.crossings = crossings
        self.sets = {m: (("model", m),) for m in crossings}

    def label_sets(self, name: str) -> list[Labels]:
        return list(self.sets.values()) if name == "probe.e2e_ms" else []

    def points(
        self, name: str, labels: Labels, since_ms: int, until_ms: int
    ) -> list[tuple[int, float]]:
        at = self.crossings[dict(labels)["model"]]
        return [(until_ms, 5000.0 if until_ms >= at else 200.0)]


async def run_latency(
    tmp: Path,
    trials: int,
    for_s: float,
    interval_s: float,
    spacing_s: float,
    seed: int,
    *,
    scheduled_now: bool = False,
) -> dict[str, Any]:
    """Real-time condition -> webhook latency, ``trials`` alert instances crossing at random
    instants while the engine is evaluated every ``interval_s``.

    Each evaluation's ``now_ms`` is the wall clock read at the tick, or with ``scheduled_now``
    the tick's scheduled time (the wall clock at the start + n intervals), which keeps the
    engine's ``for`` arithmetic free of the tick's own jitter.
    """
    receiver = Receiver()
    await receiver.start()
    rng = random.Random(seed)
    rule = Rule(
        name="slow_e2e",
        kind=SourceKind.SERIES,
        series="probe.e2e_ms",
        aggregation=Aggregation.LAST,
        window_s=5.0,
        op=">",
        threshold=1000.0,
        for_s=for_s,
        summary="{model}: e2e {value:.0f} ms > {threshold:.0f} ms",
    )
    route = Route(channel="ops", group_by=("alertname", "model"), group_wait_s=0.0)
    lead_ms = 1000
    begin = wall_ms() + lead_ms
    crossings = {
        f"m{i:03d}": begin + int(i * spacing_s * S) + rng.randrange(int(interval_s * S) or 1)
        for i in range(trials)
    }
    snap = Snapshot(series=CrossingSeries(crossings))
    pipe = Pipeline(tmp, [rule], [route], receiver.url)
    pipe.start()
    late: list[float] = []
    ticks = 0
    try:
        start = time.monotonic()
        start_wall = wall_ms()
        deadline = start + lead_ms / S + trials * spacing_s + for_s + 30
        want = set(crossings)
        while time.monotonic() < deadline:
            fired = {
                dict(a["labels"])["model"]
                for r in receiver.got
                if r.doc["kind"] == "firing"
                for a in r.doc["alerts"]
            }
            if want <= fired:
                break
            t = time.monotonic()
            if ticks:
                late.append(max(0.0, t - (start + ticks * interval_s)) * 1000)
            await pipe.tick(
                start_wall + int(ticks * interval_s * S) if scheduled_now else wall_ms(), snap
            )
            ticks += 1
            await asyncio.sleep(max(0.0, start + ticks * interval_s - time.monotonic()))
        else:
            raise BenchError("not every trial was delivered before the deadline")
    finally:
        await pipe.close()
        await receiver.stop()
    decided = {
        dict(e.data["labels"])["model"]: e.ts_ms for e in pipe.events if e.kind == "alert.firing"
    }
    first_receipt: dict[str, float] = {}
    for r in receiver.got:
        if r.doc["kind"] != "firing":
            continue
        for a in r.doc["alerts"]:
            first_receipt.setdefault(dict(a["labels"])["model"], r.at_s)
    total: list[float] = []
    decide: list[float] = []
    deliver: list[float] = []
    for m, at in crossings.items():
        total.append(first_receipt[m] * S - at - for_s * S)
        decide.append(decided[m] - at - for_s * S)
        deliver.append(first_receipt[m] * S - decided[m])
    return {
        "trials": trials,
        "for_s": for_s,
        "interval_s": interval_s,
        "spacing_s": spacing_s,
        "now": "scheduled tick time" if scheduled_now else "wall clock at the tick",
        "beyond_for_ms": percentiles(total, (50, 95, 99), digits=1),
        "decided_ms": percentiles(decide, (50, 95, 99), digits=1),
        "delivered_ms": percentiles(deliver, (50, 95, 99), digits=1),
        "tick_late_ms": percentiles(late, (50, 99), digits=1),
        "extra_tick": sum(1 for d in decide if d >= interval_s * S),
        "per_trial_ms": [
            {"model": m, "beyond_for": round(t, 1), "decided": d, "delivered": round(v, 1)}
            for m, t, d, v in zip(crossings, total, decide, deliver, strict=True)
        ],
        "evaluations": ticks,
        "received": len(receiver.got),
        "bad_signatures": receiver.bad_signatures,
    }


# --- the report ------------------------------------------------------------------------------

NOISE_TARGETS = {"flap": 2, "outage": 2, "maintenance": 0}
"""At most this many alert notifications (the window's own notices apart)."""


def judge(result: dict[str, Any]) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for row in result.get("hour", {}).get("rows", []):
        name = row["scenario"]
        ok = row["vigil"] <= NOISE_TARGETS[name]
        if name == "flap":
            ok = ok and row["naive"] >= 60
        if name == "outage":
            ok = ok and row["vigil_kinds"].get("firing", 0) == 1
        met[name] = ok
    lat = result.get("latency")
    if lat:
        met["latency"] = lat["beyond_for_ms"]["p99"] <= 1000
    return met


def render(result: dict[str, Any]) -> str:
    lines = []
    hour = result.get("hour")
    if hour:
        lines += [
            f"Scripted hour ({hour['evaluations']} evaluations every "
            f"{result['settings']['eval_s']:g} s, replayed in {hour['replay_wall_s']:.1f} s; "
            f"{hour['received']} webhooks received, {hour['bad_signatures']} bad signatures)",
            "",
            f"{'scenario':<12} {'Vigil':>6} {'what':<34} {'naive':>6} {'(+recoveries)':>13} "
            f"{'recorded firings':>17}",
        ]
        for row in hour["rows"]:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(row["vigil_kinds"].items()))
            lines.append(
                f"{row['scenario']:<12} {row['vigil']:>6} {kinds or '-':<34} {row['naive']:>6} "
                f"{'+' + str(row['naive_recoveries']):>13} {row['recorded_firings']:>17}"
            )
        if hour["unattributed"]:
            lines.append(f"unattributed: {hour['unattributed']}")
        lines += ["", "Messages:"]
        lines += [f"  {m['t_s']:>7.0f} s  {m['kind']:<18} {m['title']}" for m in hour["messages"]]
    lat = result.get("latency")
    if lat:

        def row(name: str, p: dict[str, float]) -> str:
            return (
                f"  {name:<26} p50 {p['p50']:>7.1f}  p95 {p['p95']:>7.1f}  p99 {p['p99']:>7.1f}"
                f"  max {p['max']:>7.1f} ms"
            )

        lines += [
            "",
            f"Condition -> webhook latency beyond for ({lat['trials']} trials, for "
            f"{lat['for_s']:g} s, evaluated every {lat['interval_s']:g} s, now = {lat['now']}, "
            f"trials {lat['spacing_s']:g} s apart, real time):",
            row("crossing -> received - for", lat["beyond_for_ms"]),
            row("  crossing -> firing - for", lat["decided_ms"]),
            row("  firing -> received", lat["delivered_ms"]),
            f"  trials fired one evaluation later than for needs: {lat['extra_tick']} of "
            f"{lat['trials']}",
            f"  evaluation tick lateness p50 {lat['tick_late_ms'].get('p50', 0):.1f} ms, "
            f"p99 {lat['tick_late_ms'].get('p99', 0):.1f} ms",
        ]
    met = result["targets_met"]
    lines += [
        "",
        "Targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()),
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/alert_noise.py",
        description="Alert notifications against a naive threshold rule, and condition -> "
        "webhook latency, through Vigil's real alert pipeline (issue 15).",
    )
    p.add_argument(
        "--eval-s",
        type=float,
        default=5.0,
        help="replay: simulated seconds between evaluations (default 5, the agent's "
        "[alerting] evaluate_interval)",
    )
    p.add_argument(
        "--hour-s", type=int, default=3600, help="replay length, simulated s (default 3600)"
    )
    p.add_argument(
        "--group-wait-s",
        type=float,
        default=30.0,
        help="replay: the route's group_wait (default 30, Alertmanager's)",
    )
    p.add_argument("--trials", type=int, default=60, help="latency trials (default 60; 0: skip)")
    p.add_argument("--for-s", type=float, default=3.0, help="the latency rule's for (default 3)")
    p.add_argument(
        "--interval-s", type=float, default=0.5, help="latency: evaluation interval (default 0.5)"
    )
    p.add_argument(
        "--spacing-s", type=float, default=1.0, help="latency: between trial starts (default 1)"
    )
    p.add_argument(
        "--scheduled-now",
        action="store_true",
        help="latency: evaluate at each tick's scheduled time, not the wall clock read then",
    )
    p.add_argument("--no-hour", action="store_true", help="skip the replay")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    return p


async def run(args: argparse.Namespace, tmp: Path, result: dict[str, Any]) -> None:
    if not args.no_hour:
        (tmp / "hour").mkdir()
        result["hour"] = await run_hour(tmp / "hour", args.eval_s, args.hour_s, args.group_wait_s)
    if args.trials > 0:
        (tmp / "latency").mkdir()
        result["latency"] = await run_latency(
            tmp / "latency",
            args.trials,
            args.for_s,
            args.interval_s,
            args.spacing_s,
            args.seed,
            scheduled_now=args.scheduled_now,
        )


def main(argv_: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table or JSON."""
    args = build_parser().parse_args(argv_)
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-alerts-"))
    result: dict[str, Any] = {
        "machine": machine(aiohttp=version("aiohttp")),
        "command": "bench/alert_noise.py " + " ".join(argv_ if argv_ is not None else sys.argv[1:]),
        "settings": {
            "eval_s": args.eval_s,
            "hour_s": args.hour_s,
            "route": f"one webhook route, group_wait {args.group_wait_s:g} s, group_interval "
            "5 m, repeat_interval 4 h",
            "flap_window_s": 600,
            "flap_transitions": 4,
            "seed": args.seed,
        },
    }
    started = time.monotonic()
    try:
        asyncio.run(run(args, tmp, result))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["took_s"] = round(time.monotonic() - started, 1)
    result["targets_met"] = judge(result)
    out: IO[str] = sys.stdout
    if args.json:
        json.dump(result, out, indent=2)
        out.write("\n")
    else:
        print(render(result), file=out)
    return EXIT_OK if all(result["targets_met"].values()) else EXIT_MISSED


if __name__ == "__main__":
    sys.exit(main())
