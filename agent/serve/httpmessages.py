"""Requests and responses of the agent's own HTTP/1.1 server (:mod:`agent.serve.httpserver`).

The API's handlers were written against aiohttp.web; these types keep the few parts of that
surface they use (``request.match_info``, ``request.query``, ``await request.json()``,
``request.headers``, ``request["scope"]``, ``json_response(obj, status=)``) so the agent no
longer loads aiohttp (about 16 MB of its RSS) to answer a handful of JSON routes.

Framing (Content-Length, chunked, Connection, Date) belongs to :class:`ResponseSink`, never to a
handler: headers a handler sets with those names are dropped, so no handler can desynchronise
a keep-alive connection.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from storage.jsontext import loads_json

JSON_TYPE = "application/json; charset=utf-8"
"""What aiohttp's ``json_response`` sent, and what clients check before parsing."""

_WHOLE = re.compile(r"[0-9]{1,18}")
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "date"})
_NO_BODY = frozenset({204, 304})
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def whole_number(text: str) -> int | None:
    """``text`` as a whole number of ASCII digits, at most 18 of them (so it fits SQLite's
    64-bit integers), else None.

    ``str.isdigit()`` is no such test: a superscript two passes it and then fails ``int()``,
    and a number of 20 digits passed both and then overflowed SQLite; both were 500s.
    """
    return int(text) if _WHOLE.fullmatch(text) else None


class HttpError(Exception):
    """Raised by a handler (or the router) to answer ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Headers(Mapping[str, str]):
    """Request headers, looked up case-insensitively. A field sent more than once reads as its
    values joined by ``", "`` (RFC 9110 section 5.3), so none is silently lost."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        merged: dict[str, str] = {}
        for name, value in fields:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        self._fields = merged

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


class Request:
    """One parsed request, its body already read (bounded by the server's body limit).

    Attributes:
        method: Upper-case method as sent (``GET``).
        path: The path, percent-decoded (``/api/v1/processes/my model/logs``).
        raw_path: The path as sent, still percent-encoded.
        query_string: What followed ``?``, as sent.
        headers: The request's headers, case-insensitive.
        body: The body (empty without Content-Length).
        match_info: The route's ``{name}`` parameters, percent-decoded; set by the router.
        remote: The peer's address, for logs.
    """

    __slots__ = (
        "_query",
        "_sink",
        "_state",
        "body",
        "headers",
        "match_info",
        "method",
        "path",
        "query_string",
        "raw_path",
        "remote",
    )

    def __init__(
        self,
        method: str,
        raw_path: str,
        path: str,
        query_string: str,
        headers: Headers,
        body: bytes = b"",
        remote: str = "",
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.remote = remote
        self.match_info: dict[str, str] = {}
        self._query: dict[str, str] | None = None
        self._state: dict[str, Any] = {}
        self._sink: ResponseSink | None = None

    @property
    def query(self) -> Mapping[str, str]:
        """Query parameters, decoded (``+`` is a space); a name given twice keeps its first
        value, and ``?state=`` reads as ``""``, as aiohttp's ``request.query.get`` did."""
        if self._query is None:
            query: dict[str, str] = {}
            for name, value in parse_qsl(self.query_string, keep_blank_values=True):
                query.setdefault(name, value)
            self._query = query
        return self._query

    async def read(self) -> bytes:
        """The body (async, as aiohttp's was)."""
        return self.body

    async def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: the body is not UTF-8 JSON (empty included), or nests too deeply.
        """
        return loads_json(self.body.decode("utf-8"))

    # Per-request state a middleware leaves for the handler (the token's scope).
    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """Per-request state set with ``request[key] = value``, else ``default``."""
        return self._state.get(key, default)


class Response:
    """A complete answer: status, headers and the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = dict(headers or {})
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        elif body and not any(k.lower() == "content-type" for k in self.headers):
            self.headers["Content-Type"] = "application/octet-stream"


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``data`` as JSON (``json.dumps`` defaults, as aiohttp's ``json_response`` wrote it)."""
    return Response(json.dumps(data).encode("utf-8"), status, headers, JSON_TYPE)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The API's error shape, ``{"error": message}``."""
    return json_response({"error": message}, status, headers)


class StreamResponse:
    """An answer written as it is produced (chunked transfer coding to HTTP/1.1 clients).

    ``await resp.prepare(request)`` sends the status and headers, ``await resp.write(data)``
    each piece, ``await resp.write_eof()`` the end; a handler returns it once done (the server
    ends a stream the handler left open).
    """

    def __init__(
        self,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.headers = dict(headers or {})
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        self._sink: ResponseSink | None = None
        self.finished = False

    @property
    def prepared(self) -> bool:
        """Whether the status and headers were sent."""
        return self._sink is not None

    async def prepare(self, request: Request) -> None:
        """Send the status and headers on ``request``'s connection."""
        if self._sink is not None:
            return
        if request._sink is None:
            raise RuntimeError("this request has no connection to answer on")
        self._sink = request._sink
        await self._sink.start_stream(self.status, self.headers)

    async def write(self, data: bytes) -> None:
        """Send ``data`` (nothing is sent for an empty piece: it would read as the end)."""
        if self._sink is None:
            raise RuntimeError("prepare() the stream before writing to it")
        if self.finished:
            raise RuntimeError("the stream has ended")
        if data:
            await self._sink.write_chunk(data)

    async def write_eof(self) -> None:
        """End the stream."""
        if self._sink is None:
            raise RuntimeError("prepare() the stream before ending it")
        if not self.finished:
            self.finished = True
            await self._sink.end_stream()


_date_cache: tuple[int, str] = (0, "")


def http_date(now: float | None = None) -> str:
    """``Date`` header value (RFC 9110 IMF-fixdate), formatted once per second; not
    ``strftime``, whose day and month names follow the locale."""
    global _date_cache  # noqa: PLW0603 - one value per second, shared by every response
    t = time.time() if now is None else now
    second = int(t)
    if _date_cache[0] != second or not _date_cache[1]:
        g = time.gmtime(second)
        text = (
            f"{_DAYS[g.tm_wday]}, {g.tm_mday:02d} {_MONTHS[g.tm_mon - 1]} {g.tm_year} "
            f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} GMT"
        )
        _date_cache = (second, text)
    return _date_cache[1]


def _head(status: int, headers: Mapping[str, str], framing: list[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers.items():
        if name.lower() in _FRAMING:
            continue
        if any(c in name or c in value for c in "\r\n\0"):
            # A value with a line break would start a header (or a body) of its own.
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    lines.extend(f"{name}: {value}" for name, value in framing)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ResponseSink:
    """Where one request's answer goes, and how it must be framed for this connection.

    Attributes:
        keep_alive: Whether the connection stays open after this answer; the server decides
            before the handler runs and may only turn it off (a stream to an HTTP/1.0 client,
            an error).
        started: The status line went out (a later failure can only drop the connection).
    """

    def __init__(
        self, writer: asyncio.StreamWriter, *, head_only: bool, http11: bool, keep_alive: bool
    ) -> None:
        self.writer = writer
        self.head_only = head_only
        self.http11 = http11
        self.keep_alive = keep_alive
        self.started = False
        self._chunked = False

    def _connection(self) -> list[tuple[str, str]]:
        if not self.keep_alive:
            return [("Connection", "close")]
        return [] if self.http11 else [("Connection", "keep-alive")]

    async def send(self, response: Response) -> None:
        """Write a complete answer (no body to HEAD, Content-Length still its length)."""
        framing = [("Date", http_date())]
        no_body = response.status in _NO_BODY or response.status < 200
        if not no_body:
            framing.append(("Content-Length", str(len(response.body))))
        framing += self._connection()
        head = _head(response.status, response.headers, framing)
        self.started = True
        body = b"" if self.head_only or no_body else response.body
        self.writer.write(head + body if body else head)
        await self.writer.drain()

    async def start_stream(self, status: int, headers: Mapping[str, str]) -> None:
        """Status and headers of a streamed answer: chunked to HTTP/1.1, else ended by close."""
        framing = [("Date", http_date())]
        if self.http11:
            framing.append(("Transfer-Encoding", "chunked"))
        else:
            self.keep_alive = False  # an HTTP/1.0 client knows the end only by the close
        framing += self._connection()
        head = _head(status, headers, framing)
        self.started = True
        self._chunked = self.http11
        self.writer.write(head)
        await self.writer.drain()

    async def write_chunk(self, data: bytes) -> None:
        """One piece of a streamed answer."""
        if self.head_only:
            return
        if self._chunked:
            self.writer.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.writer.write(data)
        await self.writer.drain()

    async def end_stream(self) -> None:
        """The end of a streamed answer (the last, empty chunk)."""
        if self._chunked and not self.head_only:
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()
