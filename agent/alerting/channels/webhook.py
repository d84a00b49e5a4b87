"""A generic webhook: the notification's JSON document, signed so receivers can trust it.

The body is :func:`~agent.alerting.channels.render.document` (``notification.schema.json``
describes it). Each attempt carries ``X-Vigil-Timestamp`` (Unix seconds) and
``X-Vigil-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"`` under the
shared secret, so a receiver can check the sender and refuse replays of old requests; the
notification's id (``X-Vigil-Id``, also in the body) lets it drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac

from agent.alerting.channels.base import SendResult
from agent.alerting.channels.http import HttpChannel, json_bytes, url_secrets
from agent.alerting.channels.render import document
from agent.alerting.channels.settings import WebhookSettings
from agent.alerting.model import NotificationRequest

SIGNATURE_HEADER = "X-Vigil-Signature"
TIMESTAMP_HEADER = "X-Vigil-Timestamp"
ID_HEADER = "X-Vigil-Id"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for a body sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    body: bytes,
    *,
    timestamp: str,
    signature: str,
    now_s: float,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent.

    Returns:
        True when ``signature`` is the body's HMAC at ``timestamp`` and that timestamp is
        within ``tolerance_s`` of ``now_s``.
    """
    if not timestamp.isdigit() or abs(now_s - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


class WebhookChannel(HttpChannel):
    """POSTs the signed JSON document to a URL."""

    kind = "webhook"
    settings: WebhookSettings

    def secrets(self) -> tuple[str, ...]:
        return (*url_secrets(self.settings.url), self.settings.secret)

    async def send(self, request: NotificationRequest) -> SendResult:
        body = json_bytes(document(request))
        ts = self.clock() // 1000
        headers = {ID_HEADER: request.notification_id, TIMESTAMP_HEADER: str(ts)}
        if self.settings.secret:
            headers[SIGNATURE_HEADER] = sign(self.settings.secret, ts, body)
        return await self.post(self.settings.url, body, headers)
