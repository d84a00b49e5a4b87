"""The TUI's only way to an agent: a small async client for its HTTP API.

Every failure (connection refused, timeout, rejected token, a malformed answer) becomes one
exception type, :class:`AgentError`, whose message is fit to show a person, so screens need a
single ``except`` and never freeze on a hung agent (every request has a total timeout).
:class:`AgentError` and the decoding helpers live in :mod:`tui.remote.errors`, the deploy calls
in :mod:`tui.remote.deploycalls` (a mixin), finding the local agent in
:mod:`tui.remote.local`; all are importable from here as before.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from storage.records import AgentStatus, Event, Incident, ProbeRun, ProcessStatus, SeriesPoint
from storage.tlstrust import CA_ENV, tls_failure
from tui.remote.apitypes import ModelDetail
from tui.remote.deploycalls import DeployCalls
from tui.remote.errors import (
    AgentError,
    ErrorKind,
    decode,
    error_text,
    parse_json,
    scope_refusal,
    seg,
)
from tui.remote.local import API_FILE, TOKEN_FILE, discover_local
from tui.remote.unixtls import TlsUnixConnector

__all__ = [
    "API_FILE",
    "TOKEN_FILE",
    "AgentClient",
    "AgentError",
    "ErrorKind",
    "discover_local",
    "operator_identity",
]

_CA_HINT = f"set ca to the CA that issued it: in the fleet file, or --ca / ${CA_ENV}"


class AgentClient(DeployCalls):
    """Talks to one agent's ``/api/v1`` with a bearer token.

    One ``aiohttp.ClientSession`` is created lazily on the first request (so the client can be
    built outside the event loop that will use it) and closed by :meth:`aclose`.

    Args:
        url: The agent's base URL, e.g. ``http://127.0.0.1:9470``.
        token: The bearer token (``read`` scope is enough for everything here).
        timeout_s: Total time allowed for one request, connect included.
        unix_socket: Reach the agent through this unix socket instead of ``url``'s host and
            port (an ``ssh -L`` forward, see :mod:`tui.remote.transport`); ``url`` still gives the
            scheme and the ``Host`` header.
        ssl_context: Verifies an ``https://`` agent's certificate (a fleet member's ``ca``,
            ``--ca``); None: the system's CAs. Verification is never off.
    """

    def __init__(
        self,
        url: str,
        token: str,
        timeout_s: float = 3.0,
        *,
        unix_socket: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.unix_socket = unix_socket
        self.ssl_context = ssl_context
        self._token = token.strip()
        self._session: aiohttp.ClientSession | None = None
        # host:port is what people recognise in a one-line error; the scheme is noise.
        self._netloc = urlsplit(self.url).netloc or self.url
        self._plain = self.url.startswith("http://") and unix_socket is None

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
        return decode(lambda: AgentStatus.from_json(data), "status")

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

        return decode(build, "series")

    async def events(
        self, limit: int = 50, kind: str | None = None, subject: str | None = None
    ) -> list[Event]:
        """Fetch recent audit events: ``GET /api/v1/events``.

        Args:
            limit: At most this many events.
            kind: Only events whose kind starts with this prefix (``"process."``).
            subject: Only events about exactly this subject (``"model:iris"``).

        Returns:
            The events, newest first.

        Raises:
            AgentError: on any failure.
        """
        params = {"limit": str(limit)}
        if kind:
            params["kind"] = kind
        if subject:
            params["subject"] = subject
        data = await self._get_json("/api/v1/events", params)
        return decode(lambda: [Event.from_json(e) for e in data["events"]], "events")

    async def get_if_changed(self, path: str, etag: str | None) -> tuple[bytes, str | None] | None:
        """``GET`` a path with ``If-None-Match: etag`` (none when ``etag`` is None): None when
        the agent answers 304 Not Modified, else the body and the answer's ``ETag``.

        Raises:
            AgentError: on any failure (``status`` 404: an agent without the route).
        """
        status, tag, body = await self._exchange("GET", path, etag=etag)
        return None if status == 304 else (body, tag)

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET`` any API path and return its decoded JSON, for callers that read a document
        whole (the fleet view reads ``/api/v1/models`` and ``/api/v1/incidents`` this way).

        Raises:
            AgentError: on any failure.
        """
        return await self._get_json(path, params)

    # --- triage: the detail views' reads and the operator's actions ----------------------

    scope: str | None = None
    """The token's scope, ``read`` or ``operate``, once :meth:`whoami` learned it (or an
    action was refused); None while unknown, when actions are offered and the agent decides."""
    operator: str = ""
    """Who acts, sent as ``X-Vigil-Operator`` with every action and report export; empty
    means :func:`operator_identity` (``user@host`` of whoever runs the TUI)."""

    @property
    def read_only(self) -> bool:
        """Whether the token is known to be read-only (actions are then hidden)."""
        return self.scope == "read"

    async def whoami(self) -> str | None:
        """Learn the token's scope from ``GET /api/v1/whoami`` and remember it in :attr:`scope`.

        Returns:
            ``read``, ``operate``, or None when the agent predates the route (404).

        Raises:
            AgentError: on any other failure.
        """
        try:
            data = await self._get_json("/api/v1/whoami")
        except AgentError as exc:
            if exc.status == 404:
                return None
            raise
        scope = decode(lambda: str(data["scope"]), "whoami")
        self.scope = scope
        return scope

    async def models(self) -> list[ModelDetail]:
        """``GET /api/v1/models``: every model with percentiles, outcomes, info, incident."""
        data = await self._get_json("/api/v1/models")
        return decode(lambda: [ModelDetail.from_json(m) for m in data["models"]], "models")

    async def probe_runs(self, model: str, limit: int = 50) -> list[ProbeRun]:
        """``GET /api/v1/probe_runs``: the model's last runs, newest first."""
        params = {"model": model, "limit": str(limit)}
        data = await self._get_json("/api/v1/probe_runs", params)
        return decode(lambda: [ProbeRun.from_json(r) for r in data["probe_runs"]], "probe_runs")

    async def incidents(
        self, state: str | None = None, subject: str | None = None, limit: int = 200
    ) -> list[Incident]:
        """``GET /api/v1/incidents``, newest first.

        Args:
            state: ``open``, ``acknowledged``, ``resolved``; None for all.
            subject: Only incidents about this subject (``"process:vllm"``).
            limit: At most this many.
        """
        params = {"limit": str(limit)}
        if state:
            params["state"] = state
        if subject:
            params["subject"] = subject
        data = await self._get_json("/api/v1/incidents", params)
        return decode(lambda: [Incident.from_json(i) for i in data["incidents"]], "incidents")

    async def processes(self) -> list[ProcessStatus]:
        """``GET /api/v1/processes``: every supervised process with its state and why."""
        data = await self._get_json("/api/v1/processes")
        return decode(lambda: [ProcessStatus.from_json(p) for p in data["processes"]], "processes")

    async def process_logs(self, name: str, lines: int = 200) -> list[str]:
        """``GET /api/v1/processes/{name}/logs``: the tail of its captured output."""
        data = await self._get_json(f"/api/v1/processes/{seg(name)}/logs", {"lines": str(lines)})
        return decode(lambda: [str(line) for line in data["lines"]], "logs")

    async def process_action(self, name: str, action: str) -> ProcessStatus:
        """``POST /api/v1/processes/{name}/{action}`` (start, stop, restart or release).

        Returns:
            The process as it was when the agent accepted the action.

        Raises:
            AgentError: ``forbidden`` for a read-only token, ``http`` with status 404 or 409
                (unknown process, or the action does not apply), or any transport failure.
        """
        data = await self._post_json(f"/api/v1/processes/{seg(name)}/{seg(action)}")
        return decode(lambda: ProcessStatus.from_json(data["process"]), "process action")

    async def probe_now(self, model: str) -> None:
        """``POST /api/v1/models/{name}/probe``: the agent probes the model right away."""
        await self._post_json(f"/api/v1/models/{seg(model)}/probe")

    async def acknowledge(self, incident_id: int) -> Incident:
        """``POST /api/v1/incidents/{id}/acknowledge``; 409 when it is not open."""
        data = await self._post_json(f"/api/v1/incidents/{int(incident_id)}/acknowledge")
        return decode(lambda: Incident.from_json(data["incident"]), "acknowledge")

    async def resolve(self, incident_id: int) -> Incident:
        """``POST /api/v1/incidents/{id}/resolve``; 409 when it is already resolved."""
        data = await self._post_json(f"/api/v1/incidents/{int(incident_id)}/resolve")
        return decode(lambda: Incident.from_json(data["incident"]), "resolve")

    async def report(self, fmt: str = "html", since: str = "7d") -> bytes:
        """``GET /api/v1/report``: the host report as the agent renders it, naming the
        operator so the export is audited.

        Args:
            fmt: ``html``, ``md`` or ``json``.
            since: The window, a duration such as ``7d``.
        """
        return await self._send(
            "GET", "/api/v1/report", {"format": fmt, "since": since}, operator=True
        )

    # --- alerts (issue 15): what fires, what is muted, what reached people --------------

    async def alerts(self, state: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/v1/alerts``: pending and firing alerts (newest first), then those
        resolved in the last hour; each a dict as documented in docs/api.md.

        Args:
            state: ``pending``, ``firing``, ``silenced`` or ``resolved``; None for all.
        """
        data = await self._get_json("/api/v1/alerts", {"state": state} if state else None)
        return decode(lambda: [dict(a) for a in data["alerts"]], "alerts")

    async def silences(self, state: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/v1/silences``, newest first (``state``: active, pending, expired)."""
        data = await self._get_json("/api/v1/silences", {"state": state} if state else None)
        return decode(lambda: [dict(s) for s in data["silences"]], "silences")

    async def deliveries(self, limit: int = 100) -> dict[str, list[dict[str, Any]]]:
        """``GET /api/v1/deliveries``: ``{"deliveries": [...], "channels": [...]}``, outbox
        rows newest first and each channel's delivery health."""
        data = await self._get_json("/api/v1/deliveries", {"limit": str(limit)})

        def build() -> dict[str, list[dict[str, Any]]]:
            return {
                "deliveries": [dict(d) for d in data["deliveries"]],
                "channels": [dict(c) for c in data["channels"]],
            }

        return decode(build, "deliveries")

    async def create_silence(
        self, matchers: list[str], duration: str, comment: str
    ) -> dict[str, Any]:
        """``POST /api/v1/silences`` (operate): mute alerts whose labels match ``matchers``
        (``["model=m1"]``) for ``duration`` (``2h``); the agent records the operator as
        author (``silence.created``).

        Returns:
            The silence as the agent stored it.
        """
        body = {"matchers": list(matchers), "duration": duration, "comment": comment}
        data = await self._post_json("/api/v1/silences", body)
        return decode(lambda: dict(data["silence"]), "create silence")

    async def expire_silence(self, silence_id: int) -> dict[str, Any]:
        """``DELETE /api/v1/silences/{id}`` (operate): end it now (``silence.expired``); 404
        when no such silence is in force."""
        path = f"/api/v1/silences/{int(silence_id)}"
        data = parse_json(await self._send("DELETE", path, operator=True), path)
        return decode(lambda: dict(data["silence"]), "expire silence")

    async def _post_json(self, path: str, body: Any = None) -> Any:
        return parse_json(await self._send("POST", path, operator=True, body=body), path)

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        operator: bool = False,
        body: Any = None,
    ) -> bytes:
        """One request (``body``, if not None, sent as JSON); the body of a 2xx answer, every
        failure an :class:`AgentError`."""
        return (await self._exchange(method, path, params, operator=operator, body=body))[2]

    async def _exchange(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        operator: bool = False,
        body: Any = None,
        etag: str | None = None,
    ) -> tuple[int, str | None, bytes]:
        """:meth:`_send`, answering (status, ``ETag``, body); with ``etag``, sent as
        ``If-None-Match``, a 304 is an answer too (with an empty body)."""
        session = self._ensure_session()
        headers = {"X-Vigil-Operator": self.operator or operator_identity()} if operator else {}
        if etag is not None:
            headers["If-None-Match"] = etag
        try:
            # No redirects: the token must only ever go to the agent we were pointed at.
            async with session.request(
                method,
                self.url + path,
                params=params,
                headers=headers,
                json=body,
                allow_redirects=False,
            ) as resp:
                answer = await resp.read()
                if resp.status == 304 and etag is not None:
                    return 304, resp.headers.get("ETag", etag), b""
                if resp.status >= 300:
                    raise self._refusal(method, path, resp.status, resp.reason, answer)
                return resp.status, resp.headers.get("ETag"), answer
        except AgentError:
            raise
        # Before ClientError: aiohttp's timeout errors subclass both.
        except TimeoutError as exc:
            raise AgentError(f"timeout after {self.timeout_s:g}s", "timeout") from exc
        except aiohttp.InvalidURL as exc:
            raise AgentError(f"bad agent URL {self.url!r}", "config") from exc
        # Before ClientConnectorError, which both subclass.
        except aiohttp.ClientConnectorCertificateError as exc:
            why = tls_failure(exc.certificate_error, self._netloc, _CA_HINT)
            raise AgentError(why or str(exc), "unreachable") from exc
        except aiohttp.ClientConnectorSSLError as exc:
            why = tls_failure(exc.os_error, self._netloc, _CA_HINT)
            raise AgentError(why or str(exc), "unreachable") from exc
        except aiohttp.ClientConnectorError as exc:
            err = exc.os_error
            reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
            raise AgentError(
                f"cannot connect to {self._netloc} ({reason.lower()})", "unreachable"
            ) from exc
        except aiohttp.ServerDisconnectedError as exc:
            # An HTTPS agent drops a plain-HTTP request without a word.
            hint = " (does it serve HTTPS? use https:// in its URL)" if self._plain else ""
            raise AgentError(
                f"{self._netloc} closed the connection without answering{hint}", "unreachable"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentError(
                f"{self.url}: {exc.__class__.__name__}: {exc}".rstrip(": "), "unreachable"
            ) from exc

    def _refusal(
        self, method: str, path: str, status: int, reason: str | None, answer: bytes
    ) -> AgentError:
        """The error for an answer of ``status`` >= 300 (no redirect is followed)."""
        if status == 401:
            return AgentError("token rejected", "rejected", status)
        if status == 403 and scope_refusal(self.scope, answer):
            if method != "GET":
                self.scope = "read"  # the agent said so: stop offering actions
            why = error_text(answer) or "forbidden"
            return AgentError(f"token lacks the scope for {path}: {why}", "forbidden", status)
        why = error_text(answer) or reason or ""
        return AgentError(f"HTTP {status} from {path}: {why}".rstrip(": "), "http", status)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector | None = None
            if self.unix_socket and self.url.startswith("https://"):
                connector = TlsUnixConnector(self.unix_socket, self.ssl_context)
            elif self.unix_socket:
                connector = aiohttp.UnixConnector(path=self.unix_socket)
            elif self.ssl_context is not None:
                connector = aiohttp.TCPConnector(ssl=self.ssl_context)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
            )
        return self._session

    async def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return parse_json(await self._send("GET", path, params), path)


def operator_identity() -> str:
    """``user@host`` of whoever runs the TUI, as the CLI names operators in the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
