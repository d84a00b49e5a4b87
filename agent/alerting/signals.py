"""Turning a rule's source into observations: one value per label set, at one instant.

An observation is what a rule sees of one alert instance (a model, a disk, a GPU): its
labels, the subject they point at, its value (None when there is no data, which clears an
alert like a value that no longer passes) and the extra template fields that describe it.
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from agent.alerting.snapshot import SeriesReader, Snapshot
from agent.alerting.windowstats import PointsWindow, Window, time_to_full
from agent.config.alerting.catalog import subject_of
from agent.config.alerting.rules import Aggregation, Rule, SourceKind
from storage.records import Labels, ModelState
from storage.stats import percentile
from storage.units import format_duration

_duration = functools.lru_cache(maxsize=256)(format_duration)
"""A rule's window as text (``5m``): the same few values at every evaluation."""


@dataclass(slots=True)  # not frozen: __init__ then costs a quarter (one per instance and rule)
class Observation:
    """One alert instance's value at an evaluation (never changed once made).

    ``unknown``: the source has no reading of this instance yet (a model this agent has not
    probed since it started, or since a reload replaced its monitor). Its alert keeps the state
    it has: an alert loaded at start must not resolve on "not probed yet" (it resolved, and the
    probe's ``down`` a moment later opened a new occurrence, paged again under another id), and
    no alert starts on it.
    """

    labels: Mapping[str, str]
    subject: str
    value: float | None
    fields: Mapping[str, str] = field(default_factory=dict)
    unknown: bool = False


class Later(Mapping[str, str]):
    """Template fields worked out only when a summary is rendered (an alert that starts, fires
    or stays firing), not at every evaluation of every instance: ``since`` is a formatted
    duration per model, process and rule, each second."""

    __slots__ = ("_made", "_make")

    def __init__(self, make: Callable[[], dict[str, str]]) -> None:
        self._make = make
        self._made: dict[str, str] | None = None

    def _fields(self) -> dict[str, str]:
        if self._made is None:
            self._made = self._make()
        return self._made

    def __getitem__(self, key: str) -> str:
        return self._fields()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())


class RestartHistory:
    """Each process's restart counter over time, so a rule can count restarts in a window.

    Kept as runs of one value (first seen, last seen, counter): an evaluation every second
    over 24 hours noted 86,400 entries a process (about 10 MB), and each evaluation of
    ``process_restart_loop`` walked all of them. A count needs only where the counter changed,
    and the run in force at the window's start.
    """

    def __init__(self, keep_s: float = 86400.0) -> None:
        self.keep_ms = int(keep_s * 1000)
        self._seen: dict[str, deque[list[int]]] = {}

    def note(self, snapshot: Snapshot, now_ms: int) -> None:
        """Record every process's counter as of ``now_ms``."""
        for proc in snapshot.processes:
            seen = self._seen.get(proc.name)
            if seen is None:
                seen = self._seen[proc.name] = deque()
            if seen and seen[-1][2] == proc.restarts and seen[-1][1] <= now_ms:
                seen[-1][1] = now_ms  # the same value: the run goes on
            else:
                seen.append([now_ms, now_ms, proc.restarts])
            while seen and seen[0][1] < now_ms - self.keep_ms:
                seen.popleft()

    def within(self, process: str, since_ms: int) -> int:
        """Restarts counted since ``since_ms`` (a counter reset counts from zero)."""
        runs = self._seen.get(process)
        if runs is None or len(runs) < 2:
            return 0  # one value all along: no restart (the usual case)
        seen = [n for _, last, n in runs if last >= since_ms]
        if not seen:
            return 0
        total, low = 0, seen[0]
        for prev, cur in itertools.pairwise(seen):
            if cur < prev:  # the counter restarted (a new agent): count from its new start
                total += prev - low
                low = 0
        return total + seen[-1] - low


def observe(rule: Rule, snap: Snapshot, now_ms: int, restarts: RestartHistory) -> list[Observation]:
    """What ``rule`` sees now, one observation per alert instance."""
    kind = rule.kind
    if kind == SourceKind.SERIES:
        return _series(rule, snap, now_ms)
    if kind == SourceKind.MODEL_STATE:
        return [
            Observation(
                {"model": m.name},
                f"model:{m.name}",
                1.0 if m.state in rule.states else 0.0,
                Later(
                    functools.partial(_state_fields, "model", m.name, m.state, now_ms, m.since_ms)
                ),
                # A rule that names ``unknown`` (never answered a first probe) still sees it.
                unknown=m.state == ModelState.UNKNOWN and m.state not in rule.states,
            )
            for m in snap.models
        ]
    if kind == SourceKind.PROCESS_STATE:
        return [
            Observation(
                {"process": p.name},
                f"process:{p.name}",
                1.0 if p.state in rule.states else 0.0,
                Later(
                    functools.partial(
                        _state_fields,
                        "process",
                        p.name,
                        p.state,
                        now_ms,
                        p.since_ms,
                        p.detail or p.last_exit or "",
                    )
                ),
            )
            for p in snap.processes
        ]
    if kind == SourceKind.PROCESS_RESTARTS:
        since = now_ms - int(rule.window_s * 1000)
        window = _duration(rule.window_s)
        return [
            Observation(
                {"process": p.name},
                f"process:{p.name}",
                float(restarts.within(p.name, since)),
                {"process": p.name, "window": window},
            )
            for p in snap.processes
        ]
    if kind == SourceKind.INCIDENT:
        return [
            Observation(
                {"subject": i.subject, "kind": i.kind},
                i.subject,
                1.0,
                {"incident": str(i.id), "kind": i.kind, "cause": i.cause},
            )
            for i in snap.incidents
            if i.kind in rule.incident_kinds
        ]
    if kind == SourceKind.DRIFT:
        return [
            Observation(
                {"model": m.name, "group": group},
                f"model:{m.name}",
                1.0,
                Later(functools.partial(_drift_fields, m.name, group, now_ms, since)),
            )
            for m in snap.models
            for group, since in sorted(m.drift.items())
        ]
    return [_agent(rule, snap)]


def _agent(rule: Rule, snap: Snapshot) -> Observation:
    if rule.signal == "storage_failing":
        value = 0.0 if snap.agent.storage_ok else 1.0
        detail = snap.agent.storage_error
    else:
        value, detail = snap.agent.watchdog_late_s, ""
    return Observation({}, "agent", value, {"signal": rule.signal, "detail": detail})


def _ago(now_ms: int, since_ms: int) -> str:
    return f"{format_duration(max(0, now_ms - since_ms) / 1000)} ago"


def _state_fields(
    what: str, name: str, state: str, now_ms: int, since_ms: int, detail: str | None = None
) -> dict[str, str]:
    out = {what: name, "state": state, "since": _ago(now_ms, since_ms)}
    if detail is not None:
        out["detail"] = detail
    return out


def _drift_fields(model: str, group: str, now_ms: int, since_ms: int) -> dict[str, str]:
    return {"model": model, "group": group, "since": _ago(now_ms, since_ms)}


def _series(rule: Rule, snap: Snapshot, now_ms: int) -> list[Observation]:
    since = now_ms - int(rule.window_s * 1000)
    wanted = dict(rule.match)
    sets = [ls for ls in snap.series.label_sets(rule.series) if wanted.items() <= dict(ls).items()]
    window = _duration(rule.window_s)
    if not sets and rule.aggregation == Aggregation.ABSENT:
        return [Observation(wanted, subject_of(wanted), 1.0, {"series": rule.series})]
    out = []
    for labels in sets:
        win = window_of(snap.series, rule.series, labels, since, now_ms)
        value = aggregate(rule, win)
        other = rule.ratio_to or (
            rule.limit_series if rule.aggregation == Aggregation.TIME_TO_FULL else ""
        )
        if other and value is not None:
            limit = window_of(snap.series, other, labels, since, now_ms)
            if not limit.count:
                value = None
            elif rule.ratio_to:
                value = 100.0 * value / limit.last if limit.last else None
            else:
                value = time_to_full(win, limit.last)
        lbl = dict(labels)
        out.append(
            Observation(lbl, subject_of(lbl), value, {"series": rule.series, "window": window})
        )
    return out


_EMPTY = PointsWindow([])


def window_of(
    reader: SeriesReader, name: str, labels: Labels, since_ms: int, until_ms: int
) -> Window:
    """One series' samples in ``[since_ms, until_ms]``: from the reader's ``window`` where it
    has one (the agent's :class:`~agent.alerting.seriescache.SeriesCache`: no copy, running
    sums), else from its points."""
    window = getattr(reader, "window", None)
    if window is not None:
        found: Window | None = window(name, labels, since_ms, until_ms)
        return _EMPTY if found is None else found
    return PointsWindow(reader.points(name, labels, since_ms, until_ms))


def aggregate(rule: Rule, window: Window) -> float | None:
    """One value from a window's samples (None when there are too few)."""
    agg = rule.aggregation
    if agg == Aggregation.ABSENT:
        return 0.0 if window.count else 1.0
    if not window.count:
        return None
    # Plain Python, not numpy: importing numpy would cost every running agent ~11 MB
    # (bench/RESULTS.md, the lean agent). The mean and the slope come from exact running sums.
    if agg == Aggregation.AVG:
        return window.stats().mean()
    if agg == Aggregation.MAX:
        return max(window.values())
    if agg == Aggregation.MIN:
        return min(window.values())
    if agg in (Aggregation.LAST, Aggregation.TIME_TO_FULL):
        return window.last
    if agg in (Aggregation.P50, Aggregation.P95, Aggregation.P99):
        return percentile(sorted(window.values()), float(agg.value[1:]))
    return window.stats().slope_per_s()
