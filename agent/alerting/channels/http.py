"""What the HTTP channels share: one HTTP client, and turning an answer into a result.

2xx is accepted. 408, 425, 429 and 5xx are worth another try, with the receiver's
``Retry-After`` (seconds or an HTTP date) when it gave one; any other 4xx refused the message
itself and is not retried. A connection that fails or times out is retried. Error texts never
carry the URL (a Slack or webhook URL is a secret), only the host the channel could not reach.

The client is the probes' own (:mod:`probes.httpclient`): the agent loads no aiohttp.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from agent.alerting.channels.base import Channel, ChannelSettings, SendResult, wall_ms
from probes.httpclient import HttpClient, InvalidURL, WireError

RETRYABLE_STATUSES = frozenset({408, 425, 429})
ANSWER_READ_BYTES = 64 * 1024
"""A receiver's answer is read up to this much (its first 300 characters are kept)."""


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
        self._session: HttpClient | None = None

    def _client(self) -> HttpClient:
        if self._session is None or self._session.closed:
            self._session = HttpClient(user_agent="vigil-notify/1")
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
            async with self._client().post(
                url, data=body, headers=hdrs, timeout_s=self.settings.timeout_s
            ) as resp:
                text = (await resp.text(limit=ANSWER_READ_BYTES))[:300]
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.clock())
                status = resp.status
        except TimeoutError:
            return SendResult.failed(
                f"no answer from {host_of(url)} in {self.settings.timeout_s:g}s"
            )
        except InvalidURL:
            return SendResult.failed("invalid URL", retryable=False)
        except WireError as exc:  # the cause alone: host_of(url) says where
            return SendResult.failed(f"cannot reach {host_of(url)}: {exc.reason}")
        except OSError as exc:  # not expected from the client; still a failed send, not a crash
            return SendResult.failed(f"cannot reach {host_of(url)}: {exc.strerror or exc}")
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
