"""Alerting: rules, the alert lifecycle, routing and noise control, silences, maintenance
windows, channels and the durable outbox.

Live state and stored series come in (a snapshot the daemon builds); notification requests go
out to the outbox. This room builds on ``agent.health``, ``agent.config``, ``probes`` and
``storage``; nothing below it imports it.
"""

from agent._rooms import lazy_exports

_EXPORTS = {
    "AlertNotice": "model",
    "NoticeKind": "model",
    "NotificationRequest": "model",
}
__all__ = ["AlertNotice", "NoticeKind", "NotificationRequest"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
