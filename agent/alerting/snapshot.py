"""What the alert engine reads: a small typed record of live state, and stored series.

The daemon builds a :class:`Snapshot` before each evaluation from what it already serves on
``/api/v1/status`` (model and process statuses), the incident book's open incidents, the
writer's health and its own heartbeat, and hands it a :class:`SeriesReader` over its read
connection. Nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from storage import queries
from storage.records import Incident, Labels, ModelStatus, ProcessStatus


class SeriesReader(Protocol):
    """Stored series, as rules read them."""

    def label_sets(self, name: str) -> list[Labels]:
        """The label sets of every stored series called ``name``."""
        ...

    def points(
        self, name: str, labels: Labels, since_ms: int, until_ms: int
    ) -> list[tuple[int, float]]:
        """Raw (time, value) samples of one series in ``[since_ms, until_ms]``, oldest first."""
        ...


class SqliteSeriesReader:
    """A :class:`SeriesReader` over a read connection to the agent's database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def label_sets(self, name: str) -> list[Labels]:
        """The label sets of every stored series called ``name``."""
        return [labels for n, labels in queries.list_series(self.conn, name) if n == name]

    def points(
        self, name: str, labels: Labels, since_ms: int, until_ms: int
    ) -> list[tuple[int, float]]:
        """Raw samples of one series in the window."""
        return queries.series_points(self.conn, name, labels, since_ms=since_ms, until_ms=until_ms)


class NoSeries:
    """A :class:`SeriesReader` with nothing stored (storage down, or tests of live state)."""

    def label_sets(self, name: str) -> list[Labels]:
        """No series."""
        return []

    def points(
        self, name: str, labels: Labels, since_ms: int, until_ms: int
    ) -> list[tuple[int, float]]:
        """No samples."""
        return []


@dataclass(frozen=True, slots=True)
class AgentSignals:
    """The agent's own health, as rules of kind ``agent`` read it.

    ``watchdog_late_s`` is how late the daemon's heartbeat tick woke against its schedule, the
    largest lateness since the previous evaluation (0 when on time): the event loop blocked
    or starved. The same tick is what pings systemd's watchdog.
    """

    storage_ok: bool = True
    storage_error: str = ""
    watchdog_late_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Live state at one evaluation.

    ``incidents`` are the open ones (with their ``root_id``). ``links`` maps each model to the
    process serving it; dependencies between processes are in each ``ProcessStatus.depends_on``.
    Drift per model is ``ModelStatus.drift`` (group -> since).
    """

    models: tuple[ModelStatus, ...] = ()
    processes: tuple[ProcessStatus, ...] = ()
    incidents: tuple[Incident, ...] = ()
    links: Mapping[str, str] = field(default_factory=dict)
    agent: AgentSignals = AgentSignals()
    series: SeriesReader = field(default_factory=NoSeries)

    def dependencies(self, subject: str) -> list[str]:
        """The subjects ``subject`` depends on, nearest first: a model's process, then that
        process's ``depends_on`` (transitively)."""
        out: list[str] = []
        todo: list[str] = []
        if subject.startswith("model:"):
            proc = self.links.get(subject.removeprefix("model:"))
            if proc:
                todo.append(proc)
        elif subject.startswith("process:"):
            todo.extend(self._depends_on(subject.removeprefix("process:")))
        while todo:
            name = todo.pop(0)
            if f"process:{name}" in out:
                continue
            out.append(f"process:{name}")
            todo.extend(self._depends_on(name))
        return out

    def _depends_on(self, process: str) -> tuple[str, ...]:
        for proc in self.processes:
            if proc.name == process:
                return proc.depends_on
        return ()
