"""Turning a rule's source into observations: one value per label set, at one instant.

An observation is what a rule sees of one alert instance (a model, a disk, a GPU): its
labels, the subject they point at, its value (None when there is no data, which clears an
alert like a value that no longer passes) and the extra template fields that describe it.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.alerting.snapshot import Snapshot
from agent.config.alerting.catalog import subject_of
from agent.config.alerting.rules import Aggregation, Rule, SourceKind
from storage.records import ModelState
from storage.stats import percentile
from storage.units import format_duration


@dataclass(frozen=True, slots=True)
class Observation:
    """One alert instance's value at an evaluation.

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


class RestartHistory:
    """Each process's restart counter over time, so a rule can count restarts in a window."""

    def __init__(self, keep_s: float = 86400.0) -> None:
        self.keep_ms = int(keep_s * 1000)
        self._seen: dict[str, deque[tuple[int, int]]] = {}

    def note(self, snapshot: Snapshot, now_ms: int) -> None:
        """Record every process's counter as of ``now_ms``."""
        for proc in snapshot.processes:
            seen = self._seen.setdefault(proc.name, deque())
            seen.append((now_ms, proc.restarts))
            while seen and seen[0][0] < now_ms - self.keep_ms:
                seen.popleft()

    def within(self, process: str, since_ms: int) -> int:
        """Restarts counted since ``since_ms`` (a counter reset counts from zero)."""
        seen = [n for ts, n in self._seen.get(process, ()) if ts >= since_ms]
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
                {"model": m.name, "state": m.state, "since": _ago(now_ms, m.since_ms)},
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
                {
                    "process": p.name,
                    "state": p.state,
                    "since": _ago(now_ms, p.since_ms),
                    "detail": p.detail or p.last_exit or "",
                },
            )
            for p in snap.processes
        ]
    if kind == SourceKind.PROCESS_RESTARTS:
        since = now_ms - int(rule.window_s * 1000)
        window = format_duration(rule.window_s)
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
                {"model": m.name, "group": group, "since": _ago(now_ms, since)},
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


def _series(rule: Rule, snap: Snapshot, now_ms: int) -> list[Observation]:
    since = now_ms - int(rule.window_s * 1000)
    wanted = dict(rule.match)
    sets = [ls for ls in snap.series.label_sets(rule.series) if wanted.items() <= dict(ls).items()]
    window = format_duration(rule.window_s)
    if not sets and rule.aggregation == Aggregation.ABSENT:
        return [Observation(wanted, subject_of(wanted), 1.0, {"series": rule.series})]
    out = []
    for labels in sets:
        pts = snap.series.points(rule.series, labels, since, now_ms)
        value = aggregate(rule, pts, now_ms)
        other = rule.ratio_to or (
            rule.limit_series if rule.aggregation == Aggregation.TIME_TO_FULL else ""
        )
        if other and value is not None:
            limit = snap.series.points(other, labels, since, now_ms)
            if not limit:
                value = None
            elif rule.ratio_to:
                value = 100.0 * value / limit[-1][1] if limit[-1][1] else None
            else:
                value = _time_to_full(pts, limit[-1][1], now_ms)
        lbl = dict(labels)
        out.append(
            Observation(lbl, subject_of(lbl), value, {"series": rule.series, "window": window})
        )
    return out


def aggregate(rule: Rule, pts: list[tuple[int, float]], now_ms: int) -> float | None:
    """One value from a window's samples (None when there are too few)."""
    agg = rule.aggregation
    if agg == Aggregation.ABSENT:
        return 0.0 if pts else 1.0
    if not pts:
        return None
    # Plain Python, not numpy: a window holds a few hundred values, and importing numpy would
    # cost every running agent ~11 MB (bench/RESULTS.md, the lean agent).
    values = [float(v) for _, v in pts]
    if agg == Aggregation.AVG:
        return math.fsum(values) / len(values)
    if agg == Aggregation.MAX:
        return max(values)
    if agg == Aggregation.MIN:
        return min(values)
    if agg in (Aggregation.LAST, Aggregation.TIME_TO_FULL):
        return values[-1]
    if agg in (Aggregation.P50, Aggregation.P95, Aggregation.P99):
        return percentile(sorted(values), float(agg.value[1:]))
    return _slope_per_s(pts)


def _slope_per_s(pts: list[tuple[int, float]]) -> float | None:
    """Least-squares slope, per second; None with fewer than two distinct times."""
    if len(pts) < 2:
        return None
    ts = [t / 1000.0 for t, _ in pts]
    if max(ts) - min(ts) <= 0:
        return None
    vals = [float(v) for _, v in pts]
    t_mean = math.fsum(ts) / len(ts)
    v_mean = math.fsum(vals) / len(vals)
    dts = [t - t_mean for t in ts]
    return math.fsum(d * (v - v_mean) for d, v in zip(dts, vals, strict=True)) / math.fsum(
        d * d for d in dts
    )


def _time_to_full(pts: list[tuple[int, float]], limit: float, now_ms: int) -> float | None:
    """Seconds until the fitted line of ``pts`` reaches ``limit`` (inf when not rising)."""
    slope = _slope_per_s(pts)
    if slope is None:
        return None
    if slope <= 0:
        return math.inf
    return max(0.0, (limit - pts[-1][1]) / slope)
