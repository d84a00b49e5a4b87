"""A test bench for the alert engine: a real Writer on a temp SQLite file, an injected clock
(every call names its own ``now_ms``), and the notifications and audit events collected."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from agent.alerting.engine import AlertEngine, Transition
from agent.alerting.maintenance import MaintenanceCalendar, MaintenanceWindow
from agent.alerting.model import NotificationRequest
from agent.alerting.notifier import Notifier
from agent.alerting.router import Route
from agent.alerting.rules import Rule
from agent.alerting.silences import SilenceBook
from agent.alerting.snapshot import Snapshot
from storage.db import connect
from storage.records import Event, Labels, ModelStatus, ProcessStatus
from storage.writer import Writer

T0 = 1_700_000_000_000


class FnSeries:
    """A SeriesReader whose one series' value at a time comes from a function."""

    def __init__(self, name: str, labels: Labels, value: Callable[[int], float]) -> None:
        self.name, self.labels, self.value = name, labels, value

    def label_sets(self, name: str) -> list[Labels]:
        return [self.labels] if name == self.name else []

    def points(
        self, name: str, labels: Labels, since_ms: int, until_ms: int
    ) -> list[tuple[int, float]]:
        return [(until_ms, self.value(until_ms))] if name == self.name else []


def model(name: str, state: str, since_ms: int = T0) -> ModelStatus:
    return ModelStatus(name=name, protocol="openai", url="http://x", state=state, since_ms=since_ms)


def process(name: str, state: str, **kw: object) -> ProcessStatus:
    return ProcessStatus(name=name, state=state, since_ms=T0, **kw)  # type: ignore[arg-type]


class Bench:
    """Engine, silences, maintenance and notifier over a real database file."""

    def __init__(
        self,
        tmp_path: Path,
        rules: Iterable[Rule],
        routes: Sequence[Route] = (Route(channel="ops"),),
        windows: Iterable[MaintenanceWindow] = (),
        **engine_kw: float,
    ) -> None:
        self.path = tmp_path / "vigil.db"
        self.writer = Writer(self.path, flush_interval_s=0.05)
        self.writer.start()
        self.events: list[Event] = []
        self.engine = AlertEngine(rules, self.writer, self.emit, **engine_kw)  # type: ignore[arg-type]
        self.silences = SilenceBook(self.writer, self.emit)
        self.calendar = MaintenanceCalendar(windows, self.emit)
        self.notifier = Notifier(routes, self.silences, self.calendar)
        self.sent: list[NotificationRequest] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.writer.submit_one(event)

    def tick(self, now_ms: int, snap: Snapshot) -> list[Transition]:
        transitions = self.engine.evaluate(now_ms, snap)
        self.sent += self.notifier.step(now_ms, transitions, self.engine, snap)
        return transitions

    def kinds(self, prefix: str) -> list[str]:
        return [e.kind for e in self.events if e.kind.startswith(prefix)]

    def read(self, sql: str) -> list[tuple[object, ...]]:
        assert self.writer.flush()
        conn = connect(self.path, readonly=True)
        try:
            return list(conn.execute(sql))
        finally:
            conn.close()

    def close(self) -> None:
        self.writer.close()
