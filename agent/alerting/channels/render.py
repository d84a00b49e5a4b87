"""Text every channel shares: the headline, per-alert lines, times, and escaping.

Everything in a notification that came from a model server, a label or a config is data: each
channel escapes it for its own format (mrkdwn here, HTML in the mail channel) after control
characters are made visible by :func:`storage.text.printable`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.alerting.model import AlertNotice, NoticeKind, NotificationRequest
from storage.text import printable

SCHEMA_VERSION = 1
"""The version of the JSON document webhooks and exec receive (``notification.schema.json``)."""


def document(request: NotificationRequest) -> dict[str, Any]:
    """The channel-independent JSON document of a notification (webhook body, exec stdin)."""
    return {"version": SCHEMA_VERSION, "id": request.notification_id, **request.to_json()}


def rfc3339(ms: int) -> str:
    """UTC epoch milliseconds as RFC 3339 with milliseconds and ``Z``."""
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def headline(request: NotificationRequest) -> str:
    """One line saying what happened: ``[FIRING:2] title`` (plain text, unescaped)."""
    kind = request.kind
    if kind in (NoticeKind.FIRING, NoticeKind.RESOLVED):
        firing = sum(1 for a in request.alerts if a.status == "firing")
        n = firing if kind == NoticeKind.FIRING else len(request.alerts)
        tag = f"[{kind.upper()}:{n}]" if n > 1 else f"[{kind.upper()}]"
    else:
        tag = f"[{kind.replace('_', ' ').upper()}]"
    title = request.title or (request.alerts[0].rule if request.alerts else "vigil")
    return printable(f"{tag} {title}")


def alert_line(alert: AlertNotice) -> str:
    """One alert as a line of plain text (unescaped)."""
    text = f"{alert.status} {alert.severity} {alert.rule}: {alert.summary or '-'}"
    if alert.folded_under:
        text += " (folded under its root alert)"
    return printable(text)


def label_text(alert: AlertNotice) -> str:
    """Labels as ``k=v, k=v`` (plain text, unescaped)."""
    return printable(", ".join(f"{k}={v}" for k, v in alert.labels))


def mrkdwn(text: str) -> str:
    """Escape text for Slack mrkdwn: control characters made visible, then ``&``, ``<``, ``>``
    (so no text can become a link, a mention such as ``<!channel>``, or markup)."""
    return (
        printable(text, keep_newlines=True)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, with ``…`` marking a cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def truncate_escaped(text: str, limit: int) -> str:
    """:func:`truncate` for escaped text: a cut never leaves half an entity (``&am…``)."""
    out = truncate(text, limit)
    if out is text:
        return out
    amp = out.rfind("&", max(0, len(out) - 6))
    if amp >= 0 and ";" not in out[amp:]:
        out = out[:amp] + "…"
    return out
