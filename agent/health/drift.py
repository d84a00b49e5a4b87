"""Drift: a model answering, and passing its checks, but not as it did a while ago.

Three detectors per model, fed by the model's answered runs (``ok`` and ``slow``; a failure
is the health state's business, not drift):

- **latency** — for each of TTFT, ITL and end-to-end latency, the median of the last
  ``window`` runs against the median of the ``baseline`` runs before them. Drift when the
  recent median is ``ratio`` times the baseline's and at least ``min_delta`` above it. Medians,
  so one slow outlier in the window moves nothing; the absolute floor, so 1 ms -> 2 ms on a
  tiny model is not news.
- **throughput** — the same on output tokens/s, where lower is worse.
- **output** — answers that had been identical (whitespace aside) for ``output_stable_runs``
  runs in a row change, and the new answer persists for ``output_confirm_runs`` runs. A
  canary sampled at a non-zero temperature never settles, so it never fires: output drift
  is only claimed for a model that had been deterministic.

Only regressions count (a model that got faster is not paged about). While a group is
drifted its baseline is frozen, so a lasting shift stays visible instead of being absorbed;
it clears when the recent median comes back within half the margin, or, after
``accept_after``, the new level is accepted as the baseline. Each detection is a ``drift.*``
event (reports count them); clearing and acceptance are ``model.drift_*`` events.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from agent.config import DriftConfig
from probes.common import percentile
from storage.records import Event, ProbeRun

log = logging.getLogger("vigil.drift")

ANSWERED = frozenset({"ok", "slow"})
EXCERPT_CHARS = 200

# (run field, group, True when higher is worse)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("ttft_ms", "latency", True),
    ("itl_ms", "latency", True),
    ("e2e_ms", "latency", True),
    ("tokens_per_s", "throughput", False),
)


@dataclass(frozen=True, slots=True)
class Shift:
    """One metric's recent median against its baseline median."""

    metric: str
    baseline: float
    recent: float
    factor: float
    """How many times worse the recent median is (>= 1 is worse, either direction)."""
    baseline_runs: int
    recent_runs: int

    def to_json(self) -> dict[str, object]:
        """JSON form for event data."""
        return {
            "metric": self.metric,
            "baseline_median": round(self.baseline, 3),
            "recent_median": round(self.recent, 3),
            "factor": round(self.factor, 3),
            "baseline_runs": self.baseline_runs,
            "recent_runs": self.recent_runs,
        }

    def describe(self) -> str:
        """``ttft_ms median 180 (2.3x the baseline 78)``."""
        return (
            f"{self.metric} median {self.recent:.4g} ({self.factor:.2g}x worse than the "
            f"baseline {self.baseline:.4g})"
        )


class MetricWindow:
    """The last ``window`` values of one metric and the ``baseline`` values before them."""

    def __init__(self, metric: str, higher_is_worse: bool, config: DriftConfig) -> None:
        self.metric = metric
        self.higher_is_worse = higher_is_worse
        self.config = config
        self.recent: deque[float] = deque(maxlen=config.window)
        self.baseline: deque[float] = deque(maxlen=config.baseline)

    def add(self, value: float, *, frozen: bool) -> None:
        """Take a value; the one it pushes out of the window moves into the baseline, unless
        the baseline is ``frozen`` (the metric is drifted: a lasting shift must not be
        absorbed into what it is compared with)."""
        if len(self.recent) == self.recent.maxlen and not frozen:
            self.baseline.append(self.recent[0])
        self.recent.append(value)

    def ready(self) -> bool:
        """Enough history to judge: a full window and a baseline at least half full."""
        return len(self.recent) == self.config.window and 2 * len(self.baseline) >= (
            self.config.baseline
        )

    def shift(self) -> Shift | None:
        """The recent median against the baseline's; None until :meth:`ready`."""
        if not self.ready():
            return None
        # percentile(.., 50) is statistics.median (the middle, or the mean of the two middle
        # ones) without loading statistics, fractions and decimal into the agent.
        base = percentile(self.baseline, 50)
        recent = percentile(self.recent, 50)
        if self.higher_is_worse:
            factor = recent / base if base > 0 else (1.0 if recent <= 0 else float("inf"))
        else:
            factor = base / recent if recent > 0 else float("inf")
        return Shift(self.metric, base, recent, factor, len(self.baseline), len(self.recent))

    def drifted(self, s: Shift) -> bool:
        """Worse by the ratio and, for latencies, by at least the absolute floor."""
        if s.factor < self.config.ratio:
            return False
        return not self.higher_is_worse or s.recent - s.baseline >= self.config.min_delta_ms

    def cleared(self, s: Shift) -> bool:
        """Back within half the margin, of either test: hysteresis, so a level at the edge
        does not flap, and a level that would never have been detected is not kept."""
        if s.factor < 1 + (self.config.ratio - 1) / 2:
            return True
        return self.higher_is_worse and s.recent - s.baseline < self.config.min_delta_ms / 2

    def accept(self) -> None:
        """Make the recent level the baseline; the window fills afresh, so no run counts
        twice."""
        self.baseline = deque(self.recent, maxlen=self.config.baseline)
        self.recent.clear()


class GroupDrift:
    """Latency or throughput: drifted while any of its metrics is."""

    def __init__(self, group: str, windows: list[MetricWindow]) -> None:
        self.group = group
        self.windows = windows
        self.since_ms: int | None = None
        self.drifted: set[str] = set()

    def observe(self, run: ProbeRun, subject: str, accept_after_ms: float) -> list[Event]:
        """Feed one answered run; the events of any transition it causes."""
        shifts: dict[str, Shift] = {}
        for w in self.windows:
            value = getattr(run, w.metric)
            if value is None:
                continue
            w.add(float(value), frozen=w.metric in self.drifted)
            s = w.shift()
            if s is None:
                continue
            shifts[w.metric] = s
            if w.metric not in self.drifted and w.drifted(s):
                self.drifted.add(w.metric)
            elif w.metric in self.drifted and w.cleared(s):
                self.drifted.discard(w.metric)
        if self.drifted and self.since_ms is None:
            self.since_ms = run.ts_ms
            worse = [shifts[m] for m in sorted(self.drifted) if m in shifts]
            return [
                Event(
                    ts_ms=run.ts_ms,
                    kind=f"drift.{self.group}",
                    subject=subject,
                    message=f"{self.group} drift: " + "; ".join(s.describe() for s in worse),
                    # Every metric of the group as evidence, the ones past the margin marked.
                    data={
                        "drifted": sorted(self.drifted),
                        "shifts": [s.to_json() for s in shifts.values()],
                        "run": run.to_json(),
                    },
                )
            ]
        if not self.drifted and self.since_ms is not None:
            since, self.since_ms = self.since_ms, None
            return [self._ended(run, subject, "cleared", since, shifts)]
        if self.since_ms is not None and run.ts_ms - self.since_ms >= accept_after_ms:
            since, self.since_ms = self.since_ms, None
            self.drifted.clear()
            for w in self.windows:
                w.accept()
            return [self._ended(run, subject, "accepted", since, shifts)]
        return []

    def _ended(
        self, run: ProbeRun, subject: str, how: str, since_ms: int, shifts: dict[str, Shift]
    ) -> Event:
        what = (
            "back within its baseline"
            if how == "cleared"
            else "lasted long enough to become the new baseline"
        )
        return Event(
            ts_ms=run.ts_ms,
            kind=f"model.drift_{how}",
            subject=subject,
            message=f"{self.group} drift {how}: {what} after {(run.ts_ms - since_ms) / 1000:.0f}s",
            data={
                "group": self.group,
                "since_ms": since_ms,
                "shifts": [s.to_json() for s in shifts.values()],
            },
        )


def _fingerprint(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


class OutputDrift:
    """A deterministic canary whose answer changed, and stayed changed.

    Conservative by design: any sign that the canary is sampled — three different answers
    while learning, an answer that flips away and back, or a change that does not settle on
    one new answer — marks the model as varying, and its output is not judged again until
    the agent restarts or the model's config changes. A false "the model changed" at 3 a.m.
    costs more than a missed one on a canary that was never deterministic.
    """

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.history: deque[str] = deque(maxlen=config.output_stable_runs)
        self.seen: set[str] = set()
        self.stable: tuple[str, str] | None = None
        """(fingerprint, excerpt) of the answer that had been stable."""
        self.changed: list[tuple[str, str]] = []
        self.varies = False

    def observe(self, run: ProbeRun, output: str, subject: str) -> list[Event]:
        """Feed one answered run's output text."""
        if self.varies:
            return []
        fp, excerpt = _fingerprint(output), _excerpt(output)
        self.history.append(fp)
        if self.stable is None:
            self.seen.add(fp)
            if len(self.seen) >= 3:
                self._varies(subject, "three different answers while learning")
            elif len(self.history) == self.history.maxlen and len(set(self.history)) == 1:
                self.stable, self.seen = (fp, excerpt), set()
            return []
        if fp == self.stable[0]:
            if self.changed:
                self._varies(subject, "the answer changed and came back")
            return []
        self.changed.append((fp, excerpt))
        if len(self.changed) < self.config.output_confirm_runs:
            return []
        if len({c[0] for c in self.changed}) > 1:
            self._varies(subject, "the answer changed to several new ones")
            return []
        old, new = self.stable, self.changed[-1]
        # Learn the new answer afresh, counting the runs that confirmed it: a later change
        # (back, or on) is drift again.
        self.history.clear()
        self.history.extend(c[0] for c in self.changed)
        self.stable, self.changed, self.seen = None, [], {new[0]}
        return [
            Event(
                ts_ms=run.ts_ms,
                kind="drift.output",
                subject=subject,
                message=(
                    f"output drift: the canary's answer, identical for at least "
                    f"{self.config.output_stable_runs} runs, changed to another answer for "
                    f"{self.config.output_confirm_runs} runs in a row"
                ),
                data={
                    "previous_sha256": old[0],
                    "previous_excerpt": old[1],
                    "new_sha256": new[0],
                    "new_excerpt": new[1],
                    "run": run.to_json(),
                },
            )
        ]

    def _varies(self, subject: str, why: str) -> None:
        self.varies = True
        log.info("output drift check off subject=%s reason=%r (a sampled canary)", subject, why)


class ModelDrift:
    """All of one model's drift detectors."""

    def __init__(self, subject: str, config: DriftConfig) -> None:
        self.subject = subject
        self.config = config
        groups: dict[str, list[MetricWindow]] = {}
        for metric, group, worse_up in METRICS:
            groups.setdefault(group, []).append(MetricWindow(metric, worse_up, config))
        self.groups = [GroupDrift(g, ws) for g, ws in groups.items()]
        self.output = OutputDrift(config)

    def observe(self, run: ProbeRun, output: str | None = None) -> list[Event]:
        """Feed one run (any category); the drift events it causes."""
        if not self.config.enabled or run.category not in ANSWERED:
            return []
        events: list[Event] = []
        for g in self.groups:
            events.extend(g.observe(run, self.subject, self.config.accept_after_s * 1000))
        if output:
            events.extend(self.output.observe(run, output, self.subject))
        return events

    def seed(self, runs: Iterable[ProbeRun]) -> None:
        """Replay stored runs, oldest first, to rebuild the windows after an agent restart;
        whatever they would have detected is history, not news, so no events come out."""
        for run in runs:
            self.observe(run)

    def ended_by_config(self, ts_ms: int) -> list[Event]:
        """Events for drift still active when the model's config changes: the new config
        starts new windows, so what was detected under the old one is closed here."""
        return [
            Event(
                ts_ms=ts_ms,
                kind="model.drift_cleared",
                subject=self.subject,
                message=f"{g.group} drift cleared: the model's config changed",
                data={"group": g.group, "since_ms": g.since_ms, "reason": "config changed"},
            )
            for g in self.groups
            if g.since_ms is not None
        ]

    def active(self) -> dict[str, int]:
        """Drifted groups and since when (epoch ms)."""
        return {g.group: g.since_ms for g in self.groups if g.since_ms is not None}
