"""PagerDuty Events API v2: trigger, acknowledge and resolve one alert per ``dedup_key``.

The ``dedup_key`` is the notification's (stable for an alert group's whole life), so a
resolution closes the incident its trigger opened and a repeated trigger updates it instead of
opening another. The routing key is a secret. PagerDuty answers 202 when it took the event,
400 for an event it will never take (not retried), 429 and 5xx for "later".
"""

from __future__ import annotations

from typing import Any

from agent.alerting.channels.base import SendResult
from agent.alerting.channels.http import HttpChannel, json_bytes
from agent.alerting.channels.render import alert_line, headline, rfc3339, truncate
from agent.alerting.channels.settings import PagerDutySettings
from agent.alerting.model import NoticeKind, NotificationRequest

SUMMARY_LIMIT = 1024
DEDUP_LIMIT = 255

ACTIONS: dict[str, str] = {
    NoticeKind.FIRING: "trigger",
    NoticeKind.FLAPPING: "trigger",
    NoticeKind.RESOLVED: "resolve",
    NoticeKind.TEST: "trigger",
    "acknowledged": "acknowledge",
}
"""Event action per notification kind; maintenance notices page nobody and are not sent."""

SEVERITIES = {"critical": "critical", "warning": "warning", "info": "info"}


def event(
    request: NotificationRequest, *, routing_key: str, source: str, now_ms: int
) -> dict[str, Any] | None:
    """The event for one notification, or None when PagerDuty takes none for its kind."""
    action = ACTIONS.get(str(request.kind))
    if action is None:
        return None
    dedup = request.dedup_key
    if request.kind == NoticeKind.TEST:
        dedup = f"vigil-test-{request.notification_id}"
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup[:DEDUP_LIMIT],
    }
    if action != "trigger":
        return body
    first = request.alerts[0] if request.alerts else None
    details: dict[str, Any] = {
        "notification_id": request.notification_id,
        "alerts": [alert_line(a) for a in request.alerts],
        "group_labels": dict(request.group_labels),
    }
    payload: dict[str, Any] = {
        "summary": truncate(headline(request), SUMMARY_LIMIT),
        "source": source,
        "severity": SEVERITIES.get(request.severity, "error"),
        "timestamp": rfc3339(first.starts_ms if first and first.starts_ms else now_ms),
        "custom_details": details,
    }
    if first is not None:
        payload["class"] = first.rule
        labels = dict(first.labels)
        component = labels.get("model") or labels.get("process")
        if component:
            payload["component"] = component
    body["payload"] = payload
    links = [
        {"href": a.runbook_url, "text": f"runbook: {a.rule}"}
        for a in request.alerts
        if a.runbook_url.startswith(("https://", "http://"))
    ]
    if links:
        body["links"] = links[:5]
    body["client"] = "Vigil"
    return body


class PagerDutyChannel(HttpChannel):
    """Sends Events API v2 events."""

    kind = "pagerduty"
    settings: PagerDutySettings

    def secrets(self) -> tuple[str, ...]:
        return (self.settings.routing_key,)

    async def send(self, request: NotificationRequest) -> SendResult:
        import socket

        body = event(
            request,
            routing_key=self.settings.routing_key,
            source=self.settings.source or socket.gethostname(),
            now_ms=self.clock(),
        )
        if body is None:
            return SendResult.accepted(f"not sent: PagerDuty pages for alerts, not {request.kind}")
        if self.settings.client_url:
            body["client_url"] = self.settings.client_url
        return await self.post(self.settings.url, json_bytes(body))
