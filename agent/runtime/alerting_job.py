"""Alerting in the running agent: evaluation every few seconds, the notifier, the outbox's sender.

Each evaluation (a scheduler job, ``[alerting] evaluate_interval``) builds a
:class:`~agent.alerting.snapshot.Snapshot` from live state (model and process statuses, the open
incidents with their roots, the links from models to processes, storage health and the loop's
own lateness), evaluates the rules, lets the notifier decide what is due and hands that to
:meth:`Sender.add <agent.alerting.outbox.Sender.add>`, which has the writer commit it to the
outbox before the sender may see it. Series rules read the windows of a
:class:`~agent.alerting.seriescache.SeriesCache` that the writer keeps current with every
commit, so an evaluation usually reads nothing and runs on the loop (a few hundred
microseconds); when a window must be read from SQLite (the first evaluation, a new rule, after
retention or a sample stored out of order) that evaluation runs on a thread of its own
(with its own read connection), never on the loop. The sender runs on the loop with every send
bounded by a timeout, and the channels that block (SMTP, exec) run theirs off it. So delivery
never holds up probing, supervision or storage, and a receiver that is down only leaves
notifications undelivered.

What the API, the CLI and the TUI read is here too: :attr:`AlertingJob.engine` (with
:meth:`AlertingJob.alerts`, the pending and firing alerts as of the last evaluation, safe to
read on the loop), :attr:`AlertingJob.silences` (create and expire on the loop),
:attr:`AlertingJob.calendar`, :attr:`AlertingJob.sender` (``health`` per channel) and
:attr:`AlertingJob.store` (the outbox's rows, ``entries()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent.alerting.channels.base import Channel, ChannelUnavailable
from agent.alerting.channels.registry import build_channel
from agent.alerting.engine import AlertEngine, Transition
from agent.alerting.maintenance import MaintenanceCalendar
from agent.alerting.notifier import Notifier
from agent.alerting.outbox import Sender
from agent.alerting.outbox_store import OutboxStore
from agent.alerting.seriescache import SeriesCache
from agent.alerting.silences import SilenceBook
from agent.alerting.snapshot import AgentSignals, NoSeries, SeriesReader, Snapshot
from agent.config import AlertingConfig
from agent.config.alerting.channels import ChannelSettings
from agent.health.incidents import IncidentBook
from probes.base import now_ms
from storage import outbox as outbox_sql
from storage.alerts import AlertRow
from storage.db import connect
from storage.records import AgentStatus, Event, Incident
from storage.writer import Writer

log = logging.getLogger("vigil.alerts")

HEARTBEAT_S = 1.0
RESTORE_LOOKBACK_MS = 7 * 86_400_000
"""How far back the outbox is read at start to learn which firing alerts were notified."""


class Heartbeat:
    """A tick every ``period_s`` on the loop; how late it woke is how long the loop was held."""

    def __init__(self, period_s: float = HEARTBEAT_S) -> None:
        self.period_s = period_s
        self._worst_s = 0.0

    async def run(self) -> None:
        """Tick until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period_s
            await asyncio.sleep(self.period_s)
            self._worst_s = max(self._worst_s, loop.time() - due)

    def take(self) -> float:
        """The worst lateness (seconds) since the previous call."""
        worst, self._worst_s = self._worst_s, 0.0
        return worst


class PlannedIncidents(IncidentBook):
    """The incident book, marking incidents opened inside a maintenance window as planned:
    ``evidence["planned"] = "maintenance: <window>"`` (reports count them apart)."""

    def __init__(
        self,
        writer: Writer,
        emit: Callable[[Event], None],
        planned: Callable[[str, int], str | None],
    ) -> None:
        super().__init__(writer, emit)
        self.planned = planned

    def open(
        self,
        subject: str,
        kind: str,
        *,
        evidence: Mapping[str, Any] | None = None,
        opened_ms: int | None = None,
        **kw: Any,
    ) -> Incident:
        """Open as the book does; inside a window, with the planned mark in the evidence."""
        reason = None
        if "planned" not in (evidence or {}):
            reason = self.planned(subject, opened_ms if opened_ms is not None else now_ms())
        if reason is not None:
            evidence = {**(evidence or {}), "planned": reason}
        return super().open(subject, kind, evidence=evidence, opened_ms=opened_ms, **kw)


class AlertingJob:
    """The engine, silences, maintenance, notifier and sender of one agent.

    Args:
        config: the alerting config in force.
        writer: the agent's writer (alerts, silences and the outbox are written through it).
        emit: records an audit event.
        db_path: the database, for the rules' read connection.
        status: the agent's live status (models, processes, storage).
        incidents: the incident book (open incidents and their roots).
        links: model name -> the process serving it.
    """

    def __init__(
        self,
        config: AlertingConfig,
        *,
        writer: Writer,
        emit: Callable[[Event], None],
        db_path: Path,
        status: Callable[[], AgentStatus],
        incidents: IncidentBook,
        links: Callable[[], Mapping[str, str]],
    ) -> None:
        self.config = config
        self.writer = writer
        self.emit = emit
        self.db_path = db_path
        self._status = status
        self.incidents = incidents
        self._links = links
        self.engine = AlertEngine(
            config.rules,
            writer,
            emit,
            flap_window_s=config.flap_window_s,
            flap_transitions=config.flap_transitions,
        )
        self.silences = SilenceBook(writer, emit)
        self.calendar = MaintenanceCalendar(config.maintenance, emit)
        self.notifier = Notifier(config.routes, self.silences, self.calendar)
        self.store = OutboxStore(writer)
        self.sender = Sender(self.store, self._channels(config.channels, {}))
        self.heartbeat = Heartbeat()
        self.series = SeriesCache(jobs_run=lambda: writer.steps_run)
        self.series.watch(self.engine.rules)
        writer.add_commit_listener(self.series.committed)
        self.evaluations = 0
        self.on_thread = 0
        """Evaluations that had to read series from SQLite (on the alerting thread)."""
        self._alerts: list[AlertRow] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vigil-alerts")
        self._conn: sqlite3.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- what others read ---------------------------------------------------------------------

    def alerts(self) -> list[AlertRow]:
        """The pending and firing alerts as of the last evaluation, oldest first."""
        return list(self._alerts)

    def counts(self) -> Counter[tuple[str, str]]:
        """Alerts by (state, severity), pending and firing, plus ``silenced`` for firing alerts
        muted by a silence now (for ``/metrics``)."""
        out: Counter[tuple[str, str]] = Counter()
        at = now_ms()
        for row in self._alerts:
            out[(row.state, row.severity)] += 1
            if row.state == "firing" and self.silences.silencing(dict(row.labels), at):
                out[("silenced", row.severity)] += 1
        return out

    def planned_reason(self, subject: str, at_ms: int) -> str | None:
        """``maintenance: <window>`` when ``subject`` (or what it depends on) is inside a
        maintenance window at ``at_ms``; None otherwise."""
        snap = Snapshot(processes=tuple(self._status().processes), links=dict(self._links()))
        for subj in (subject, *snap.dependencies(subject)):
            window = self.calendar.in_maintenance(subj, at_ms)
            if window is not None:
                return f"maintenance: {window.name}"
        return None

    # --- lifecycle ----------------------------------------------------------------------------

    def load(self, conn: sqlite3.Connection) -> None:
        """At start (before the loop runs anything): the alerts, silences and which firing
        alerts the outbox already holds a notification for, so their groups carry on."""
        at = now_ms()
        self.engine.load(conn)
        self.silences.load(conn, at)
        active = self.engine.active()
        self._alerts = active
        entries = outbox_sql.list_entries(conn, since_ms=at - RESTORE_LOOKBACK_MS, limit=100_000)
        self.notifier.restore(active, (e.payload for e in entries), at)

    def start(self) -> None:
        """Start the sender and the heartbeat (on the running loop, once storage is up)."""
        self._tasks = [
            asyncio.create_task(self.sender.run(), name="notify-sender"),
            asyncio.create_task(self.heartbeat.run(), name="alerting-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop sending (what is unsent stays in the outbox for the next start)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.sender.close()
        with contextlib.suppress(RuntimeError):
            await asyncio.get_running_loop().run_in_executor(self._pool, self._close_conn)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def apply(self, config: AlertingConfig) -> None:
        """Take a reloaded config: rules, flap control, windows, routes and channels."""
        old, self.config = self.config, config
        self.engine.set_rules(config.rules)
        self.series.watch(self.engine.rules)
        self.engine.flap_window_ms = int(config.flap_window_s * 1000)
        self.engine.flap_transitions = config.flap_transitions
        self.calendar.set_windows(config.maintenance)
        self.notifier.router.set_routes(config.routes)
        if config.channels != old.channels:
            kept = {
                c.name: c for c in self.sender.channels.values() if c.settings in config.channels
            }
            for channel in self.sender.set_channels(self._channels(config.channels, kept)):
                with contextlib.suppress(Exception):
                    await channel.close()

    def _channels(
        self, settings: Iterable[ChannelSettings], kept: Mapping[str, Channel]
    ) -> list[Channel]:
        out = []
        for s in settings:
            current = kept.get(s.name)
            if current is not None:
                out.append(current)
                continue
            try:
                out.append(build_channel(s))
            except ChannelUnavailable as exc:
                # Its notifications wait in the outbox until the channel can be built.
                log.error("notify channel unavailable channel=%s error=%r", s.name, str(exc))
                self.emit(
                    Event(
                        ts_ms=now_ms(),
                        kind="notify.channel_unavailable",
                        subject="alerts",
                        message=f"channel {s.name} unavailable: {exc}",
                        data={"channel": s.name, "error": str(exc)},
                    )
                )
        return out

    # --- one evaluation -----------------------------------------------------------------------

    async def evaluate(self) -> None:
        """One evaluation: snapshot, rules, notifier, outbox.

        The rules run on the loop when every series window they read is current in memory
        (the usual case: nothing to read), and on the alerting thread when one must be read
        from SQLite first.
        """
        at = now_ms()
        snap = self._snapshot()
        self.series.apply(at)
        if self.series.needs_fill(at):
            loop = asyncio.get_running_loop()
            transitions = await loop.run_in_executor(self._pool, self._evaluate, at, snap)
            self.on_thread += 1
        else:
            transitions = self.engine.evaluate(at, snap)
        self._alerts = self.engine.active()
        self.evaluations += 1
        try:
            requests = self.notifier.step(at, transitions, self.engine, snap)
        except Exception:  # a bug here must not stop the next evaluation
            log.exception("alert notifier failed")
            return
        self.sender.add(requests)

    def _snapshot(self) -> Snapshot:
        status = self._status()
        return Snapshot(
            models=status.models,
            processes=status.processes,
            incidents=tuple(self.incidents.open_incidents()),
            links=dict(self._links()),
            agent=AgentSignals(
                storage_ok=status.storage_ok,
                storage_error=getattr(self.writer, "last_error", None) or "",
                watchdog_late_s=self.heartbeat.take(),
            ),
            series=self.series,
        )

    def _evaluate(self, at_ms: int, snap: Snapshot) -> list[Transition]:
        """On the alerting thread: read the series windows due, then the rules."""
        return self.engine.evaluate(at_ms, dataclasses.replace(snap, series=self._reader(at_ms)))

    def _reader(self, at_ms: int) -> SeriesReader:
        if self._conn is None:
            try:
                self._conn = connect(self.db_path, readonly=True)
            except (sqlite3.Error, OSError) as exc:
                log.warning("alert rules cannot read series error=%r", str(exc))
                return NoSeries()
        try:
            self.series.fill(self._conn, at_ms)
        except sqlite3.Error as exc:
            # The windows not read make their rules fail this evaluation (their alerts keep
            # their state); the next evaluation tries again.
            log.warning("alert rules cannot read series error=%r", str(exc))
        return self.series

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
