"""The record types of a host report (computed by :mod:`storage.report`).

Every field's unit is in its name or its section's documentation; times are UTC epoch
milliseconds, durations milliseconds, shares fractions from 0 to 1. :meth:`Report.to_json`
gives the document that ``agent/report/schema.json`` describes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.deploykpi import DeployKpis

SCHEMA_VERSION = 5
"""Bumped when a field changes meaning or goes away (adding one does not bump it). 2:
deployment rows name the artifact (``artifact``, ``artifact_kind``, ``previous_artifact``,
``artifact_time_ms``) instead of ``sha256``, ``previous_sha256``, ``artifact_mtime_ms``. 4:
``incidents.mttd_ms``, ``mttr_ms`` and ``max_ttr_ms`` cover *unplanned* incidents only (those
opened inside a maintenance window are counted apart, ``incidents.in_maintenance``). 5: the
deployment KPIs (frequency, lead time, change-failure rate, time to restore) of deploys made
through Vigil are ``deploys``; ``deployments`` keeps its meaning (artifact changes probes saw)
and is no longer the report's deployment frequency and lead time."""


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
    maintenance: str | None = None
    """The maintenance window the incident opened in (its evidence's ``planned`` key,
    ``maintenance: <name>``, gives the name); None for an unplanned incident."""


@dataclass(frozen=True, slots=True)
class Incidents:
    """Incidents and their mean time to detect (opened in the window) and to recover
    (resolved in the window).

    ``mttd_ms``, ``mttr_ms`` and ``max_ttr_ms`` cover *unplanned* incidents only: those opened
    inside a maintenance window (``in_maintenance``, rows with ``maintenance`` set) were
    expected and are counted apart. ``total``, ``still_open`` and ``critical`` count all rows.
    """

    total: int
    opened_in_window: int
    resolved_in_window: int
    still_open: int
    critical: int
    mttd_ms: float | None
    mttr_ms: float | None
    max_ttr_ms: int | None
    rows: tuple[IncidentRow, ...]
    in_maintenance: int = 0
    """Rows opened inside a maintenance window (planned)."""
    unplanned: int = 0
    """Rows opened outside any maintenance window."""


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
class RuleFirings:
    """How many alert occurrences of one rule (at one severity) started firing in the window."""

    rule: str
    severity: str
    fired: int


@dataclass(frozen=True, slots=True)
class ChannelPages:
    """Notifications created in the window for one channel, by delivery state as it stood at
    the window's end: ``delivered`` (accepted by the receiver by then), ``undelivered`` (given
    up), ``pending`` (still being retried, or delivered only after the window)."""

    channel: str
    delivered: int
    undelivered: int
    pending: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class FirstNotification:
    """Time from an incident to its first notification.

    ``began_ms`` is the incident's fault start (``began_ms``; older rows: ``failing_since_ms``;
    else ``opened_ms``). The first notification is the earliest-delivered outbox row of state
    ``delivered`` that carries an alert whose subject is the incident's subject, created at or
    after ``began_ms`` and delivered by the window's end. ``latency_ms`` is its
    ``delivered_ms - began_ms``; all three are null when there is none.
    """

    incident_id: int
    subject: str
    kind: str
    began_ms: int
    notified_ms: int | None
    channel: str | None
    latency_ms: int | None


@dataclass(frozen=True, slots=True)
class SilenceInWindow:
    """A silence active at some time in the window; ``matchers`` as ``label op value``."""

    id: str
    matchers: str
    starts_ms: int
    ends_ms: int
    expired_ms: int | None
    author: str
    comment: str


@dataclass(frozen=True, slots=True)
class MaintenanceInWindow:
    """A maintenance window open at some time in the report's window.

    From the ``maintenance.started``/``maintenance.ended`` events (``source`` ``events``;
    ``ends_ms`` is the end event's time, else the end the start event announced), or, where
    no event recorded it, from incidents marked ``maintenance: <name>`` (``source``
    ``incidents``; ``starts_ms`` the first such incident's opening, ``ends_ms`` null).
    """

    name: str
    starts_ms: int
    ends_ms: int | None
    subjects: str
    incidents: int
    source: str


@dataclass(frozen=True, slots=True)
class Alerting:
    """Alerts, notifications, silences and maintenance windows in the window.

    ``fired`` counts alert occurrences whose ``firing_ms`` is in the window; ``by_rule`` splits
    them by rule and severity (most first), ``noisiest`` is the top rules by firings (all
    severities together, at most five). ``pages_*`` count outbox rows created in the window
    (test messages left out) across channels. ``mean_time_to_notify_ms`` and
    ``median_time_to_notify_ms`` are over ``first_notifications`` that have one; those rows are
    the *unplanned* incidents opened in the window (maintenance mutes notifications).
    """

    fired: int
    by_rule: tuple[RuleFirings, ...]
    noisiest: tuple[RuleFirings, ...]
    pages_delivered: int
    pages_undelivered: int
    pages_pending: int
    channels: tuple[ChannelPages, ...]
    first_notifications: tuple[FirstNotification, ...]
    mean_time_to_notify_ms: float | None
    median_time_to_notify_ms: float | None
    silences: tuple[SilenceInWindow, ...]
    maintenance: tuple[MaintenanceInWindow, ...]
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
    alerting: Alerting
    deploys: DeployKpis
    """Deploys made through Vigil and their DORA keys (:mod:`storage.deploykpi`)."""

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
