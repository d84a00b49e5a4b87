"""Notification channels: one small class per kind behind :class:`base.Channel`.

Kinds are registered in :mod:`registry` (explicitly, no scanning); settings are plain frozen
dataclasses in :mod:`settings`. Loading this package loads no channel's network library.
"""

from agent._rooms import lazy_exports

_EXPORTS = {
    "Channel": "base",
    "ChannelUnavailable": "base",
    "SendResult": "base",
    "ChannelSettings": "settings",
    "AlertmanagerSettings": "settings",
    "AppriseSettings": "settings",
    "CommandSettings": "settings",
    "MailSettings": "settings",
    "PagerDutySettings": "settings",
    "SlackSettings": "settings",
    "WebhookSettings": "settings",
    "KINDS": "registry",
    "build_channel": "registry",
}
__all__ = [
    "KINDS",
    "AlertmanagerSettings",
    "AppriseSettings",
    "Channel",
    "ChannelSettings",
    "ChannelUnavailable",
    "CommandSettings",
    "MailSettings",
    "PagerDutySettings",
    "SendResult",
    "SlackSettings",
    "WebhookSettings",
    "build_channel",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
