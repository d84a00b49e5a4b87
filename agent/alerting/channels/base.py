"""The one interface every notification channel implements, and what a send answers.

A channel turns a :class:`~agent.alerting.model.NotificationRequest` into its receiver's format
and hands it over; it never raises for a receiver that is down or refuses (that is a
:class:`SendResult`), and never puts a secret (a webhook URL, a routing key, a password) into a
result, a log line or its repr. The outbox decides when to send and when to retry.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from agent.alerting.channels.settings import ChannelSettings
from agent.alerting.model import NotificationRequest


class ChannelUnavailable(RuntimeError):
    """A channel cannot be built here (a missing optional package, a bad setting)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """A receiver's answer to one send.

    ``retryable`` is False when sending the same thing again cannot help (the receiver refused
    the message itself); ``retry_after_s`` is the receiver's own wish (``Retry-After``).
    ``detail`` is a short, secret-free account of the answer, shown to operators.
    """

    ok: bool
    detail: str = ""
    retryable: bool = True
    retry_after_s: float | None = None
    status: int | None = None

    @classmethod
    def accepted(cls, detail: str = "accepted", status: int | None = None) -> SendResult:
        """The receiver took it."""
        return cls(ok=True, detail=detail, status=status)

    @classmethod
    def failed(
        cls,
        detail: str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> SendResult:
        """It did not get through (``retryable``: try again later)."""
        return cls(False, detail, retryable, retry_after_s, status)


def wall_ms() -> int:
    """The wall clock in UTC epoch milliseconds (the default clock everywhere here)."""
    return time.time_ns() // 1_000_000


class Channel(ABC):
    """A place notifications go. Subclasses set ``kind`` and implement :meth:`send`."""

    kind: ClassVar[str]

    def __init__(self, settings: ChannelSettings, *, clock: Callable[[], int] = wall_ms) -> None:
        self.settings = settings
        self.clock = clock

    @property
    def name(self) -> str:
        """The channel's configured name (routes and the outbox refer to it)."""
        return self.settings.name

    @abstractmethod
    async def send(self, request: NotificationRequest) -> SendResult:
        """Deliver one notification. Never raises for the receiver's sake."""

    def secrets(self) -> Iterable[str]:
        """Secret strings this channel holds, to be scrubbed from any error text."""
        return ()

    async def close(self) -> None:  # noqa: B027 - most channels hold nothing to close
        """Release connections."""

    def redact(self, text: str) -> str:
        """``text`` with this channel's secrets replaced by ``<secret>``."""
        return redact(text, self.secrets())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


MIN_SECRET_CHARS = 4
"""Shorter "secrets" are not scrubbed: replacing every "k" would only garble the text."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (longest first, so one inside another goes too) in ``text``."""
    for secret in sorted((s for s in secrets if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True):
        text = text.replace(secret, "<secret>")
    return text
