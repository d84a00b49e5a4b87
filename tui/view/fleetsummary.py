"""What a fleet row says about one agent: its answers reduced to a :class:`HostSummary`.

Pure functions over ``/api/v1/summary`` (the compact row an agent serves, with an ETag), or,
from an agent older than that route, over the decoded JSON of ``/api/v1/status`` (with its
``alert_counts``), ``/api/v1/models`` and ``/api/v1/incidents``; tested without any network or
Textual.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from storage.labels import read_labels
from storage.records import FAILING_PROCESS_STATES, ModelState, ProcessState

# FAILING_PROCESS_STATES (storage.records) make a host ``failing``, as ``vigil status`` exits 1.
DEGRADED_PROCESS_STATES = frozenset(
    {ProcessState.STARTING, ProcessState.BLOCKED, ProcessState.EXITED, ProcessState.STOPPING}
)


@dataclass(frozen=True, slots=True)
class HostAlerts:
    """A host's alerts as its status counts them (``alert_counts``, disjoint groups).

    Attributes:
        firing: Firing and muted by neither a silence nor a maintenance window: these page.
        critical: How many of ``firing`` are critical.
        silenced: Firing, muted by a silence (somebody already knows).
        maintenance: Firing, muted by a maintenance window.
        pending: Holding, not yet for the rule's ``for``.
    """

    firing: int = 0
    critical: int = 0
    silenced: int = 0
    maintenance: int = 0
    pending: int = 0

    @property
    def muted(self) -> int:
        """Firing but muted (silenced or in maintenance): shown apart, never as paging."""
        return self.silenced + self.maintenance


_ALERT_GROUPS = ("firing", "critical", "silenced", "maintenance", "pending")


def read_alerts(status: Mapping[str, Any]) -> HostAlerts | None:
    """The ``alert_counts`` of a status, or None when the agent did not say (an agent older
    than alerting) or said something that is not whole counts >= 0 with ``critical`` at most
    ``firing``: the cell then shows "?" rather than a number the agent did not mean."""
    raw = status.get("alert_counts")
    if not isinstance(raw, Mapping) or "firing" not in raw or "critical" not in raw:
        return None
    values = [raw.get(name, 0) for name in _ALERT_GROUPS]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        return None
    alerts = HostAlerts(*values)
    return alerts if alerts.critical <= alerts.firing else None


def alerts_reason(alerts: HostAlerts) -> str:
    """``2 alerts firing (1 critical)``: why a host that pages is not ``ok``."""
    plural = "s" if alerts.firing > 1 else ""
    critical = f" ({alerts.critical} critical)" if alerts.critical else ""
    return f"{alerts.firing} alert{plural} firing{critical}"


@dataclass(frozen=True, slots=True)
class HostSummary:
    """One agent's answers reduced to a fleet row's values (None: the agent did not say).

    Attributes:
        host: The host name the agent reports.
        health: ``ok``, ``degraded`` (a model degraded, a process not yet running, an
            incident open, an alert firing and not muted) or ``failing`` (a model down, a
            process failed/backoff/quarantined, storage failing).
        reasons: Why it is not ``ok``, shortest first, e.g. ``("model whisper down",)``.
        models_up: Models ``up``.
        models_down: Models ``down``.
        models_total: Models configured.
        ttft_p95_ms: The worst model's p95 time to first token over 5 minutes.
        e2e_p95_ms: The worst model's p95 end-to-end latency over 5 minutes.
        cpu_percent: Total CPU.
        gpu_count: GPUs reporting.
        gpu_util_percent: Mean GPU utilisation over the GPUs.
        gpu_mem_used_bytes: GPU memory used, summed over the GPUs.
        gpu_mem_total_bytes: GPU memory, summed over the GPUs.
        open_incidents: Incidents open or acknowledged (None if the agent could not say).
        alerts: Its alerts by group (None: an agent older than alerting, or a bad count).
        labels: The labels the agent serves (``[agent] labels``), sorted by name; the fleet
            file's go over them (:func:`tui.view.fleetgroups.member_labels`).
    """

    host: str
    health: str = "ok"
    reasons: tuple[str, ...] = ()
    models_up: int = 0
    models_down: int = 0
    models_total: int = 0
    ttft_p95_ms: float | None = None
    e2e_p95_ms: float | None = None
    cpu_percent: float | None = None
    gpu_count: int = 0
    gpu_util_percent: float | None = None
    gpu_mem_used_bytes: float | None = None
    gpu_mem_total_bytes: float | None = None
    open_incidents: int | None = None
    alerts: HostAlerts | None = None
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def latency_p95_ms(self) -> float | None:
        """The worst p95 TTFT, else (no streaming probe) the worst p95 end-to-end latency."""
        return self.ttft_p95_ms if self.ttft_p95_ms is not None else self.e2e_p95_ms

    @property
    def gpu_mem_percent(self) -> float | None:
        """GPU memory used as a percentage of the total."""
        if self.gpu_mem_used_bytes is None or not self.gpu_mem_total_bytes:
            return None
        return self.gpu_mem_used_bytes / self.gpu_mem_total_bytes * 100


def worst_p95(models: Any, column: str, window: str = "5m") -> float | None:
    """The highest p95 of ``column`` (``ttft_ms``, ``e2e_ms``) in a ``/api/v1/models`` answer.

    Anything missing or malformed counts as unknown, never as an error: older agents and
    probes without streaming simply have no TTFT.
    """
    worst: float | None = None
    items = models.get("models") if isinstance(models, Mapping) else None
    for model in items if isinstance(items, list) else ():
        try:
            value = model["latency"][window][column]["p95"]
        except (KeyError, TypeError, IndexError):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            worst = float(value) if worst is None else max(worst, float(value))
    return worst


def count_open(incidents: Any) -> int | None:
    """How many incidents in a ``/api/v1/incidents?state=open`` answer are not resolved."""
    items = incidents.get("incidents") if isinstance(incidents, Mapping) else None
    if not isinstance(items, list):
        return None
    return sum(1 for i in items if isinstance(i, Mapping) and i.get("state") != "resolved")


@dataclass(frozen=True, slots=True)
class Details:
    """What a row needs from ``/api/v1/models`` and ``/api/v1/incidents``: kept instead of
    the documents themselves, whose thousands of small objects per agent the garbage
    collector would walk again and again (its pauses showed as late repaints)."""

    ttft_p95_ms: float | None = None
    e2e_p95_ms: float | None = None
    open_incidents: int | None = None


def read_details(models: Any, incidents: Any) -> Details:
    """The :class:`Details` of the two documents (None for one that failed)."""
    return Details(worst_p95(models, "ttft_ms"), worst_p95(models, "e2e_ms"), count_open(incidents))


_GPU_SERIES = {"gpu.util.percent": 0, "gpu.mem.used_bytes": 1, "gpu.mem.total_bytes": 2}


def summarize(
    status: Mapping[str, Any],
    models: Any = None,
    incidents: Any = None,
    *,
    details: Details | None = None,
) -> HostSummary:
    """Reduce an agent's answers to a fleet row.

    The status is read as the decoded JSON document, not rebuilt into an
    :class:`~storage.records.AgentStatus`: a row needs a dozen of its values, and building
    records for every resource of 200 agents each second was most of a refresh's cost.

    Args:
        status: ``/api/v1/status`` as decoded JSON.
        models: ``/api/v1/models`` as decoded JSON, or None when it failed.
        incidents: ``/api/v1/incidents?state=open`` as decoded JSON, or None when it failed.
        details: What was read from those two earlier (used instead of them).

    Returns:
        The summary.

    Raises:
        ValueError: the status lacks its host, or a model, process or resource is malformed.
    """
    try:
        host = str(status["host"])
        model_states = [(str(m["name"]), str(m["state"])) for m in status.get("models") or ()]
        process_states = [(str(p["name"]), str(p["state"])) for p in status.get("processes") or ()]
        cpu: float | None = None
        gpus: dict[str, list[float | None]] = {}
        for r in status.get("resources") or ():
            name = r["name"]
            labels = r.get("labels") or {}
            if name == "host.cpu.percent" and not labels:
                cpu = float(r["value"])
            elif name in _GPU_SERIES and "gpu" in labels:
                gpus.setdefault(str(labels["gpu"]), [None, None, None])[_GPU_SERIES[name]] = float(
                    r["value"]
                )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"bad status from agent: {exc.__class__.__name__}: {exc}") from None

    utils = [g[0] for g in gpus.values() if g[0] is not None]
    used = [g[1] for g in gpus.values() if g[1] is not None]
    total = [g[2] for g in gpus.values() if g[2] is not None]
    if details is None:
        details = read_details(models, incidents)
    return _host_summary(
        host,
        model_states,
        process_states,
        storage_ok=bool(status.get("storage_ok", True)),
        details=details,
        alerts=read_alerts(status),
        cpu=cpu,
        gpu=(
            len(gpus),
            sum(utils) / len(utils) if utils else None,
            sum(used) if used else None,
            sum(total) if total else None,
        ),
        labels=status.get("labels"),
    )


def _host_summary(
    host: str,
    model_states: list[tuple[str, str]],
    process_states: list[tuple[str, str]],
    *,
    storage_ok: bool,
    details: Details,
    alerts: HostAlerts | None,
    cpu: float | None,
    gpu: tuple[int, float | None, float | None, float | None],
    labels: object,
) -> HostSummary:
    """The row's health and reasons from the states, and the values as given: the one place
    both routes (the status documents, the compact summary) become a :class:`HostSummary`."""
    failing: list[str] = []
    degraded: list[str] = []
    for name, state in model_states:
        if state == ModelState.DOWN:
            failing.append(f"model {name} down")
        elif state == ModelState.DEGRADED:
            degraded.append(f"model {name} degraded")
    for name, state in process_states:
        if state in FAILING_PROCESS_STATES:
            failing.append(f"process {name} {state}")
        elif state in DEGRADED_PROCESS_STATES:
            degraded.append(f"process {name} {state}")
    if not storage_ok:
        failing.append("storage failing")
    open_incidents = details.open_incidents
    if open_incidents:
        degraded.append(f"{open_incidents} incident{'s' if open_incidents > 1 else ''} open")
    if alerts is not None and alerts.firing:
        # A host that pages is not "ok"; muted alerts leave it be (somebody already knows).
        degraded.append(alerts_reason(alerts))
    health = "failing" if failing else "degraded" if degraded else "ok"
    gpu_count, gpu_util, gpu_used, gpu_total = gpu
    return HostSummary(
        host=host,
        health=health,
        reasons=(*failing, *degraded),
        models_up=sum(1 for _n, state in model_states if state == ModelState.UP),
        models_down=sum(1 for _n, state in model_states if state == ModelState.DOWN),
        models_total=len(model_states),
        ttft_p95_ms=details.ttft_p95_ms,
        e2e_p95_ms=details.e2e_p95_ms,
        cpu_percent=cpu,
        gpu_count=gpu_count,
        gpu_util_percent=gpu_util,
        gpu_mem_used_bytes=gpu_used,
        gpu_mem_total_bytes=gpu_total,
        open_incidents=open_incidents,
        alerts=alerts,
        labels=tuple(sorted(read_labels(labels).items())),
    )


class _Named(msgspec.Struct, frozen=True):
    name: str
    state: str


class _Gpus(msgspec.Struct, frozen=True):
    count: int = 0
    util_percent: float | None = None
    mem_used_bytes: float | None = None
    mem_total_bytes: float | None = None


class SummaryDoc(msgspec.Struct, frozen=True):
    """``GET /api/v1/summary`` (docs/api.md), decoded and type-checked in one step by msgspec
    (about a tenth of the time ``json.loads`` took for the status it replaces); fields this
    client does not know are ignored, missing ones take these defaults."""

    host: str
    storage_ok: bool = True
    models: list[_Named] = []
    processes: list[_Named] = []
    cpu_percent: float | None = None
    gpu: _Gpus = _Gpus()
    ttft_p95_ms: float | None = None
    e2e_p95_ms: float | None = None
    open_incidents: int | None = None
    alert_counts: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None


_SUMMARY_DECODER = msgspec.json.Decoder(SummaryDoc)


def summarize_compact(body: bytes) -> HostSummary:
    """Reduce a ``GET /api/v1/summary`` body to a fleet row (the same row :func:`summarize`
    makes of the status, models and incidents it stands for).

    Raises:
        ValueError: the body is not JSON, or not the document's shape.
    """
    try:
        doc = _SUMMARY_DECODER.decode(body)
    except msgspec.MsgspecError as exc:
        raise ValueError(f"bad summary from agent: {exc}") from None
    gpu = doc.gpu
    return _host_summary(
        doc.host,
        [(m.name, m.state) for m in doc.models],
        [(p.name, p.state) for p in doc.processes],
        storage_ok=doc.storage_ok,
        details=Details(doc.ttft_p95_ms, doc.e2e_p95_ms, doc.open_incidents),
        alerts=read_alerts({"alert_counts": doc.alert_counts}),
        cpu=doc.cpu_percent,
        gpu=(gpu.count, gpu.util_percent, gpu.mem_used_bytes, gpu.mem_total_bytes),
        labels=doc.labels,
    )
