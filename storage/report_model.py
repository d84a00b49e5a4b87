"""The record types of a host report (computed by :mod:`storage.report`).

Every field's unit is in its name or its section's documentation; times are UTC epoch
milliseconds, durations milliseconds, shares fractions from 0 to 1. :meth:`Report.to_json`
gives the document that ``agent/report/schema.json`` describes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

SCHEMA_VERSION = 3
"""Bumped when a field changes meaning or goes away (adding one does not bump it). 2:
deployment rows name the artifact (``artifact``, ``artifact_kind``, ``previous_artifact``,
``artifact_time_ms``) instead of ``sha256``, ``previous_sha256``, ``artifact_mtime_ms``."""


def to_plain(obj: Any) -> Any:
    """Dataclasses, mappings and tuples as plain JSON values; NaN and infinities as null."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass(frozen=True, slots=True)
class Window:
    """The report's time range and the bucket width its trend series and charts use."""

    since_ms: int
    until_ms: int
    bucket_ms: int


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles (ms) of one latency column over the window's answered runs."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """The p95 (ms) of the answered runs in one bucket starting at ``ts_ms``."""

    ts_ms: int
    p95: float
    count: int


@dataclass(frozen=True, slots=True)
class LatencyTrend:
    """p95 per bucket, and the change from the first to the second half of the runs' span.

    ``direction`` is ``slower`` or ``faster`` beyond a 10 % change, else ``flat``, when each
    half holds at least 20 answered runs (``storage.report.MIN_TREND_RUNS``); ``too few runs``
    (and no ``change_pct``) with fewer in either half; ``n/a`` without answered runs.
    """

    first_half_p95: float | None
    second_half_p95: float | None
    change_pct: float | None
    direction: str
    first_half_runs: int
    """Answered runs in the first half of the span (the trend's evidence)."""
    second_half_runs: int
    """Answered runs in the second half."""
    points: tuple[TrendPoint, ...]


@dataclass(frozen=True, slots=True)
class ModelReport:
    """One model over the window: availability (ok runs / runs), outcomes, latency.

    ``runs``, ``ok_runs``, ``availability`` and ``outcomes`` count the unplanned runs only;
    ``planned_runs`` are the failed runs of planned windows (the agent starting the model's
    server, an operator's restart, a config change). ``planned_downtime_ms`` is the time the
    model spent ``starting`` or ``stopped``; ``outage_ms`` the time its ``model_down``
    incidents covered (fault began to recovery observed), both clipped to the window.
    """

    name: str
    runs: int
    ok_runs: int
    availability: float | None
    planned_runs: int
    planned_downtime_ms: int
    outage_ms: int
    outcomes: Mapping[str, int]
    first_run_ms: int | None
    last_run_ms: int | None
    state_changes: int
    latency: Mapping[str, LatencySummary]
    """Keyed by ``e2e_ms``, ``ttft_ms``, ``itl_ms``."""
    trend: Mapping[str, LatencyTrend]


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """An incident that was open at some time in the window, as it stood at the window's end.

    ``failing_since_ms`` is when the fault began (the incident's ``began_ms``; older rows:
    their evidence). ``ttd_ms`` (time to detect) is ``opened_ms - failing_since_ms``; ``ttr_ms``
    (time to recover) is ``resolved_ms - failing_since_ms`` (``- opened_ms`` for rows from
    before ``began_ms`` was kept); both null where unknown or not yet over.
    """

    id: int
    subject: str
    kind: str
    severity: str
    cause: str
    state: str
    opened_ms: int
    failing_since_ms: int | None
    acknowledged_ms: int | None
    resolved_ms: int | None
    ttd_ms: int | None
    ttr_ms: int | None
    root_id: int | None


@dataclass(frozen=True, slots=True)
class Incidents:
    """Incidents and their mean time to detect (opened in the window) and to recover
    (resolved in the window)."""

    total: int
    opened_in_window: int
    resolved_in_window: int
    still_open: int
    critical: int
    mttd_ms: float | None
    mttr_ms: float | None
    max_ttr_ms: int | None
    rows: tuple[IncidentRow, ...]


@dataclass(frozen=True, slots=True)
class RestartGroup:
    """Restarts of one process for one reason (``exit 1``, ``signal SIGKILL``, ``hung: ...``,
    ``operator restart``)."""

    process: str
    reason: str
    count: int
    first_ms: int
    last_ms: int
    last_detail: str


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """How often one supervised process restarted, exited, hung and was quarantined."""

    process: str
    restarts: int
    exits: int
    hangs: int
    quarantines: int


@dataclass(frozen=True, slots=True)
class Restarts:
    """``process.restarting`` events grouped by process and reason."""

    total: int
    groups: tuple[RestartGroup, ...]
    processes: tuple[ProcessSummary, ...]


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    """A model's artifact changed. ``artifact`` is its identity as the probe reported it, of
    ``artifact_kind`` (``sha256`` of a model file, ``ollama_digest``, ``tgi_model_sha``,
    ``served_root``, ``model_versions``). ``verified_ms`` is when its first ok probe run was
    observed (the run that reported the artifact counts); ``lead_time_ms`` runs from the
    artifact's time (file mtime, Ollama's modified_at) to that run."""

    ts_ms: int
    model: str
    artifact: str | None
    artifact_kind: str | None
    previous_artifact: str | None
    first_run_category: str | None
    verified_ms: int | None
    artifact_time_ms: int | None
    lead_time_ms: int | None


@dataclass(frozen=True, slots=True)
class Deployments:
    """Deployments in the window: how many, how often (per day), how many never passed a
    probe, and the median lead time."""

    count: int
    per_day: float
    failed: int
    median_lead_time_ms: float | None
    rows: tuple[DeploymentRow, ...]
    note: str | None


@dataclass(frozen=True, slots=True)
class DriftRow:
    """One ``drift.*`` event."""

    ts_ms: int
    subject: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Drift:
    """Drift detections in the window."""

    count: int
    rows: tuple[DriftRow, ...]
    note: str | None


@dataclass(frozen=True, slots=True)
class ResourcePoint:
    """One chart bucket of a resource series: its mean and its peak."""

    ts_ms: int
    avg: float
    max: float


@dataclass(frozen=True, slots=True)
class ResourceRow:
    """Mean and peak of one resource series over the window (``unit`` is ``%`` or ``bytes``);
    ``capacity`` is the largest total seen (memory), when the series has one."""

    name: str
    labels: Mapping[str, str]
    unit: str
    samples: int
    mean: float
    peak: float
    capacity: float | None
    points: tuple[ResourcePoint, ...]


@dataclass(frozen=True, slots=True)
class Monitoring:
    """Which known models had at least one probe run in the window.

    ``source`` says where the list of known models came from: ``config`` (given by the caller),
    ``events`` (the model list the agent recorded at start or reload) or ``runs`` (only the
    models seen in the window's runs and events).
    """

    known_models: tuple[str, ...]
    monitored: tuple[str, ...]
    unmonitored: tuple[str, ...]
    share: float | None
    source: str


@dataclass(frozen=True, slots=True)
class AuditResult:
    """The whole audit chain's verification (not only the window's events)."""

    ok: bool
    checked: int
    broken_seq: int | None
    reason: str | None
    events_in_window: int


@dataclass(frozen=True, slots=True)
class Coverage:
    """Where the stored data inside the window begins (retention purges older runs)."""

    first_probe_run_ms: int | None
    first_sample_ms: int | None
    note: str | None


@dataclass(frozen=True, slots=True)
class Report:
    """A host report: everything ``vigil report`` and ``GET /api/v1/report`` render."""

    schema_version: int
    host: str | None
    generated_ms: int
    window: Window
    models: tuple[ModelReport, ...]
    incidents: Incidents
    restarts: Restarts
    deployments: Deployments
    drift: Drift
    resources: tuple[ResourceRow, ...]
    monitoring: Monitoring
    audit: AuditResult
    coverage: Coverage
    notes: tuple[str, ...]
    """Report-wide caveats (where the stored data begins); a section's own note (no
    deployments, no drift) is in that section."""

    def to_json(self) -> dict[str, Any]:
        """The JSON document (see ``agent/report/schema.json``)."""
        out: dict[str, Any] = to_plain(self)
        out["availability"] = to_plain(self.availability)
        return out

    @property
    def availability(self) -> float | None:
        """All models' ok runs over all their runs (None without runs)."""
        runs = sum(m.runs for m in self.models)
        return sum(m.ok_runs for m in self.models) / runs if runs else None
