"""The TUI's only way to an agent: a small async client for its HTTP API.

Every failure (connection refused, timeout, rejected token, a malformed answer) becomes one
exception type, :class:`AgentError`, whose message is fit to show a person, so screens need a
single ``except`` and never freeze on a hung agent (every request has a total timeout).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp

from storage.records import AgentStatus, Event, SeriesPoint

ErrorKind = Literal["unreachable", "timeout", "rejected", "forbidden", "http", "protocol", "config"]
"""Why a request failed, for screens that colour or word states differently."""

API_FILE = "api.json"
TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret

T = TypeVar("T")


class AgentError(Exception):
    """Any failure talking to an agent, with a message fit to show a person.

    Attributes:
        message: What went wrong, e.g. ``"token rejected"`` or ``"timeout after 3.0s"``.
        kind: The failure's class (see :data:`ErrorKind`).
    """

    def __init__(self, message: str, kind: ErrorKind = "protocol") -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind


class AgentClient:
    """Talks to one agent's ``/api/v1`` with a bearer token.

    One ``aiohttp.ClientSession`` is created lazily on the first request (so the client can be
    built outside the event loop that will use it) and closed by :meth:`aclose`.

    Args:
        url: The agent's base URL, e.g. ``http://127.0.0.1:9470``.
        token: The bearer token (``read`` scope is enough for everything here).
        timeout_s: Total time allowed for one request, connect included.
    """

    def __init__(self, url: str, token: str, timeout_s: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token.strip()
        self._session: aiohttp.ClientSession | None = None
        # host:port is what people recognise in a one-line error; the scheme is noise.
        self._netloc = urlsplit(self.url).netloc or self.url

    def __repr__(self) -> str:
        # Never put the token in a repr: reprs end up in logs and tracebacks.
        return f"AgentClient(url={self.url!r}, timeout_s={self.timeout_s})"

    async def aclose(self) -> None:
        """Close the HTTP session; the client may be used again afterwards (a new one opens)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def status(self) -> AgentStatus:
        """Fetch ``GET /api/v1/status``.

        Returns:
            The agent's current status.

        Raises:
            AgentError: on any failure.
        """
        data = await self._get_json("/api/v1/status")
        return _decode(lambda: AgentStatus.from_json(data), "status")

    async def series(
        self,
        name: str,
        labels: Mapping[str, object] | None = None,
        since: int | str = "-15m",
        until: int | str | None = None,
        step: int | None = None,
    ) -> list[SeriesPoint]:
        """Fetch a range of one series: ``GET /api/v1/series``.

        Args:
            name: Series name, e.g. ``host.cpu.percent``.
            labels: Exact labels of the series (``{"core": "3"}``); None for no labels.
            since: Start as epoch milliseconds or a relative duration such as ``"-5m"``.
            until: End, same forms as ``since``; None for now.
            step: Bucket width in milliseconds; None lets the agent choose.

        Returns:
            The points, oldest first.

        Raises:
            AgentError: on any failure.
        """
        params: dict[str, str] = {
            "name": name,
            "labels": json.dumps(
                {str(k): str(v) for k, v in (labels or {}).items()}, sort_keys=True
            ),
            "since": str(since),
        }
        if until is not None:
            params["until"] = str(until)
        if step is not None:
            params["step"] = str(step)
        data = await self._get_json("/api/v1/series", params)

        def build() -> list[SeriesPoint]:
            return [
                SeriesPoint(
                    ts_ms=int(p["ts_ms"]),
                    avg=float(p["avg"]),
                    min=float(p["min"]),
                    max=float(p["max"]),
                    count=int(p.get("count", 1)),
                )
                for p in data["points"]
            ]

        return _decode(build, "series")

    async def events(self, limit: int = 50, kind: str | None = None) -> list[Event]:
        """Fetch recent audit events: ``GET /api/v1/events``.

        Args:
            limit: At most this many events.
            kind: Only events whose kind starts with this prefix (``"process."``).

        Returns:
            The events, newest first.

        Raises:
            AgentError: on any failure.
        """
        params = {"limit": str(limit)}
        if kind:
            params["kind"] = kind
        data = await self._get_json("/api/v1/events", params)
        return _decode(lambda: [Event.from_json(e) for e in data["events"]], "events")

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
            )
        return self._session

    async def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        session = self._ensure_session()
        try:
            # No redirects: the token must only ever go to the agent we were pointed at.
            async with session.get(self.url + path, params=params, allow_redirects=False) as resp:
                body = await resp.read()
                if resp.status == 401:
                    raise AgentError("token rejected", "rejected")
                if resp.status == 403:
                    reason = _error_text(body) or "forbidden"
                    raise AgentError(f"token lacks the scope for {path}: {reason}", "forbidden")
                if resp.status >= 300:
                    reason = _error_text(body) or resp.reason or ""
                    raise AgentError(
                        f"HTTP {resp.status} from {path}: {reason}".rstrip(": "), "http"
                    )
        except AgentError:
            raise
        # Before ClientError: aiohttp's timeout errors subclass both.
        except TimeoutError as exc:
            raise AgentError(f"timeout after {self.timeout_s:g}s", "timeout") from exc
        except aiohttp.InvalidURL as exc:
            raise AgentError(f"bad agent URL {self.url!r}", "config") from exc
        except aiohttp.ClientConnectorError as exc:
            # asyncio puts "Connect call failed ('127.0.0.1', 9)" in strerror; errno says it
            # in words people know ("Connection refused").
            err = exc.os_error
            reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
            raise AgentError(
                f"cannot connect to {self._netloc} ({reason.lower()})", "unreachable"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentError(
                f"{self.url}: {exc.__class__.__name__}: {exc}".rstrip(": "), "unreachable"
            ) from exc
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AgentError(f"bad JSON from {path}: {exc}", "protocol") from exc


def _error_text(body: bytes) -> str:
    """The ``error`` field of a JSON error body, or a short prefix of a non-JSON one."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return ""


def _decode(build: Callable[[], T], what: str) -> T:
    """Run ``build`` over decoded JSON, turning a wrong shape into an :class:`AgentError`."""
    try:
        return build()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AgentError(
            f"bad JSON from agent ({what}): {exc.__class__.__name__}: {exc}", "protocol"
        ) from exc


def discover_local(data_dir: Path) -> tuple[str, str]:
    """Find the agent running on this host from the files it writes into its data directory.

    Args:
        data_dir: The agent's ``data_dir`` (holding ``api.json`` and ``api-token``).

    Returns:
        ``(url, token)``.

    Raises:
        AgentError: naming the missing or malformed file.
    """
    api_path = data_dir / API_FILE
    token_path = data_dir / TOKEN_FILE
    try:
        info = json.loads(api_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AgentError(
            f"{api_path} not found: is the agent running with data_dir {data_dir}?", "config"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentError(f"cannot read {api_path}: {exc}", "config") from exc
    if not isinstance(info, dict) or not isinstance(info.get("url"), str) or not info["url"]:
        raise AgentError(f'{api_path} has no "url" string', "config")
    try:
        lines = token_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise AgentError(f"{token_path} not found: the agent writes it at start", "config") from exc
    except OSError as exc:
        # Usually permissions: the file is 0600 and owned by the agent's user.
        raise AgentError(f"cannot read {token_path}: {exc.strerror or exc}", "config") from exc
    token = lines[0].strip() if lines else ""
    if not token:
        raise AgentError(f"{token_path} is empty", "config")
    return info["url"], token
