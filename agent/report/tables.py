"""The report as tables: one list of columns and rows that HTML, Markdown and CSV all render.

Cells hold raw values (epoch ms, fractions, bytes); each column's ``kind`` says how people read
it (:func:`human`). CSV writes the raw values under the column keys, whose names carry units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent.report.alerttables import alert_tables
from agent.report.deploytables import deploy_tables
from agent.report.table import Column, Row, Table
from storage.report import FLAT_PCT, MIN_TREND_RUNS
from storage.report_model import Report
from storage.text import short_artifact
from storage.units import format_bytes, format_duration

__all__ = [
    "METRICS",
    "TREND_NOTE",
    "Column",
    "Row",
    "Table",
    "format_frac",
    "format_ms",
    "format_ts",
    "human",
    "labels_text",
    "resource_label",
    "summary_items",
    "summary_table",
    "tables",
]

METRICS = (("e2e_ms", "e2e"), ("ttft_ms", "TTFT"), ("itl_ms", "ITL"))

TREND_NOTE = (
    "Trend compares the p95 of the first and the second half of the time a model's answered "
    f"runs cover: slower or faster beyond {FLAT_PCT:g} % either way, else flat. It needs at "
    f"least {MIN_TREND_RUNS} answered runs in each half; with fewer it says too few runs."
)
"""How the latency table's Trend column is decided, printed under it (HTML and Markdown)."""


def format_ts(ts_ms: int | None) -> str:
    """UTC time to the second, as people read it: ``2026-11-25 09:20:53Z``."""
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_ms(ms: float | None) -> str:
    """A duration in milliseconds: ``3.61 ms``, ``1.25 s``, ``3m12s``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.2f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    return format_duration(ms / 1000)


def format_frac(value: float | None) -> str:
    """A fraction from 0 to 1 as a percentage with two decimals."""
    return "-" if value is None else f"{value * 100:.2f} %"


def human(value: Any, kind: str, row: Row | None = None) -> str:
    """A cell's text for people (HTML and Markdown); None is a hyphen."""
    if value is None:
        return "-"
    if kind == "unit":
        kind = "bytes" if row is not None and row.get("unit") == "bytes" else "pct"
    fmt: dict[str, Callable[[Any], str]] = {
        "int": lambda v: str(int(v)),
        "num": lambda v: f"{float(v):.2f}",
        "ms": format_ms,
        "ts": format_ts,
        "frac": format_frac,
        "pct": lambda v: f"{float(v):.1f} %",
        "bytes": format_bytes,
        "sha": short_artifact,
        "signed_pct": lambda v: f"{float(v):+.1f} %",
        "bool": lambda v: "yes" if v else "no",
    }
    return fmt.get(kind, str)(value)


def labels_text(labels: Mapping[str, str]) -> str:
    """``gpu=0,process=x`` (empty for none)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def resource_label(name: str, labels: Mapping[str, str]) -> str:
    """``gpu.util.percent{gpu=0}``."""
    return f"{name}{{{labels_text(labels)}}}" if labels else name


def summary_items(report: Report) -> list[tuple[str, str]]:
    """The headline numbers, for the top of HTML and Markdown."""
    inc, dep, mon, audit = report.incidents, report.deployments, report.monitoring, report.audit
    al, keys = report.alerting, report.deploys.host
    span = (report.window.until_ms - report.window.since_ms) / 1000
    chain = (
        f"verified ({audit.checked} events)"
        if audit.ok
        else f"BROKEN at event {audit.broken_seq}: {audit.reason} "
        f"({audit.checked} events verified before it)"
    )
    share = f" ({format_frac(mon.share)})" if mon.share is not None else ""
    return [
        ("Host", report.host or "(not recorded)"),
        (
            "Window",
            f"{format_ts(report.window.since_ms)} to {format_ts(report.window.until_ms)} "
            f"({format_duration(span)})",
        ),
        ("Availability (all models)", format_frac(report.availability)),
        ("Models under monitoring", f"{len(mon.monitored)} of {len(mon.known_models)}{share}"),
        (
            "Incidents",
            f"{inc.total} ({inc.still_open} open, {inc.critical} critical); "
            f"{inc.in_maintenance} in maintenance; MTTD {format_ms(inc.mttd_ms)}, "
            f"MTTR {format_ms(inc.mttr_ms)} (unplanned only)",
        ),
        (
            "Alerting",
            f"{al.fired} alerts fired; {al.pages_delivered} notifications delivered, "
            f"{al.pages_undelivered} undelivered, {al.pages_pending} pending; "
            f"median time to first notification {format_ms(al.median_time_to_notify_ms)}",
        ),
        ("Restarts", str(report.restarts.total)),
        (
            "Deploys",
            f"{keys.changes} changes finished ({keys.promoted} promoted, "
            f"{keys.per_day:.2f}/day); change-failure rate "
            f"{format_frac(keys.change_failure_rate)}; lead time p50 "
            f"{format_ms(keys.lead_time_median_ms)}, p90 {format_ms(keys.lead_time_p90_ms)}; "
            f"time to restore p50 {format_ms(keys.time_to_restore_median_ms)}",
        ),
        (
            "Artifact changes seen by probes",
            f"{dep.count} ({dep.per_day:.2f}/day, {dep.failed} never verified); "
            f"median lead time {format_ms(dep.median_lead_time_ms)}",
        ),
        ("Drift detections", str(report.drift.count)),
        ("Audit chain", chain),
    ]


def summary_table(report: Report) -> Table:
    """The headline numbers raw, for ``summary.csv``."""
    inc, dep, mon, audit = report.incidents, report.deployments, report.monitoring, report.audit
    values: list[tuple[str, Any]] = [
        ("schema_version", report.schema_version),
        ("host", report.host),
        ("generated_ms", report.generated_ms),
        ("since_ms", report.window.since_ms),
        ("until_ms", report.window.until_ms),
        ("bucket_ms", report.window.bucket_ms),
        ("availability", report.availability),
        ("models_known", len(mon.known_models)),
        ("models_monitored", len(mon.monitored)),
        ("monitored_share", mon.share),
        ("incidents", inc.total),
        ("incidents_open", inc.still_open),
        ("mttd_ms", inc.mttd_ms),
        ("mttr_ms", inc.mttr_ms),
        ("incidents_in_maintenance", inc.in_maintenance),
        ("alerts_fired", report.alerting.fired),
        ("pages_delivered", report.alerting.pages_delivered),
        ("pages_undelivered", report.alerting.pages_undelivered),
        ("pages_pending", report.alerting.pages_pending),
        ("mean_time_to_notify_ms", report.alerting.mean_time_to_notify_ms),
        ("median_time_to_notify_ms", report.alerting.median_time_to_notify_ms),
        ("restarts", report.restarts.total),
        ("deployments", dep.count),
        ("deployments_per_day", dep.per_day),
        ("median_lead_time_ms", dep.median_lead_time_ms),
        ("deploy_changes", report.deploys.host.changes),
        ("deploy_promoted", report.deploys.host.promoted),
        ("deploys_per_day", report.deploys.host.per_day),
        ("deploy_lead_time_median_ms", report.deploys.host.lead_time_median_ms),
        ("deploy_lead_time_p90_ms", report.deploys.host.lead_time_p90_ms),
        ("change_failure_rate", report.deploys.host.change_failure_rate),
        ("time_to_restore_median_ms", report.deploys.host.time_to_restore_median_ms),
        ("drift_detections", report.drift.count),
        ("audit_ok", audit.ok),
        ("audit_checked", audit.checked),
        ("audit_broken_seq", audit.broken_seq),
        ("audit_reason", audit.reason),
    ]
    return Table(
        "summary",
        "Summary",
        (Column("key", "Key"), Column("value", "Value")),
        tuple({"key": k, "value": v} for k, v in values),
        empty="no summary",
        detail=True,
    )


def tables(report: Report) -> list[Table]:
    """Every table of the report, in reading order."""
    models = tuple(
        {
            "model": m.name,
            "runs": m.runs,
            "ok_runs": m.ok_runs,
            "availability": m.availability,
            "outage_ms": m.outage_ms,
            "planned_downtime_ms": m.planned_downtime_ms,
            "planned_runs": m.planned_runs,
            "state_changes": m.state_changes,
            "outcomes": " ".join(f"{k}={v}" for k, v in m.outcomes.items()),
            "last_run_ms": m.last_run_ms,
        }
        for m in report.models
    )
    latency = tuple(
        {
            "model": m.name,
            "metric": key,
            "count": s.count,
            "p50_ms": s.p50,
            "p95_ms": s.p95,
            "p99_ms": s.p99,
            "max_ms": s.max,
            "first_half_p95_ms": t.first_half_p95,
            "second_half_p95_ms": t.second_half_p95,
            "change_pct": t.change_pct,
            "trend": t.direction,
        }
        for m in report.models
        for key, _ in METRICS
        if (s := m.latency[key]).count
        for t in (m.trend[key],)
    )
    trend_points = tuple(
        {"model": m.name, "metric": key, "bucket_ms": p.ts_ms, "p95_ms": p.p95, "count": p.count}
        for m in report.models
        for key, _ in METRICS
        for p in m.trend[key].points
    )
    incidents = tuple(
        {
            "id": r.id,
            "subject": r.subject,
            "kind": r.kind,
            "severity": r.severity,
            "state": r.state,
            "opened_ms": r.opened_ms,
            "ttd_ms": r.ttd_ms,
            "ttr_ms": r.ttr_ms,
            "resolved_ms": r.resolved_ms,
            "root_id": r.root_id,
            "maintenance": r.maintenance,
            "cause": r.cause,
        }
        for r in report.incidents.rows
    )
    restarts = tuple(
        {
            "process": g.process,
            "reason": g.reason,
            "count": g.count,
            "first_ms": g.first_ms,
            "last_ms": g.last_ms,
            "last_detail": g.last_detail,
        }
        for g in report.restarts.groups
    )
    processes = tuple(
        {
            "process": p.process,
            "restarts": p.restarts,
            "exits": p.exits,
            "hangs": p.hangs,
            "quarantines": p.quarantines,
        }
        for p in report.restarts.processes
    )
    deployments = tuple(
        {
            "ts_ms": d.ts_ms,
            "model": d.model,
            "artifact": d.artifact,
            "artifact_kind": d.artifact_kind,
            "previous_artifact": d.previous_artifact,
            "first_run_category": d.first_run_category,
            "verified_ms": d.verified_ms,
            "lead_time_ms": d.lead_time_ms,
        }
        for d in report.deployments.rows
    )
    drift = tuple(
        {"ts_ms": d.ts_ms, "subject": d.subject, "kind": d.kind, "message": d.message}
        for d in report.drift.rows
    )
    resources = tuple(
        {
            "series": r.name,
            "labels": labels_text(r.labels),
            "unit": r.unit,
            "samples": r.samples,
            "mean": r.mean,
            "peak": r.peak,
            "capacity": r.capacity,
        }
        for r in report.resources
    )
    resource_points = tuple(
        {
            "series": r.name,
            "labels": labels_text(r.labels),
            "bucket_ms": p.ts_ms,
            "avg": p.avg,
            "max": p.max,
        }
        for r in report.resources
        for p in r.points
    )
    mon = report.monitoring
    monitoring = tuple(
        {"model": name, "monitored": name in mon.monitored} for name in mon.known_models
    )
    t = Column  # brevity below
    return [
        summary_table(report),
        Table(
            "models",
            "Availability per model",
            (
                t("model", "Model"),
                t("runs", "Runs", "int"),
                t("ok_runs", "OK runs", "int"),
                t("availability", "Availability", "frac"),
                t("outage_ms", "Outage", "ms"),
                t("planned_downtime_ms", "Planned downtime", "ms"),
                t("planned_runs", "Planned runs", "int"),
                t("state_changes", "State changes", "int"),
                t("outcomes", "Outcomes"),
                t("last_run_ms", "Last run", "ts"),
            ),
            models,
            empty="no models known",
        ),
        Table(
            "latency",
            "Probe latency (answered runs)",
            (
                t("model", "Model"),
                t("metric", "Metric"),
                t("count", "Runs", "int"),
                t("p50_ms", "p50", "ms"),
                t("p95_ms", "p95", "ms"),
                t("p99_ms", "p99", "ms"),
                t("max_ms", "Max", "ms"),
                t("first_half_p95_ms", "p95 1st half", "ms"),
                t("second_half_p95_ms", "p95 2nd half", "ms"),
                t("change_pct", "Change", "signed_pct"),
                t("trend", "Trend"),
            ),
            latency,
            empty="no answered probe runs",
        ),
        Table(
            "latency_trend",
            "Latency p95 per bucket",
            (
                t("model", "Model"),
                t("metric", "Metric"),
                t("bucket_ms", "Bucket", "ts"),
                t("p95_ms", "p95", "ms"),
                t("count", "Runs", "int"),
            ),
            trend_points,
            empty="no answered probe runs to chart",
            detail=True,
        ),
        Table(
            "incidents",
            "Incidents",
            (
                t("id", "#", "int"),
                t("subject", "Subject"),
                t("kind", "Kind"),
                t("severity", "Severity"),
                t("state", "State"),
                t("opened_ms", "Opened", "ts"),
                t("ttd_ms", "Time to detect", "ms"),
                t("ttr_ms", "Time to recover", "ms"),
                t("resolved_ms", "Resolved", "ts"),
                t("root_id", "Root #", "int"),
                t("maintenance", "Maintenance"),
                t("cause", "Cause"),
            ),
            incidents,
            empty="no incidents in this window",
        ),
        Table(
            "restarts",
            "Restarts by reason",
            (
                t("process", "Process"),
                t("reason", "Reason"),
                t("count", "Count", "int"),
                t("first_ms", "First", "ts"),
                t("last_ms", "Last", "ts"),
                t("last_detail", "Last detail"),
            ),
            restarts,
            empty="no restarts in this window",
        ),
        Table(
            "process_events",
            "Process events",
            (
                t("process", "Process"),
                t("restarts", "Restarts", "int"),
                t("exits", "Exits", "int"),
                t("hangs", "Hangs", "int"),
                t("quarantines", "Quarantines", "int"),
            ),
            processes,
            empty="no process exits, hangs, restarts or quarantines in this window",
        ),
        *deploy_tables(report),
        Table(
            "deployments",
            "Artifact changes seen by probes",
            (
                t("ts_ms", "Detected", "ts"),
                t("model", "Model"),
                t("artifact_kind", "Kind"),
                t("artifact", "Artifact", "sha"),
                t("previous_artifact", "Previous", "sha"),
                t("first_run_category", "First run"),
                t("verified_ms", "Verified", "ts"),
                t("lead_time_ms", "Lead time", "ms"),
            ),
            deployments,
            empty=report.deployments.note or "no deployments in this window",
        ),
        Table(
            "drift",
            "Drift detections",
            (
                t("ts_ms", "Time", "ts"),
                t("subject", "Subject"),
                t("kind", "Kind"),
                t("message", "Message"),
            ),
            drift,
            empty=report.drift.note or "no drift detections in this window",
        ),
        *alert_tables(report),
        Table(
            "resources",
            "Resource utilization",
            (
                t("series", "Series"),
                t("labels", "Labels"),
                t("unit", "Unit"),
                t("samples", "Samples", "int"),
                t("mean", "Mean", "unit"),
                t("peak", "Peak", "unit"),
                t("capacity", "Capacity", "unit"),
            ),
            resources,
            empty="no resource samples in this window",
        ),
        Table(
            "resource_points",
            "Resource series per bucket",
            (
                t("series", "Series"),
                t("labels", "Labels"),
                t("bucket_ms", "Bucket", "ts"),
                t("avg", "Mean", "num"),
                t("max", "Peak", "num"),
            ),
            resource_points,
            empty="no resource samples to chart",
            detail=True,
        ),
        Table(
            "monitoring",
            "Models under automated monitoring",
            (t("model", "Model"), t("monitored", "Probed in window", "bool")),
            monitoring,
            empty="no models to monitor",
        ),
    ]
