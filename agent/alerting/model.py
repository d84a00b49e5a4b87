"""The record the alert router hands to the outbox: one notification for one channel.

The router (``agent.alerting.router``) decides *what* to say and *to whom*; the outbox persists
each :class:`NotificationRequest` before anything is sent and the channels render it. The record
is plain data with a JSON form, so the outbox can store it and rebuild it after a restart.

Text in it (summaries, label values) is plain text: it may hold whatever a model server or a
config said, and escaping it for a channel's format (Slack mrkdwn, HTML mail, ...) is the
channel's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from storage.records import Labels, make_labels


class NoticeKind(StrEnum):
    """What a notification announces."""

    FIRING = "firing"
    """One or more alerts of a group started firing (or are repeated while firing)."""
    RESOLVED = "resolved"
    """Alerts of a group resolved (every resolution is delivered, suppressed or not)."""
    FLAPPING = "flapping"
    """An alert fires and resolves too often; said once until it settles."""
    MAINTENANCE_START = "maintenance_start"
    MAINTENANCE_END = "maintenance_end"
    TEST = "test"
    """``vigil notify test``: a test message, no alert behind it."""


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """One alert as a notification shows it.

    ``status`` is ``firing`` or ``resolved``. ``folded_under`` names the root alert's
    fingerprint when this alert was folded into its root's notification (dependency-aware
    suppression) instead of being sent alone.
    """

    fingerprint: str
    rule: str
    status: str
    severity: str
    labels: Labels
    summary: str
    runbook_url: str = ""
    value: float | None = None
    starts_ms: int = 0
    ends_ms: int | None = None
    folded_under: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "status": self.status,
            "severity": self.severity,
            "labels": dict(self.labels),
            "summary": self.summary,
            "runbook_url": self.runbook_url,
            "value": self.value,
            "starts_ms": self.starts_ms,
            "ends_ms": self.ends_ms,
            "folded_under": self.folded_under,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertNotice:
        """Rebuild from :meth:`to_json` output."""
        value = data.get("value")
        ends = data.get("ends_ms")
        return cls(
            fingerprint=str(data["fingerprint"]),
            rule=str(data["rule"]),
            status=str(data["status"]),
            severity=str(data["severity"]),
            labels=make_labels(data.get("labels") or {}),
            summary=str(data.get("summary", "")),
            runbook_url=str(data.get("runbook_url", "")),
            value=float(value) if value is not None else None,
            starts_ms=int(data.get("starts_ms", 0)),
            ends_ms=int(ends) if ends is not None else None,
            folded_under=str(data["folded_under"]) if data.get("folded_under") else None,
        )


@dataclass(frozen=True, slots=True)
class NotificationRequest:
    """One notification to deliver on one channel.

    ``notification_id`` is stable per alert transition and route: the same transition always
    yields the same id (receivers drop repeats by it; the outbox keys on it, so writing it twice
    is harmless). ``dedup_key`` is stable per alert group across its whole life (firing, repeats,
    resolution), for receivers that update one incident in place (PagerDuty ``dedup_key``,
    Alertmanager's group). ``created_ms`` is when the router decided to send it.
    """

    channel: str
    notification_id: str
    dedup_key: str
    kind: NoticeKind
    created_ms: int
    title: str
    group_labels: Labels = ()
    alerts: tuple[AlertNotice, ...] = ()

    @property
    def severity(self) -> str:
        """The worst severity among the alerts (``critical`` beats ``warning``), or ``info``."""
        sevs = {a.severity for a in self.alerts if a.status == "firing"} or {
            a.severity for a in self.alerts
        }
        for sev in ("critical", "warning"):
            if sev in sevs:
                return sev
        return "info"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form, as the outbox stores it."""
        return {
            "channel": self.channel,
            "notification_id": self.notification_id,
            "dedup_key": self.dedup_key,
            "kind": str(self.kind),
            "created_ms": self.created_ms,
            "title": self.title,
            "group_labels": dict(self.group_labels),
            "alerts": [a.to_json() for a in self.alerts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NotificationRequest:
        """Rebuild from :meth:`to_json` output."""
        return cls(
            channel=str(data["channel"]),
            notification_id=str(data["notification_id"]),
            dedup_key=str(data["dedup_key"]),
            kind=NoticeKind(str(data["kind"])),
            created_ms=int(data["created_ms"]),
            title=str(data.get("title", "")),
            group_labels=make_labels(data.get("group_labels") or {}),
            alerts=tuple(AlertNotice.from_json(a) for a in data.get("alerts") or ()),
        )
