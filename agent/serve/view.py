"""The agent as the API and ``/metrics`` see it: a narrow view, and the per-model statistics
both serve.

:class:`AgentView` is a protocol, never the runtime itself, so the API can be served over a
stand-in in tests and neither :mod:`agent.serve.api` nor :mod:`agent.serve.metrics` has to
import the other (or the daemon) to name what it reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from storage import queries
from storage.records import AgentStatus, Event
from storage.stats import summarize

if TYPE_CHECKING:
    from agent.alerting.maintenance import MaintenanceCalendar
    from agent.alerting.outbox import Sender
    from agent.alerting.outbox_store import OutboxStore
    from agent.alerting.silences import SilenceBook
    from agent.health.incidents import IncidentBook
    from agent.serve.exposition import Family
    from agent.supervise.supervisor import Supervisor
    from storage.alerts import AlertRow

__all__ = ["WINDOWS_MS", "AgentView", "AlertingView", "MetricFamilies", "model_stats"]

WINDOWS_MS = {"5m": 300_000, "1h": 3_600_000}
"""Latency percentiles are reported over these windows."""


class MetricFamilies(Protocol):
    """Metrics accumulated as things happen (the probe histograms), yielded at each scrape."""

    def collect(self) -> Iterator[Family]:
        """The families as they stand now."""
        ...


class AlertingView(Protocol):
    """What the API reads and acts on of the agent's alerting (``agent.runtime.alerting_job``):
    every member is used on the event loop."""

    silences: SilenceBook
    calendar: MaintenanceCalendar
    sender: Sender
    store: OutboxStore

    def alerts(self) -> list[AlertRow]:
        """The pending and firing alerts as of the last evaluation."""
        ...


class AgentView(Protocol):
    """What the API needs from the agent (kept narrow so tests can serve a stand-in)."""

    data_dir: Path
    incidents: IncidentBook
    supervisor: Supervisor

    @property
    def alerting(self) -> AlertingView:
        """The alerting job: alerts, silences, maintenance windows, channels, the outbox."""
        ...

    @property
    def probe_metrics(self) -> MetricFamilies:
        """The probe histograms and counters (read-only here: any collector will do)."""
        ...

    def status(self) -> AgentStatus: ...

    def model_info(self) -> dict[str, dict[str, Any]]: ...

    def emit(self, event: Event) -> None: ...

    async def probe_models(self, names: list[str]) -> None: ...


def model_stats(conn: sqlite3.Connection, model: str, now: int) -> dict[str, Any]:
    """Latency percentiles per window, outcome counts and availability over the last hour."""
    latency = {}
    for label, width in WINDOWS_MS.items():
        values = queries.probe_latencies(conn, model, now - width)
        latency[label] = {col: summarize(vals) for col, vals in values.items()}
    outcomes = queries.probe_outcomes(conn, model, now - WINDOWS_MS["1h"])
    total = sum(outcomes.values())
    return {
        "latency": latency,
        "outcomes_1h": outcomes,
        "availability_1h": (outcomes.get("ok", 0) / total) if total else None,
    }
