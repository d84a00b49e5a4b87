"""The agent's own HTTP/1.1 server on asyncio streams, in place of aiohttp's (issue 14).

The API answers a few dozen JSON routes to the CLI, the TUI and Prometheus; aiohttp cost the
agent about 16 MB of RSS for that. This server does what those clients use, and guards what a
server on a port must guard:

* HTTP/1.1 keep-alive (the default; ``Connection: close`` ends it, HTTP/1.0 keeps it only when
  asked), requests on one connection answered one after another in order, so pipelined
  requests are answered in the order they came.
* Limits: the request line and headers together at most ``max_head_bytes`` (431), a request
  line at most ``max_request_line`` (414), ``max_headers`` fields (431), a body at most
  ``max_body_bytes`` (413). Bodies come with Content-Length only: a chunked request body is
  refused with 411, since no client of the API sends one, and not parsing chunked input also
  closes the Content-Length/Transfer-Encoding smuggling door. ``Expect: 100-continue`` is
  honoured (curl sends it for larger bodies).
* Deadlines: a TLS handshake must end within ``header_timeout_s``; a new connection has
  ``header_timeout_s`` for its first request's headers, and a request, once its first byte is
  in, that long for the rest of them (a slowloris client sending a byte now and then is cut
  off, with a 408); a kept-alive connection may sit idle ``idle_timeout_s`` between requests;
  a body must arrive within ``body_timeout_s``.
* A malformed request gets a 400 (414/431/505 where those fit) and the connection is closed; a
  handler that raises gets a 500 (``{"error": ...}``, the traceback in the log) and the server
  goes on; an error in one connection never reaches another.
* :meth:`HttpServer.close` stops listening, closes idle keep-alive connections at once, lets
  requests in flight finish for up to ``shutdown_grace_s``, then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from dataclasses import dataclass
from ssl import SSLContext
from urllib.parse import unquote, urlsplit

from agent.serve.httpmessages import (
    Headers,
    HttpError,
    Request,
    ResponseSink,
    StreamResponse,
    error_response,
)
from agent.serve.routing import Router

log = logging.getLogger("vigil.http")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/\d\.\d")
_DIGITS = re.compile(r"[0-9]+")
_LINGER_S = 1.0
_LINGER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may cost the server, and how long a connection may take."""

    max_head_bytes: int = 32 * 1024
    max_request_line: int = 8190
    max_headers: int = 100
    max_body_bytes: int = 1024 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    # Longer than Prometheus' default scrape interval (60 s at most, usually 15 s), so a
    # scraper keeps its connection from one scrape to the next.
    idle_timeout_s: float = 75.0
    shutdown_grace_s: float = 5.0
    # Each connection costs a task and buffers; 200 slow half-open clients once held 200 for
    # 80 s (issue 17). At the cap the longest-idle connection makes room (a client that has
    # sent nothing loses nothing but its socket); with none idle the newcomer gets a 503.
    max_connections: int = 256


class _Refused(Exception):
    """The request cannot be served; answer ``status`` with ``message`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Head:
    request: Request
    length: int
    http11: bool
    keep_alive: bool
    expect_continue: bool


def parse_head(head: bytes, limits: Limits, remote: str = "") -> _Head:
    """Parse a request line and headers (``head`` ends with the blank line).

    Raises:
        _Refused: malformed (400), too long a line (414), too many headers (431), an HTTP
            version other than 1.0/1.1 (505), a chunked body (411), too large a body (413).
    """
    # A client may send a stray CRLF after a body (RFC 9112 section 2.2): skip it.
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    method, target, http11 = _request_line(lines[0], limits)
    headers = _headers(lines[1:], limits)
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    raw_path, _, query = target.partition("#")[0].partition("?")
    request = Request(method, raw_path, unquote(raw_path), query, headers, b"", remote)
    return _Head(
        request,
        _body_length(headers, limits),
        http11,
        keep_alive="close" not in tokens if http11 else "keep-alive" in tokens,
        expect_continue=http11 and headers.get("Expect", "").lower() == "100-continue",
    )


def _request_line(line: str, limits: Limits) -> tuple[str, str, bool]:
    """Method, origin-form target and whether the client speaks HTTP/1.1."""
    if len(line) > limits.max_request_line:
        raise _Refused(414, f"request line longer than {limits.max_request_line} bytes")
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise _Refused(
            400, "malformed request line: expected 'METHOD /path HTTP/1.1' with single spaces"
        )
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if _VERSION.fullmatch(version):
            raise _Refused(505, f"HTTP version {version} is not supported: use HTTP/1.1")
        raise _Refused(400, "malformed request line: expected HTTP/1.1 as its last word")
    if not target.isascii():
        raise _Refused(400, "request target: expected ASCII (percent-encode the rest)")
    if target.lower().startswith(("http://", "https://")):
        split = urlsplit(target)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    if not target.startswith("/"):
        raise _Refused(400, f"request target: expected a path such as /healthz, got {target!r}")
    return method, target, version == "HTTP/1.1"


def _headers(lines: list[str], limits: Limits) -> Headers:
    fields: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            break
        if line[0] in " \t":
            raise _Refused(400, "malformed header: folded lines are not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise _Refused(400, "malformed header: expected 'Name: value'")
        fields.append((name, value.strip(" \t")))
        if len(fields) > limits.max_headers:
            raise _Refused(431, f"more than {limits.max_headers} header fields")
    return Headers(fields)


def _body_length(headers: Headers, limits: Limits) -> int:
    if "Transfer-Encoding" in headers:
        if "Content-Length" in headers:
            raise _Refused(400, "both Transfer-Encoding and Content-Length: ambiguous framing")
        raise _Refused(411, "chunked request bodies are not accepted: send Content-Length")
    if "Content-Length" not in headers:
        return 0
    values = {v.strip() for v in headers["Content-Length"].split(",")}
    value = values.pop()
    # ASCII digits: str.isdigit() passes a superscript two, which int() then refused, and
    # int() refuses 4,300 digits or more; either escaped as a failed connection, unanswered.
    if values or not _DIGITS.fullmatch(value):
        raise _Refused(400, "Content-Length: expected one whole number")
    if len(value) > 18 or int(value) > limits.max_body_bytes:
        raise _Refused(413, f"request body over {limits.max_body_bytes} bytes")
    return int(value)


class _Connection:
    """One client connection; ``idle`` while it waits for a request's first byte, since
    ``idle_since`` (monotonic)."""

    __slots__ = ("_idle", "idle_since", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._idle = False
        self.idle_since = 0.0
        self.writer = writer

    @property
    def idle(self) -> bool:
        return self._idle

    @idle.setter
    def idle(self, value: bool) -> None:
        if value and not self._idle:
            self.idle_since = time.monotonic()
        self._idle = value


class HttpServer:
    """Serve a :class:`Router` on a TCP address."""

    def __init__(self, router: Router, limits: Limits | None = None) -> None:
        self.router = router
        self.limits = limits or Limits()
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], _Connection] = {}
        self._closing = False

    async def start(self, host: str, port: int, ssl: SSLContext | None = None) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; a name may bind several
        addresses, as ``loop.create_server`` does); with ``ssl``, serve HTTPS."""
        self._server = await asyncio.start_server(
            self._on_connection,
            host,
            port,
            reuse_address=True,
            limit=self.limits.max_head_bytes,
            ssl=ssl,
            # A client that never finishes its handshake is cut off as one that never sends
            # its headers would be (asyncio's default is 60 s). Until the handshake is done
            # the connection is asyncio's, not yet counted against max_connections.
            ssl_handshake_timeout=self.limits.header_timeout_s if ssl is not None else None,
        )

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (to read the bound address back)."""
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def connections(self) -> int:
        """Open client connections (for tests and shutdown logs)."""
        return len(self._conns)

    async def close(self) -> None:
        """Stop listening; close idle connections now, give requests in flight up to
        ``shutdown_grace_s`` to finish, then cancel them."""
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        for task, conn in list(self._conns.items()):
            if conn.idle:
                task.cancel()
        pending = set(self._conns)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.limits.shutdown_grace_s)
            if pending:
                log.warning(
                    "requests still running at shutdown were cancelled count=%d", len(pending)
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()
        self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(writer)
        room = self._make_room()
        self._conns[task] = conn
        try:
            if not room:
                log.warning("connection refused: %d open, none idle", len(self._conns) - 1)
                await _refuse(reader, writer, 503, "too many connections; try again later")
            elif not self._closing:
                await self._serve(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except Exception:
            # A fault of the server itself, never a handler's (those are answered with 500):
            # it ends this connection only.
            log.exception("connection failed peer=%s", writer.get_extra_info("peername"))
        finally:
            del self._conns[task]
            await _close(writer)

    def _make_room(self) -> bool:
        """Whether a new connection may be served: under the cap, or the longest-idle
        connection was told to close to make room for it."""
        if len(self._conns) < self.limits.max_connections:
            return True
        idle = [c for c in self._conns.values() if c.idle]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)
        # Aborting the socket ends its wait for a first byte (it reads the end of the stream)
        # and its task leaves the table as for any client that went away.
        oldest.idle = False
        oldest.writer.transport.abort()
        return True

    async def _serve(
        self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        wait_s = self.limits.header_timeout_s
        while not self._closing:
            conn.idle = True
            try:
                raw = await self._read_head(reader, wait_s, conn)
                if raw is None:
                    return
                head = parse_head(raw, self.limits, remote)
                if head.length:
                    head.request.body = await self._read_body(reader, writer, head)
            except _Refused as exc:
                conn.idle = False
                await _refuse(reader, writer, exc.status, exc.message)
                return
            wait_s = self.limits.idle_timeout_s
            request = head.request
            sink = ResponseSink(
                writer,
                head_only=request.method == "HEAD",
                http11=head.http11,
                keep_alive=head.keep_alive,
            )
            request._sink = sink
            await self._answer(request, sink)
            if not sink.keep_alive:
                return

    async def _read_head(
        self, reader: asyncio.StreamReader, wait_s: float, conn: _Connection
    ) -> bytes | None:
        """The next request's line and headers; None when the client closed or stayed idle.

        The wait for the first byte is the idle timeout; the headers deadline starts with it.
        """
        try:
            async with asyncio.timeout(wait_s):
                first = await reader.read(1)
        except TimeoutError:
            return None
        if not first:
            return None
        conn.idle = False  # a request has begun: no longer one to make room with
        try:
            async with asyncio.timeout(self.limits.header_timeout_s):
                rest = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise _Refused(
                408, f"request headers not complete within {self.limits.header_timeout_s:g}s"
            ) from None
        except asyncio.LimitOverrunError:
            raise _Refused(
                431, f"request line and headers over {self.limits.max_head_bytes} bytes"
            ) from None
        except asyncio.IncompleteReadError:
            return None
        return first + rest

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: _Head
    ) -> bytes:
        if head.expect_continue:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                return await reader.readexactly(head.length)
        except TimeoutError:
            raise _Refused(
                408, f"request body not complete within {self.limits.body_timeout_s:g}s"
            ) from None

    async def _answer(self, request: Request, sink: ResponseSink) -> None:
        """Run the request through the router and send what it answers."""
        try:
            response = await self.router.dispatch(request)
            if isinstance(response, StreamResponse):
                if not response.prepared:
                    await response.prepare(request)
                await response.write_eof()
                return
        except HttpError as exc:
            response = error_response(exc.status, exc.message, exc.headers)
        except Exception as exc:
            if sink.started:
                # Half an answer is out: the client can only learn of the failure by the close.
                log.warning(
                    "streamed response failed method=%s path=%s error=%r",
                    request.method,
                    request.path,
                    str(exc),
                )
                sink.keep_alive = False
                return
            log.exception("request failed method=%s path=%s", request.method, request.path)
            response = error_response(
                500, f"internal error ({type(exc).__name__}): see the agent's log"
            )
        if sink.started:
            log.error(
                "handler returned a response after starting a stream method=%s path=%s",
                request.method,
                request.path,
            )
            sink.keep_alive = False
            return
        # A request answered during shutdown says so, and the connection closes after it.
        sink.keep_alive = sink.keep_alive and not self._closing
        try:
            await sink.send(response)
        except ValueError as exc:  # a header value with a line break: a handler's bug
            log.error(
                "bad response header method=%s path=%s error=%r",
                request.method,
                request.path,
                str(exc),
            )
            await sink.send(error_response(500, "internal error: see the agent's log"))


async def _refuse(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, message: str
) -> None:
    """Answer a request that cannot be served, then close without resetting the answer away.

    A client may still be sending (a body over the limit): closing with unread input makes the
    kernel send a reset, which can destroy the answer before the client reads it. So the write
    side is shut first and what still comes is read and dropped, for a bounded time.
    """
    log.debug("request refused status=%d reason=%s", status, message)
    sink = ResponseSink(writer, head_only=False, http11=True, keep_alive=False)
    # OSError, not only ConnectionError: a peer that reset the connection after the answer
    # makes write_eof's shutdown() fail with ENOTCONN, which was logged as a failed
    # connection with a traceback for every such client.
    with contextlib.suppress(OSError):
        await sink.send(error_response(status, message))
        if writer.can_write_eof():
            writer.write_eof()
        dropped = 0
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(_LINGER_S):
                while dropped < _LINGER_BYTES:
                    data = await reader.read(65536)
                    if not data:
                        break
                    dropped += len(data)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a connection; abort it when the peer does not take the last bytes in time."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()
