"""The host report's numbers, computed from the database alone.

Everything here is read from one read-only connection inside one read transaction, so a report
on a running agent is a consistent snapshot and a report on a stopped agent's data dir (or a
copied ``vigil.db``) needs nothing else. Rendering lives in ``agent.report``; the record types
are in :mod:`storage.report_model`, the parts read from events and incidents in
:mod:`storage.report_events`.

What the numbers mean (docs/reports.md says the same for users):

- **Availability** of a model is ``ok runs / runs`` over the window's *unplanned* runs: each
  canary run is a real request, and probes run at a fixed interval, so the share of good runs
  estimates the share of time the model served correctly without guessing its state while the
  agent itself was down. Runs in planned windows (a start someone asked for) are counted
  apart; **planned downtime** is the time in ``starting``/``stopped`` and **outage** the time
  ``model_down`` incidents covered (docs/kpi.md, the KPI glossary).
- **Latency** percentiles (linear interpolation) cover the *answered* runs (``ok``, ``slow``,
  ``wrong_output``), as the API's do: a refused connection has no latency worth averaging.
  The **trend** is the p95 per bucket, and the change from the first to the second half of the
  span the model's answered runs cover, given at least ``MIN_TREND_RUNS`` (20) answered runs
  in each half; with fewer it is ``too few runs`` (a p95 of a handful of runs is noise, and a
  "+175 %" from 9 runs in 40 s says nothing).
- **Time to detect** is ``opened_ms - began_ms`` (when the fault began; older incidents: their
  evidence's ``failing_since_ms``); **time to recover** is the incident's ``ttr_ms``
  (resolved - began); MTTR is their mean over incidents resolved in the window. Both cover
  *unplanned* incidents only: those opened inside a maintenance window (evidence ``planned``
  = ``maintenance: <name>``) are counted apart.
- **Alerting** (:mod:`storage.report_alerting`): alert occurrences that started firing in the
  window by rule and severity, notifications (outbox rows) created in it per channel and
  delivery state, the **time to first notification** of each unplanned incident opened in the
  window (its fault's start to the delivery of the first delivered notification created at or
  after it that carries an alert on the incident's subject), and the silences and maintenance
  windows active in the window.
- **Deploys** are Vigil's own (``vigil deploy``, rollbacks, records), with the DORA four keys
  per model and for the host (:mod:`storage.deploykpi`, docs/kpi.md). **Artifact changes seen
  by probes** (``deployments``) are ``model.artifact`` events whose artifact differs from the
  model's previous one, whoever made them. **Drift detections** are ``drift.*`` events (the
  agent's drift checks, agent/health/drift.py).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence

from storage.audit import verify_chain
from storage.deploykpi import load_kpis
from storage.queries import ANSWERED, LATENCY_COLUMNS, list_series, series_range, series_summary
from storage.report_alerting import alerting_in
from storage.report_events import (
    deployments_in,
    drift_in,
    incidents_in,
    json_object,
    outage_ms,
    planned_downtime_ms,
    restarts_in,
    scalar,
)
from storage.report_model import (
    SCHEMA_VERSION,
    AuditResult,
    Coverage,
    LatencySummary,
    LatencyTrend,
    ModelReport,
    Monitoring,
    Report,
    ResourcePoint,
    ResourceRow,
    TrendPoint,
    Window,
)
from storage.stats import percentile

DAY_MS = 86_400_000
BUCKET_CHOICES_MS = (
    60_000,
    300_000,
    900_000,
    3_600_000,
    6 * 3_600_000,
    DAY_MS,
    7 * DAY_MS,
    30 * DAY_MS,
)
MAX_BUCKETS = 48
"""Charts and trend series use the smallest bucket from the list that gives at most this many."""

FLAT_PCT = 10.0
"""A p95 change within this many percent either way is reported as ``flat``."""

MIN_TREND_RUNS = 20
"""A trend (change and direction) needs at least this many answered runs in *each* half;
with fewer, ``direction`` is ``too few runs`` and ``change_pct`` is None."""

RESOURCES: tuple[tuple[str, str, str | None], ...] = (
    # (series, unit, capacity series with the same labels)
    ("host.cpu.percent", "%", None),
    ("host.mem.percent", "%", None),
    ("host.mem.used_bytes", "bytes", "host.mem.total_bytes"),
    ("gpu.util.percent", "%", None),
    ("gpu.mem.used_bytes", "bytes", "gpu.mem.total_bytes"),
    ("process.cpu.percent", "%", None),
    ("process.rss_bytes", "bytes", None),
)
"""The series whose mean and peak the report shows. Host series are the unlabelled totals
(not ``core``); GPU and process series are shown per ``gpu`` and ``process``."""


def bucket_for(span_ms: int) -> int:
    """The bucket width for a window: the smallest choice giving at most ``MAX_BUCKETS``."""
    for width in BUCKET_CHOICES_MS:
        if span_ms <= width * MAX_BUCKETS:
            return width
    return BUCKET_CHOICES_MS[-1]


def build_report(
    conn: sqlite3.Connection,
    *,
    since_ms: int,
    until_ms: int,
    generated_ms: int | None = None,
    host: str | None = None,
    models: Sequence[str] | None = None,
) -> Report:
    """Compute the whole report over ``[since_ms, until_ms]``.

    Args:
        conn: a connection (read-only is enough); the report reads one snapshot of it.
        host: the host name; default: the one the last ``agent.started`` event recorded.
        models: the configured models, when the caller has the config; default: the models
            the last ``agent.started``/``config.reloaded`` event listed (plus any that ran).
    """
    if since_ms > until_ms:
        raise ValueError("since_ms must not be after until_ms")
    window = Window(since_ms, until_ms, bucket_for(until_ms - since_ms))
    own_txn = not conn.in_transaction
    if own_txn:
        conn.execute("BEGIN")  # one snapshot for every query below
    try:
        return _build(conn, window, generated_ms or until_ms, host, models)
    finally:
        if own_txn:
            conn.execute("COMMIT")


def _build(
    conn: sqlite3.Connection,
    window: Window,
    generated_ms: int,
    host: str | None,
    models: Sequence[str] | None,
) -> Report:
    notes: list[str] = []
    monitoring = _monitoring(conn, window, models)
    model_reports = tuple(_model(conn, window, name) for name in monitoring.known_models)
    deployments = deployments_in(conn, window)
    drift = drift_in(conn, window)
    coverage = _coverage(conn, window)
    # Notes are report-wide caveats; a section's own note (no deployments, no drift) stays in
    # its section, so that a reader does not meet the same text twice.
    if coverage.note:
        notes.append(coverage.note)
    chain = verify_chain(conn)
    events_in_window = scalar(
        conn,
        "SELECT count(*) FROM events WHERE ts BETWEEN ? AND ?",
        window.since_ms,
        window.until_ms,
    )
    return Report(
        schema_version=SCHEMA_VERSION,
        host=host if host is not None else _recorded_host(conn, window),
        generated_ms=generated_ms,
        window=window,
        models=model_reports,
        incidents=incidents_in(conn, window),
        restarts=restarts_in(conn, window),
        deployments=deployments,
        drift=drift,
        resources=_resources(conn, window),
        monitoring=monitoring,
        audit=AuditResult(
            ok=chain.ok,
            checked=chain.checked,
            broken_seq=chain.broken_seq,
            reason=chain.reason,
            events_in_window=int(events_in_window or 0),
        ),
        coverage=coverage,
        notes=tuple(notes),
        alerting=alerting_in(conn, window),
        deploys=load_kpis(conn, since_ms=window.since_ms, until_ms=window.until_ms),
    )


def _recorded_host(conn: sqlite3.Connection, window: Window) -> str | None:
    for (data,) in conn.execute(
        "SELECT data FROM events WHERE kind = 'agent.started' AND ts <= ? ORDER BY seq DESC",
        (window.until_ms,),
    ):
        name = json_object(data).get("host")
        if isinstance(name, str) and name:
            return name
    return None


# --- models ------------------------------------------------------------------------------


def _monitoring(
    conn: sqlite3.Connection, window: Window, configured: Sequence[str] | None
) -> Monitoring:
    ran = {
        str(m)
        for (m,) in conn.execute(
            "SELECT DISTINCT model FROM probe_runs WHERE ts BETWEEN ? AND ?",
            (window.since_ms, window.until_ms),
        )
    }
    if configured is not None:
        known, source = set(configured), "config"
    else:
        listed = _configured_models(conn, window)
        if listed is not None:
            known, source = listed, "events"
        else:
            # A database from before the agent recorded its model list: the models that were
            # probed or had events in the window are all that is known.
            known = {
                str(s)[len("model:") :]
                for (s,) in conn.execute(
                    "SELECT DISTINCT subject FROM events WHERE subject LIKE 'model:%' "
                    "AND ts BETWEEN ? AND ?",
                    (window.since_ms, window.until_ms),
                )
            }
            source = "runs"
    known |= ran
    names = tuple(sorted(known))
    monitored = tuple(n for n in names if n in ran)
    return Monitoring(
        known_models=names,
        monitored=monitored,
        unmonitored=tuple(n for n in names if n not in ran),
        share=(len(monitored) / len(names)) if names else None,
        source=source,
    )


def _configured_models(conn: sqlite3.Connection, window: Window) -> set[str] | None:
    """The model list the newest config-bearing event before the window's end recorded."""
    row = conn.execute(
        "SELECT data FROM events WHERE kind IN ('agent.started', 'config.reloaded') "
        "AND ts <= ? AND json_valid(data) AND json_type(data, '$.models') = 'array' "
        "ORDER BY seq DESC LIMIT 1",
        (window.until_ms,),
    ).fetchone()
    if row is None:
        return None
    return {str(m) for m in json_object(row[0]).get("models", [])}


def _model(conn: sqlite3.Connection, window: Window, name: str) -> ModelReport:
    rows = conn.execute(
        "SELECT ts, ok, category, e2e_ms, ttft_ms, itl_ms, planned FROM probe_runs "
        "WHERE model = ? AND ts BETWEEN ? AND ? ORDER BY ts, id",
        (name, window.since_ms, window.until_ms),
    ).fetchall()
    outcomes: dict[str, int] = defaultdict(int)
    answered: dict[str, list[tuple[int, float]]] = {c: [] for c in LATENCY_COLUMNS}
    ok_runs = planned_runs = 0
    for ts, ok, category, e2e, ttft, itl, planned in rows:
        if planned:
            planned_runs += 1  # a planned start's failures count against nothing
            continue
        outcomes[str(category)] += 1
        ok_runs += 1 if ok else 0
        if category in ANSWERED:
            for col, value in zip(LATENCY_COLUMNS, (ttft, itl, e2e), strict=True):
                if value is not None:
                    answered[col].append((int(ts), float(value)))
    runs = len(rows) - planned_runs
    state_changes = scalar(
        conn,
        "SELECT count(*) FROM events WHERE kind = 'model.state_changed' AND subject = ? "
        "AND ts BETWEEN ? AND ?",
        f"model:{name}",
        window.since_ms,
        window.until_ms,
    )
    return ModelReport(
        name=name,
        runs=runs,
        ok_runs=ok_runs,
        availability=(ok_runs / runs) if runs else None,
        planned_runs=planned_runs,
        planned_downtime_ms=planned_downtime_ms(conn, window, name),
        outage_ms=outage_ms(conn, window, name),
        outcomes=dict(sorted(outcomes.items())),
        first_run_ms=int(rows[0][0]) if rows else None,
        last_run_ms=int(rows[-1][0]) if rows else None,
        state_changes=int(state_changes or 0),
        latency={col: _summary([v for _, v in answered[col]]) for col in LATENCY_COLUMNS},
        trend={col: _trend(answered[col], window) for col in LATENCY_COLUMNS},
    )


def _summary(values: Iterable[float]) -> LatencySummary:
    data = sorted(values)
    return LatencySummary(
        count=len(data),
        p50=percentile(data, 50),
        p95=percentile(data, 95),
        p99=percentile(data, 99),
        mean=(sum(data) / len(data)) if data else None,
        max=data[-1] if data else None,
    )


def _trend(points: list[tuple[int, float]], window: Window) -> LatencyTrend:
    buckets: dict[int, list[float]] = defaultdict(list)
    for ts, value in points:
        start = window.since_ms + ((ts - window.since_ms) // window.bucket_ms) * window.bucket_ms
        buckets[start].append(value)
    series = tuple(
        TrendPoint(ts_ms=start, p95=percentile(sorted(vals), 95) or 0.0, count=len(vals))
        for start, vals in sorted(buckets.items())
    )
    first = second = change = None
    early: list[float] = []
    late: list[float] = []
    direction = "n/a"
    if points:
        # Halves of the span the runs cover, not of the window: retention or a late start
        # would otherwise leave the first half of a long window empty.
        mid = (points[0][0] + points[-1][0]) / 2
        early = sorted(v for ts, v in points if ts < mid)
        late = sorted(v for ts, v in points if ts >= mid)
        first, second = percentile(early, 95), percentile(late, 95)
        if min(len(early), len(late)) < MIN_TREND_RUNS:
            direction = "too few runs"
        elif first is not None and second is not None and first > 0:
            change = (second - first) / first * 100.0
            direction = (
                "slower" if change > FLAT_PCT else "faster" if change < -FLAT_PCT else "flat"
            )
    return LatencyTrend(
        first_half_p95=first,
        second_half_p95=second,
        change_pct=change,
        direction=direction,
        first_half_runs=len(early),
        second_half_runs=len(late),
        points=series,
    )


# --- resources and coverage ----------------------------------------------------------------


def _resources(conn: sqlite3.Connection, window: Window) -> tuple[ResourceRow, ...]:
    out: list[ResourceRow] = []
    for name, unit, capacity_name in RESOURCES:
        for found, labels in list_series(conn, name):
            if found != name:
                continue  # list_series matches a prefix
            if name.startswith("host.") and labels:
                continue  # per-core and other parts: the total is what the report shows
            # Raw samples where retention kept them, the rollups for older parts.
            summary = series_summary(
                conn, name, labels, since_ms=window.since_ms, until_ms=window.until_ms
            )
            if not summary.count or summary.mean is None or summary.max is None:
                continue
            capacity = None
            if capacity_name is not None:
                capacity = series_summary(
                    conn, capacity_name, labels, since_ms=window.since_ms, until_ms=window.until_ms
                ).max
            points = series_range(
                conn,
                name,
                labels,
                since_ms=window.since_ms,
                until_ms=window.until_ms,
                step_ms=window.bucket_ms,
            )
            out.append(
                ResourceRow(
                    name=name,
                    labels=dict(labels),
                    unit=unit,
                    samples=summary.count,
                    mean=summary.mean,
                    peak=summary.max,
                    capacity=capacity,
                    points=tuple(ResourcePoint(p.ts_ms, p.avg, p.max) for p in points),
                )
            )
    return tuple(out)


def _coverage(conn: sqlite3.Connection, window: Window) -> Coverage:
    first_run = scalar(
        conn,
        "SELECT min(ts) FROM probe_runs WHERE ts BETWEEN ? AND ?",
        window.since_ms,
        window.until_ms,
    )
    first_sample = series_summary(
        conn, "host.cpu.percent", since_ms=window.since_ms, until_ms=window.until_ms
    ).first_ms
    note = None
    if first_run is None and first_sample is None:
        note = "no probe runs or resource samples in the window"
    elif first_run is None or first_run - window.since_ms > window.bucket_ms:
        note = (
            "probe runs start after the window does: older ones were purged by retention "
            "([agent].retention) or the agent was not running, so availability and latency "
            "cover less than the window"
        )
    return Coverage(
        first_probe_run_ms=int(first_run) if first_run is not None else None,
        first_sample_ms=first_sample,
        note=note,
    )
