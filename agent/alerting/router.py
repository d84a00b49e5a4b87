"""Routes and groups: the engine's transitions become notification requests, per route.

Each :class:`Route` takes the alerts matching its severities and matchers and groups them by
its ``group_by`` labels, with Alertmanager's timers: a new group waits ``group_wait`` before
its first notification (so alerts starting together go out together); after that, the group
is looked at every ``group_interval`` and notified when an alert joined it or resolved; an
unchanged group still firing is notified again after ``repeat_interval``.

Noise control on top: an alert *folded* under a root alert (its subject's outage follows from
the root's, see :mod:`agent.alerting.suppress`) joins the root's group instead of its own, so
the outage is one message, and its resolution still goes out with that group. A *muted* alert
(silenced, in maintenance) is left out of notifications, firing and resolved alike. A
*flapping* alert is announced once as flapping and left out until it settles; then its state
at that moment is notified.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.alerting.engine import FIRING, RESOLVED, Transition
from agent.alerting.model import AlertNotice, NoticeKind, NotificationRequest
from agent.config.alerting.routes import Route
from storage.alerts import AlertRow
from storage.records import make_labels


def stable_id(*parts: object) -> str:
    text = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class _Group:
    key: str
    labels: dict[str, str]
    next_flush_ms: int
    members: dict[str, AlertRow] = field(default_factory=dict)
    folded: dict[str, str] = field(default_factory=dict)
    sent_firing: set[str] = field(default_factory=set)
    flapped: set[str] = field(default_factory=set)
    last_sent_ms: int | None = None
    sends: int = 0


class Router:
    """Keeps each route's groups; :meth:`step` says what to send now."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._groups: dict[str, dict[str, _Group]] = {r.key: {} for r in self.routes}

    def set_routes(self, routes: Iterable[Route]) -> None:
        """Take a new set of routes (config reload). A route whose key and settings stay keeps
        its groups; a changed or removed one starts afresh (its groups are dropped)."""
        old = {r.key: r for r in self.routes}
        self.routes = list(routes)
        kept = {r.key for r in self.routes if old.get(r.key) == r}
        self._groups = {
            r.key: self._groups.get(r.key, {}) if r.key in kept else {} for r in self.routes
        }

    def seed(
        self, active: Iterable[AlertRow], notified: Mapping[str, set[str]], now_ms: int
    ) -> None:
        """Rebuild the groups of firing alerts picked up at start (group state lives in memory).

        Args:
            active: the engine's alerts as loaded from the database.
            notified: channel -> fingerprints of alerts a firing notification in the outbox
                carries. Those count as already notified (so their resolution is sent, and they
                are not announced again); the others are announced at the group's first flush,
                with the id they would have had, so an alert whose notification was decided but
                not yet written when the agent died is still announced, once.
        """
        rows = [r for r in active if r.state == FIRING]
        for route in self.routes:
            groups = self._groups.setdefault(route.key, {})
            for row in rows:
                if not route.accepts(row):
                    continue
                group = self._group_for(route, groups, row, {}, now_ms)
                group.members[row.fingerprint] = row
                if row.fingerprint in notified.get(route.channel, ()):
                    group.sent_firing.add(row.fingerprint)
                    group.last_sent_ms = now_ms

    def step(
        self,
        now_ms: int,
        transitions: Iterable[Transition],
        active: Iterable[AlertRow],
        *,
        folds: Mapping[str, str] | None = None,
        muted: Mapping[str, str] | None = None,
        flapping: frozenset[str] = frozenset(),
    ) -> list[NotificationRequest]:
        """Take this evaluation's transitions and say which notifications are due.

        Args:
            active: the engine's pending and firing alerts (their latest values).
            folds: alert fingerprint -> the root alert's fingerprint it is folded under.
            muted: alert fingerprint -> why it is muted (a silence, a maintenance window).
            flapping: the fingerprints of alerts flapping now.
        """
        folds = folds or {}
        muted = muted or {}
        out: list[NotificationRequest] = []
        current = {r.fingerprint: r for r in active}
        for route in self.routes:
            groups = self._groups.setdefault(route.key, {})
            for t in transitions:
                if route.accepts(t.alert):
                    out += self._take(route, groups, t, folds, muted, now_ms)
            self._refold(groups, folds, route, now_ms)
            for group in list(groups.values()):
                for fp, row in list(group.members.items()):
                    if fp in current and row.state == FIRING:
                        group.members[fp] = current[fp]
                if now_ms >= group.next_flush_ms:
                    out += self._flush(route, group, muted, flapping, now_ms)
                if not group.members:
                    del groups[group.key]
        return out

    def _take(
        self,
        route: Route,
        groups: dict[str, _Group],
        t: Transition,
        folds: Mapping[str, str],
        muted: Mapping[str, str],
        now_ms: int,
    ) -> list[NotificationRequest]:
        fp = t.alert.fingerprint
        group = next((g for g in groups.values() if fp in g.members), None)
        if t.kind == FIRING:
            if group is None:
                group = self._group_for(route, groups, t.alert, folds, now_ms)
                if fp in folds:
                    group.folded[fp] = folds[fp]
            group.members[fp] = t.alert
        elif t.kind == RESOLVED and group is not None:
            group.members[fp] = t.alert
        elif t.kind == "flapping" and group is not None:
            if fp in group.sent_firing:
                group.sent_firing.discard(fp)
                group.flapped.add(fp)
            if fp not in muted:
                notice = _notice(t.alert, group.folded.get(fp))
                return [
                    NotificationRequest(
                        channel=route.channel,
                        notification_id=stable_id(route.key, group.key, "flapping", fp, now_ms),
                        dedup_key=stable_id(route.key, group.key),
                        kind=NoticeKind.FLAPPING,
                        created_ms=now_ms,
                        title=f"[FLAPPING] {t.alert.rule} {t.alert.subject}",
                        group_labels=make_labels(group.labels),
                        alerts=(notice,),
                    )
                ]
        return []

    def _group_for(
        self,
        route: Route,
        groups: dict[str, _Group],
        row: AlertRow,
        folds: Mapping[str, str],
        now_ms: int,
    ) -> _Group:
        root = folds.get(row.fingerprint)
        if root is not None:
            for g in groups.values():
                if root in g.members:
                    return g
        labels = dict(row.labels)
        key_labels = {k: labels.get(k, "") for k in route.group_by}
        key = stable_id(sorted(key_labels.items()))
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(key, key_labels, now_ms + int(route.group_wait_s * 1000))
        return group

    def _refold(
        self, groups: dict[str, _Group], folds: Mapping[str, str], route: Route, now_ms: int
    ) -> None:
        """An alert not yet notified whose root alert showed up since joins the root's group."""
        for group in list(groups.values()):
            for fp in list(group.members):
                root = folds.get(fp)
                if root is None or root in group.members or fp in group.sent_firing:
                    continue
                target = next((g for g in groups.values() if root in g.members), None)
                if target is not None:
                    target.members[fp] = group.members.pop(fp)
                    target.folded[fp] = root
                    group.folded.pop(fp, None)

    def _flush(
        self,
        route: Route,
        group: _Group,
        muted: Mapping[str, str],
        flapping: frozenset[str],
        now_ms: int,
    ) -> list[NotificationRequest]:
        group.next_flush_ms = now_ms + int(route.group_interval_s * 1000)
        firing = {
            fp
            for fp, r in group.members.items()
            if r.state == FIRING and fp not in muted and fp not in flapping
        }
        resolved = {
            fp
            for fp, r in group.members.items()
            if r.state == RESOLVED
            and fp not in flapping
            and (fp in group.sent_firing or fp in group.flapped)
            and fp not in muted
        }
        # Resolved alerts leave the group whatever happens: announced now, or never notified.
        gone = {fp for fp, r in group.members.items() if r.state == RESOLVED and fp not in flapping}
        new = firing - group.sent_firing
        repeat = (
            bool(firing)
            and group.last_sent_ms is not None
            and now_ms - group.last_sent_ms >= route.repeat_interval_s * 1000
        )
        send = bool(new) or (bool(resolved) and route.send_resolved) or repeat
        out: list[NotificationRequest] = []
        if send:
            shown = sorted(firing | (resolved if route.send_resolved else set()))
            notices = tuple(_notice(group.members[fp], group.folded.get(fp)) for fp in shown)
            kind = NoticeKind.FIRING if firing else NoticeKind.RESOLVED
            ident = [(n.fingerprint, n.status, n.starts_ms, n.ends_ms) for n in notices]
            group.sends += 1
            out.append(
                NotificationRequest(
                    channel=route.channel,
                    notification_id=stable_id(
                        route.key, group.key, kind, ident, repeat and group.sends
                    ),
                    dedup_key=stable_id(route.key, group.key),
                    kind=kind,
                    created_ms=now_ms,
                    title=_title(kind, notices, group.labels),
                    group_labels=make_labels(group.labels),
                    alerts=notices,
                )
            )
            group.sent_firing = set(firing)
            group.last_sent_ms = now_ms
        for fp in gone:
            del group.members[fp]
            group.folded.pop(fp, None)
            group.flapped.discard(fp)
            group.sent_firing.discard(fp)
        return out


def _notice(row: AlertRow, folded_under: str | None) -> AlertNotice:
    return AlertNotice(
        fingerprint=row.fingerprint,
        rule=row.rule,
        status=FIRING if row.state == FIRING else RESOLVED,
        severity=row.severity,
        labels=row.labels,
        summary=row.summary,
        runbook_url=row.runbook_url,
        value=row.value,
        starts_ms=row.firing_ms or row.pending_ms,
        ends_ms=row.resolved_ms,
        folded_under=folded_under,
    )


def _title(kind: NoticeKind, notices: tuple[AlertNotice, ...], labels: dict[str, str]) -> str:
    firing = [n for n in notices if n.status == FIRING]
    roots = [n for n in notices if n.folded_under is None] or list(notices)
    head = f"[{kind.value.upper()}:{len(firing) if firing else len(notices)}]"
    what = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if v) or roots[0].rule
    folded = len(notices) - len(roots)
    return f"{head} {what}" + (f" (+{folded} depending on it)" if folded else "")
