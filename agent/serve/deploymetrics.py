"""The deploy families of ``/metrics``: deploys by outcome, the deploy in flight per model, and
the DORA four keys over the last 30 days (docs/metrics.md, docs/kpi.md).

They are read from the database at scrape time, on a read-only connection in the scrape's
worker thread, through :mod:`storage.deploykpi` (the one place the keys are computed, as the
reports and the API compute them): the counts then survive agent restarts, which a counter kept
in memory would not. Deployments are few (one per change), so a scrape reads little.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

from agent.serve.exposition import Family, add_total, counter, gauge
from storage.deploykpi import deploy_counts, in_flight_states, load_kpis
from storage.records import DeployState

__all__ = ["IN_FLIGHT_STATES", "KPI_WINDOW_MS", "deploy_families"]

KPI_WINDOW_MS = 30 * 86_400_000
"""The four keys' gauges cover the last 30 days (DORA's usual month); reports and the API take
any window."""

IN_FLIGHT_STATES = tuple(str(s) for s in DeployState if not s.final)


def deploy_families(
    conn: sqlite3.Connection, models: Iterable[str], now_ms: int
) -> Iterator[Family]:
    """The families, read from ``conn``; ``models`` are the configured ones (each gets its
    in-progress states and frequency even before its first deploy)."""
    names = set(models)
    total = counter(
        "vigil_deployments",
        "Finished deployments by model, operation (deploy, rollback, record, config) and outcome",
        labels=["model", "operation", "outcome"],
    )
    for (model, op, outcome), n in sorted(deploy_counts(conn).items()):
        add_total(total, [model, op, outcome], float(n))
    yield total

    flying = in_flight_states(conn)
    progress = gauge(
        "vigil_deploy_in_progress",
        "1 for the state of the model's deployment in flight (none in flight: all 0)",
        labels=["model", "state"],
    )
    for model in sorted(names | set(flying)):
        for state in IN_FLIGHT_STATES:
            progress.add([model, state], 1.0 if flying.get(model) == state else 0.0)
    yield progress

    kpis = load_kpis(conn, since_ms=now_ms - KPI_WINDOW_MS, until_ms=now_ms)
    by_model = {k.model: k for k in kpis.models if k.model is not None}
    freq = gauge(
        "vigil_deploy_frequency_per_day",
        "Promoted changes per day over the last 30 days (DORA deployment frequency)",
        labels=["model"],
    )
    lead = gauge(
        "vigil_deploy_lead_time_seconds",
        "Lead time for changes (artifact created to promoted) over the last 30 days, by quantile",
        labels=["model", "quantile"],
    )
    cfr = gauge(
        "vigil_deploy_change_failure_ratio",
        "Failed changes / finished changes over the last 30 days (DORA change-failure rate)",
        labels=["model"],
    )
    restore = gauge(
        "vigil_deploy_time_to_restore_seconds",
        "Median time from a failed change to service restored over the last 30 days",
        labels=["model", "quantile"],
    )
    for model in sorted(names | set(by_model)):
        k = by_model.get(model)
        freq.add([model], k.per_day if k is not None else 0.0)
        if k is None:
            continue
        for q, value in (("0.5", k.lead_time_median_ms), ("0.9", k.lead_time_p90_ms)):
            if value is not None:
                lead.add([model, q], value / 1000)
        if k.change_failure_rate is not None:
            cfr.add([model], k.change_failure_rate)
        if k.time_to_restore_median_ms is not None:
            restore.add([model, "0.5"], k.time_to_restore_median_ms / 1000)
    yield from (freq, lead, cfr, restore)
