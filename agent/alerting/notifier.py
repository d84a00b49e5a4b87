"""The notifier: one step after each evaluation, from transitions to notification requests.

It expires silences whose time is up, notices maintenance windows starting and ending, works
out which alerts are muted (a silence matching their labels, a maintenance window covering
their subject or one of its dependencies) and which are folded under a root alert, and lets
the router decide what is due. The daemon runs, each evaluation::

    transitions = engine.evaluate(now_ms, snapshot)
    requests = notifier.step(now_ms, transitions, engine, snapshot)
    outbox.add(requests)  # persisted before anything is sent
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent.alerting.engine import AlertEngine, Transition
from agent.alerting.maintenance import MaintenanceCalendar, WindowChange
from agent.alerting.model import NoticeKind, NotificationRequest
from agent.alerting.router import Route, Router, stable_id
from agent.alerting.silences import SilenceBook
from agent.alerting.snapshot import Snapshot
from agent.alerting.suppress import fold_roots
from storage.alerts import AlertRow
from storage.records import make_labels


class Notifier:
    """Silences, maintenance, suppression and routing, in one step."""

    def __init__(
        self, routes: Iterable[Route], silences: SilenceBook, maintenance: MaintenanceCalendar
    ) -> None:
        self.router = Router(routes)
        self.silences = silences
        self.maintenance = maintenance

    def restore(
        self, active: Iterable[AlertRow], outbox: Iterable[Mapping[str, Any]], now_ms: int
    ) -> None:
        """At start: regroup the firing alerts the engine loaded, counting those a firing
        notification in the outbox (``outbox``: stored payloads) carries as notified."""
        notified: dict[str, set[str]] = {}
        for payload in outbox:
            if payload.get("kind") not in (NoticeKind.FIRING, NoticeKind.FLAPPING):
                continue
            fps = notified.setdefault(str(payload.get("channel")), set())
            for alert in payload.get("alerts") or ():
                if alert.get("status") == "firing":
                    fps.add(str(alert.get("fingerprint")))
        self.router.seed(active, notified, now_ms)

    def mute_reason(self, row: AlertRow, snap: Snapshot, now_ms: int) -> str | None:
        """Why an alert's notifications are muted now (a silence, a window), or None."""
        silence = self.silences.silencing(dict(row.labels), now_ms)
        if silence is not None:
            return f"silence {silence.id}"
        for subject in (row.subject, *snap.dependencies(row.subject)):
            window = self.maintenance.in_maintenance(subject, now_ms)
            if window is not None:
                return f"maintenance {window.name}"
        return None

    def step(
        self, now_ms: int, transitions: list[Transition], engine: AlertEngine, snap: Snapshot
    ) -> list[NotificationRequest]:
        """What to send after this evaluation."""
        self.silences.step(now_ms)
        out = [n for c in self.maintenance.step(now_ms) for n in self._window_notices(c)]
        active = engine.active()
        muted: dict[str, str] = {}
        for row in [*active, *(t.alert for t in transitions)]:
            reason = self.mute_reason(row, snap, now_ms)
            if reason is not None:
                muted[row.fingerprint] = reason
        out += self.router.step(
            now_ms,
            transitions,
            active,
            folds=fold_roots(active, snap),
            muted=muted,
            flapping=engine.flapping(),
        )
        return out

    def _window_notices(self, change: WindowChange) -> list[NotificationRequest]:
        if not change.window.notify:
            return []
        kind = NoticeKind.MAINTENANCE_START if change.started else NoticeKind.MAINTENANCE_END
        w = change.window
        scope = ", ".join(w.subjects) or "the whole host"
        what = "started" if change.started else "ended"
        channels = dict.fromkeys(r.channel for r in self.router.routes)
        return [
            NotificationRequest(
                channel=channel,
                notification_id=stable_id(channel, "maintenance", w.name, kind, change.at_ms),
                dedup_key=stable_id(channel, "maintenance", w.name, change.ends_ms),
                kind=kind,
                created_ms=change.at_ms,
                title=f"[MAINTENANCE] {w.name} {what}: {scope}",
                group_labels=make_labels(window=w.name),
            )
            for channel in channels
        ]
