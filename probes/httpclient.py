"""The agent's HTTP client: HTTP/1.1 on asyncio streams, with kept-alive connections.

The model probes and the notify channels speak HTTP through one :class:`HttpClient`. It does
what they need and no more, in a few hundred lines instead of aiohttp's ~16 MB of resident
memory in every agent: GET and POST with a JSON or bytes body and headers; a total time limit
per request (connect, headers and body together, as ``aiohttp.ClientTimeout(total=...)``
was); the answer's status, reason and case-insensitive headers; the body read whole (with a
byte limit) or piece by piece as it arrives, so a streaming probe can time every token; and
redirects followed as browsers do (at most :data:`MAX_REDIRECTS`).

Connections are kept alive per (scheme, host, port) and reused, most recently used first, with
no limit on how many are open: a probe's TTFT clock starts before its request takes a
connection, so waiting for a pool slot would be counted as the model's time. A response read
to its end gives its connection back; one abandoned part way, or broken, closes it. A kept
connection idle for longer than ``keepalive_s`` is closed rather than reused (servers drop
idle connections after a few seconds; uvicorn after 5). When a reused connection turns out
to have been closed by the server before it answered, the request is sent once more on a new
connection: the server never saw it, and reporting it as a broken model would be wrong.

No ``Accept-Encoding`` but ``identity``: a streamed answer must not sit in a compressor, and
on a loopback or LAN link compression buys nothing. No cookies, no proxies from the
environment (aiohttp did not read them either, by default).

Errors: :class:`WireError` with the probe run category it means (``refused``: cannot resolve
or connect; ``protocol_error``: TLS failed, or the answer is not HTTP or breaks off), and the
builtin :class:`TimeoutError` when the request's time limit is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

from probes.http1 import (
    InvalidURL,
    Url,
    WireError,
    connect,
    merge_headers,
    read_head,
    read_line,
    request_head,
    resolve,
    split_url,
)
from probes.httpresponse import Connection, Response, reason

__all__ = ["HttpClient", "InvalidURL", "Response", "WireError"]

DEFAULT_KEEPALIVE_S = 15.0
"""How long an idle connection is kept for reuse (aiohttp's default too)."""
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
REDIRECT_BODY_BYTES = 64 * 1024
"""A redirect's body is read (and dropped) up to this much, so its connection can be reused."""
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


class _RequestContext:
    """What ``client.get(...)`` returns: ``async with`` it for the :class:`Response`."""

    def __init__(self, client: HttpClient, method: str, url: str, kwargs: dict[str, Any]) -> None:
        self._client = client
        self._method = method
        self._url = url
        self._kwargs = kwargs
        self._resp: Response | None = None

    async def __aenter__(self) -> Response:
        self._resp = await self._client.send(self._method, self._url, **self._kwargs)
        return self._resp

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._resp is not None:
            self._resp.release()


class HttpClient:
    """Requests with kept-alive connections; one per agent, shared by every probe.

    Args:
        user_agent: the ``User-Agent`` sent unless a request gives its own.
        keepalive_s: how long an idle connection is kept for reuse.
        ssl_context: for https; default the system's trust store, made on first use.
    """

    def __init__(
        self,
        *,
        user_agent: str = "vigil-probe",
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.user_agent = user_agent
        self.keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self.opened = 0
        """Connections opened so far (a reused one is not counted again)."""
        self.closed = False

    # --- requests ---------------------------------------------------------------------------

    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        follow_redirects: bool = True,
    ) -> _RequestContext:
        """``async with client.get(url) as resp``; see :meth:`send` for the arguments."""
        kwargs = {"headers": headers, "timeout_s": timeout_s, "follow_redirects": follow_redirects}
        return _RequestContext(self, "GET", url, kwargs)

    def post(
        self,
        url: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        follow_redirects: bool = True,
    ) -> _RequestContext:
        """``async with client.post(url, json=...) as resp``; see :meth:`send`."""
        kwargs = {
            "json": json,
            "data": data,
            "headers": headers,
            "timeout_s": timeout_s,
            "follow_redirects": follow_redirects,
        }
        return _RequestContext(self, "POST", url, kwargs)

    async def send(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """Send a request and return once the answer's head has arrived; the caller reads
        the body and must :meth:`Response.release` it (``async with`` does).

        Args:
            json: a body to send as JSON (``Content-Type: application/json``).
            data: a body to send as it is; not with ``json``.
            timeout_s: seconds for the whole request, body reading included; None: no limit.
            follow_redirects: follow 301, 302, 303, 307 and 308 (303, and 301/302 after a
                POST, turn into a GET without body, as browsers and aiohttp do; the
                ``Authorization`` header is not sent to another origin).

        Raises:
            WireError: see the module docs; :class:`InvalidURL` for a URL that is not
                http(s) with a host.
            TimeoutError: ``timeout_s`` spent.
            RuntimeError: the client is closed.
        """
        if self.closed:
            raise RuntimeError("the HTTP client is closed")
        if json is not None and data is not None:
            raise ValueError("expected json or data, not both")
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        body = jsonlib.dumps(json).encode() if json is not None else data
        given = dict(headers or {})
        if json is not None:
            given = merge_headers({"Content-Type": "application/json"}, given)
        method = method.upper()
        for hop in range(MAX_REDIRECTS + 1):
            where = split_url(url)
            resp = await self._exchange(method, url, where, given, body, deadline)
            location = resp.headers.get("location")
            if not follow_redirects or resp.status not in REDIRECT_STATUSES or not location:
                return resp
            if hop == MAX_REDIRECTS:
                resp.release()
                raise WireError("protocol_error", f"more than {MAX_REDIRECTS} redirects")
            await resp.drain(REDIRECT_BODY_BYTES)
            resp.release()
            url = urljoin(url, location)
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
                given = {k: v for k, v in given.items() if k.lower() != "content-type"}
            if split_url(url).origin != where.origin:
                given = {k: v for k, v in given.items() if k.lower() != "authorization"}
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(
        self,
        method: str,
        url: str,
        where: Url,
        headers: Mapping[str, str],
        body: bytes | None,
        deadline: float | None,
    ) -> Response:
        """One request and its answer's head, on a kept connection or a new one."""
        default = {
            "Host": where.host_header(),
            "User-Agent": self.user_agent,
            "Accept": "*/*",
            "Accept-Encoding": "identity",
        }
        head_fields = merge_headers(default, headers)
        if body is not None or method not in _BODYLESS_METHODS:
            head_fields["Content-Length"] = str(len(body or b""))
        wire = request_head(method, where.target, head_fields) + (body or b"")
        async with asyncio.timeout_at(deadline):
            while True:
                conn = self._take(where.origin)
                reused = conn is not None
                if conn is None:
                    conn = await self._open(where)
                answered = False
                try:
                    conn.writer.write(wire)
                    await conn.writer.drain()
                    status_line = await read_line(conn.reader)
                    answered = True
                    head = await read_head(conn.reader, status_line)
                    while 100 <= head.status < 200 and head.status != 101:  # interim answers
                        head = await read_head(conn.reader, await read_line(conn.reader))
                    return Response(self._give_back, conn, url, method, head, deadline)
                except (asyncio.IncompleteReadError, OSError) as exc:
                    conn.close()
                    if reused and not answered:
                        continue  # the server had closed the kept connection: send again
                    raise _lost(exc, answered) from None
                except BaseException:
                    conn.close()
                    raise

    # --- connections ------------------------------------------------------------------------

    def _take(self, origin: tuple[str, str, int]) -> Connection | None:
        """The most recently used idle connection to ``origin`` that is still good."""
        self._sweep()
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.alive():
                return conn
            conn.close()
        return None

    def _give_back(self, conn: Connection) -> None:
        if self.closed or not conn.alive():
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._sweep()

    def _sweep(self) -> None:
        """Close the connections idle for longer than ``keepalive_s`` or closed by the server
        (for every origin: a model removed from the config leaves none behind for long)."""
        now = asyncio.get_running_loop().time()
        for origin, conns in list(self._idle.items()):
            keep = [c for c in conns if c.alive() and now - c.idle_since <= self.keepalive_s]
            for conn in conns:
                if conn not in keep:
                    conn.close()
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]

    async def _open(self, where: Url) -> Connection:
        addresses = await resolve(where.host, where.port)
        reader, writer = await connect(addresses, where.host, where.port)
        try:
            if where.tls:
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                try:
                    await writer.start_tls(self._ssl, server_hostname=where.host)
                except ssl.SSLError as exc:
                    raise WireError("protocol_error", f"TLS handshake failed: {exc}") from None
                except (OSError, asyncio.IncompleteReadError) as exc:
                    raise WireError(
                        "protocol_error", f"connection lost during the TLS handshake: {exc}"
                    ) from None
        except BaseException:
            writer.close()
            raise
        self.opened += 1
        return Connection(where.origin, reader, writer)

    def idle_connections(self) -> int:
        """How many connections are kept open for reuse now."""
        return sum(len(conns) for conns in self._idle.values())

    async def close(self) -> None:
        """Close the kept connections; responses still being read close theirs on release."""
        self.closed = True
        conns = [c for conns in self._idle.values() for c in conns]
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                # Bounded: a TLS peer that never answers close_notify must not hold shutdown.
                await asyncio.wait_for(conn.writer.wait_closed(), 0.5)

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _lost(exc: BaseException, answered: bool) -> WireError:
    """A connection that broke before the answer's head was complete."""
    if not answered:
        what = "the server closed the connection without answering"
    else:
        what = "connection lost in the answer's headers"
    if isinstance(exc, OSError):
        what += f": {reason(exc)}"
    return WireError("protocol_error", what)
