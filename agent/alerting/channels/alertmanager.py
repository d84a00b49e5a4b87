"""Prometheus Alertmanager: each alert of a notification POSTed to ``/api/v2/alerts``.

Alertmanager identifies an alert by its labels, so the same alert sent twice is one alert, and
resolves it when ``endsAt`` is in the past. A firing alert is sent with ``endsAt`` at
``firing_ttl_s`` from now: Alertmanager expects a client to send an active alert again before
then (Vigil's repeat notifications do), and ends it by itself if the agent is gone for good.
Maintenance notices are not alerts and are not sent here.
"""

from __future__ import annotations

from typing import Any

from agent.alerting.channels.base import SendResult
from agent.alerting.channels.http import HttpChannel, json_bytes
from agent.alerting.channels.render import rfc3339
from agent.alerting.channels.settings import AlertmanagerSettings
from agent.alerting.model import AlertNotice, NoticeKind, NotificationRequest
from storage.text import printable


class AlertmanagerChannel(HttpChannel):
    """Sends alerts to Alertmanager's v2 API."""

    kind = "alertmanager"
    settings: AlertmanagerSettings

    def secrets(self) -> tuple[str, ...]:
        return (self.settings.bearer_token,) if self.settings.bearer_token else ()

    def body(self, request: NotificationRequest) -> list[dict[str, Any]]:
        """The postable alerts for one notification (empty for notices that are no alert)."""
        now = self.clock()
        if request.kind == NoticeKind.TEST:
            test = AlertNotice(
                fingerprint=request.notification_id,
                rule="VigilTest",
                status="firing",
                severity="info",
                labels=request.group_labels,
                summary=request.title or "Vigil test notification",
                starts_ms=now,
            )
            return [self._alert(test, request, now, ttl_s=300.0)]
        if request.kind not in (NoticeKind.FIRING, NoticeKind.RESOLVED, NoticeKind.FLAPPING):
            return []
        return [
            self._alert(a, request, now, ttl_s=self.settings.firing_ttl_s) for a in request.alerts
        ]

    def _alert(
        self, alert: AlertNotice, request: NotificationRequest, now_ms: int, *, ttl_s: float
    ) -> dict[str, Any]:
        labels = {k: printable(v) for k, v in alert.labels}
        labels["alertname"] = printable(alert.rule)
        labels.setdefault("severity", alert.severity)
        annotations = {"summary": printable(alert.summary)} if alert.summary else {}
        if alert.runbook_url:
            annotations["runbook_url"] = alert.runbook_url
        if request.kind == NoticeKind.FLAPPING:
            annotations["flapping"] = "true"
        annotations["vigil_notification_id"] = request.notification_id
        if alert.status == "resolved":
            ends = alert.ends_ms if alert.ends_ms is not None else now_ms
        else:
            ends = now_ms + int(ttl_s * 1000)
        out: dict[str, Any] = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(alert.starts_ms or now_ms),
            "endsAt": rfc3339(ends),
        }
        if self.settings.generator_url:
            out["generatorURL"] = self.settings.generator_url
        return out

    async def send(self, request: NotificationRequest) -> SendResult:
        alerts = self.body(request)
        if not alerts:
            return SendResult.accepted(f"not sent: Alertmanager takes alerts, not {request.kind}")
        headers = {}
        if self.settings.bearer_token:
            headers["Authorization"] = f"Bearer {self.settings.bearer_token}"
        url = self.settings.url.rstrip("/") + "/api/v2/alerts"
        return await self.post(url, json_bytes(alerts), headers)
