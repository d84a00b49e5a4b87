"""What the HTTP channels share: one aiohttp session, and turning an answer into a result.

2xx is accepted. 408, 425, 429 and 5xx are worth another try, with the receiver's
``Retry-After`` (seconds or an HTTP date) when it gave one; any other 4xx refused the message
itself and is not retried. A connection that fails or times out is retried. Error texts never
carry the URL (a Slack or webhook URL is a secret), only the host the channel could not reach.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from agent.alerting.channels.base import Channel, ChannelSettings, SendResult, wall_ms

RETRYABLE_STATUSES = frozenset({408, 425, 429})


def parse_retry_after(value: str | None, now_ms: int) -> float | None:
    """A ``Retry-After`` header as seconds from now: delta-seconds or an HTTP date (RFC 9110).

    Returns None for a missing or malformed value; a date in the past is 0.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an obsolete date format without a zone is GMT by definition
        return None
    return max(0.0, when.timestamp() - now_ms / 1000)


def host_of(url: str) -> str:
    """The host:port part of a URL, the only part of it an error may show."""
    try:
        parts = urlsplit(url)
        return parts.netloc.rsplit("@", 1)[-1] or "?"
    except ValueError:
        return "?"


def url_secrets(url: str) -> tuple[str, ...]:
    """A secret URL and its path with query: a receiver may echo either back in an error."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return (url,)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return (url, tail) if len(tail) > 1 else (url,)


class HttpChannel(Channel):
    """A channel that POSTs JSON. Subclasses build the body and may read the answer."""

    def __init__(self, settings: ChannelSettings, *, clock: Callable[[], int] = wall_ms) -> None:
        super().__init__(settings, clock=clock)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                headers={"User-Agent": "vigil-notify/1"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        accept: Callable[[int, str], SendResult | None] | None = None,
    ) -> SendResult:
        """POST ``body`` as JSON and classify the answer.

        ``accept(status, text)`` may decide a result itself (a receiver that answers 200 with
        an error in its body); None falls back to the status code.
        """
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        try:
            async with self._client().post(url, data=body, headers=hdrs) as resp:
                text = (await resp.text(errors="replace"))[:300]
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.clock())
                status = resp.status
        except TimeoutError:
            return SendResult.failed(
                f"no answer from {host_of(url)} in {self.settings.timeout_s:g}s"
            )
        except aiohttp.InvalidURL:
            return SendResult.failed("invalid URL", retryable=False)
        except (aiohttp.ClientError, OSError) as exc:
            return SendResult.failed(f"cannot reach {host_of(url)}: {_reason(exc)}")
        decided = accept(status, text) if accept is not None else None
        if decided is not None:
            return decided
        answer = f"HTTP {status}" + (f": {_one_line(text)}" if text.strip() else "")
        if 200 <= status < 300:
            return SendResult.accepted(answer, status)
        retryable = status in RETRYABLE_STATUSES or status >= 500
        return SendResult.failed(
            answer, retryable=retryable, retry_after_s=retry_after, status=status
        )


def json_bytes(data: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _reason(exc: BaseException) -> str:
    # aiohttp's connector errors wrap the OS error; its strerror is the useful part.
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError):
        return (os.strerror(os_error.errno) if os_error.errno else str(os_error)).lower()
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return type(exc).__name__
