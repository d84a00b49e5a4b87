"""The channel kinds, registered explicitly: settings class to channel class, loaded lazily.

A channel's module (and what it imports: the HTTP client, smtplib, apprise) is loaded only when a
channel of that kind is built, so an agent with no ``[[notify]]`` pays for none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from agent.alerting.channels.base import Channel, wall_ms
from agent.alerting.channels.settings import (
    AlertmanagerSettings,
    AppriseSettings,
    ChannelSettings,
    CommandSettings,
    MailSettings,
    PagerDutySettings,
    SlackSettings,
    WebhookSettings,
)

KINDS: dict[str, tuple[type[ChannelSettings], str]] = {
    "alertmanager": (AlertmanagerSettings, "alertmanager:AlertmanagerChannel"),
    "webhook": (WebhookSettings, "webhook:WebhookChannel"),
    "slack": (SlackSettings, "slack:SlackChannel"),
    "pagerduty": (PagerDutySettings, "pagerduty:PagerDutyChannel"),
    "email": (MailSettings, "mail:MailChannel"),
    "exec": (CommandSettings, "command:CommandChannel"),
    "apprise": (AppriseSettings, "apprise:AppriseChannel"),
}
"""Channel kind (the ``type`` a ``[[notify]]`` table names) -> (settings, module:class)."""


def kind_of(settings: ChannelSettings) -> str:
    """The kind whose settings these are."""
    for kind, (cls, _) in KINDS.items():
        if type(settings) is cls:
            return kind
    raise TypeError(f"no channel kind takes {type(settings).__name__}")


def build_channel(settings: ChannelSettings, *, clock: Callable[[], int] = wall_ms) -> Channel:
    """The channel for ``settings``.

    Raises:
        ChannelUnavailable: the kind needs something not installed (apprise), with the fix.
    """
    module, _, name = KINDS[kind_of(settings)][1].partition(":")
    cls = getattr(importlib.import_module(f"agent.alerting.channels.{module}"), name)
    channel: Channel = cls(settings, clock=clock)
    return channel
