"""Apprise: one channel for the 100+ services Apprise knows (an optional extra).

``apprise`` is imported only when such a channel is built; without it the channel cannot be
built and says how to install it. Apprise URLs carry their services' tokens, so they are
secrets. Apprise's ``notify`` blocks, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

from agent.alerting.channels.base import (
    Channel,
    ChannelUnavailable,
    SendResult,
    wall_ms,
)
from agent.alerting.channels.render import alert_line, headline
from agent.alerting.channels.settings import AppriseSettings
from agent.alerting.model import NoticeKind, NotificationRequest

INSTALL_HINT = "pip install 'vigil[notify]'"


def load_apprise() -> Any:
    """The ``apprise`` module, or :class:`ChannelUnavailable` naming how to install it."""
    try:
        return importlib.import_module("apprise")
    except ImportError as exc:
        raise ChannelUnavailable(
            f"the apprise channel needs the apprise package: {INSTALL_HINT}"
        ) from exc


class AppriseChannel(Channel):
    """Sends through Apprise."""

    kind = "apprise"
    settings: AppriseSettings

    def __init__(self, settings: AppriseSettings, *, clock: Callable[[], int] = wall_ms) -> None:
        super().__init__(settings, clock=clock)
        self._apprise = load_apprise()

    def secrets(self) -> tuple[str, ...]:
        return self.settings.urls

    async def send(self, request: NotificationRequest) -> SendResult:
        mod = self._apprise
        notify_type = {
            NoticeKind.FIRING: mod.NotifyType.FAILURE,
            NoticeKind.FLAPPING: mod.NotifyType.WARNING,
            NoticeKind.RESOLVED: mod.NotifyType.SUCCESS,
        }.get(request.kind, mod.NotifyType.INFO)
        body = "\n".join([alert_line(a) for a in request.alerts] or [headline(request)])

        def deliver() -> bool:
            ap = mod.Apprise()
            for url in self.settings.urls:
                ap.add(url)
            return bool(ap.notify(body=body, title=headline(request), notify_type=notify_type))

        try:
            ok = await asyncio.to_thread(deliver)
        except Exception as exc:
            return SendResult.failed(self.redact(f"apprise failed: {type(exc).__name__}: {exc}"))
        if ok:
            return SendResult.accepted("apprise notified every URL")
        return SendResult.failed("apprise could not notify every URL (see its log)")
