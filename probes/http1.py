"""The HTTP/1.1 wire format as the probes speak it, on asyncio streams.

Shared by :mod:`probes.httpwire` (the ``http`` probe's one-shot, phase-timed exchange) and
:mod:`probes.httpclient` (the pooled client the model probes and the notify channels use), so
the two read answers the same way and fail with the same words: URL splitting, resolving and
connecting, the request head, the response head, and the body's framing (Content-Length,
chunked, or to the end of the stream) read piece by piece as it arrives.

Errors are :class:`WireError` carrying the probe run category they mean (``refused`` for a
name that does not resolve or an address that does not accept, ``protocol_error`` for an
answer that is not HTTP). A body that ends early raises :class:`asyncio.IncompleteReadError`
and a reset raises :class:`OSError`: each caller says in its own words where that happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

HEADER_LIMIT_BYTES = 64 * 1024
"""A response line, and the whole head, longer than this is refused; also the streams' buffer
limit (asyncio pauses reading past twice this)."""
READ_BYTES = 64 * 1024
"""The most one body read asks for: what has arrived, up to this, comes back at once."""


class WireError(Exception):
    """The exchange failed; ``category`` is the probe run category it means.

    ``reason`` is the cause without the address (``connection refused``), for callers that
    name the address their own way; it is the whole message unless given.
    """

    def __init__(self, category: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.reason = reason or message


class InvalidURL(WireError):
    """The URL itself is wrong (not http or https, no host, a bad port): no retry can help."""

    def __init__(self, message: str) -> None:
        super().__init__("protocol_error", message)


@dataclass(frozen=True, slots=True)
class Url:
    """An ``http://`` or ``https://`` URL split for the wire."""

    scheme: str
    host: str
    port: int
    target: str
    """Path and query, what the request line asks for."""

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): what a kept-alive connection may be reused for."""
        return (self.scheme, self.host, self.port)

    def host_header(self) -> str:
        """The ``Host`` value: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if _is_ipv6(self.host) else self.host
        return host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"


def split_url(url: str) -> Url:
    """Split ``url``; :class:`InvalidURL` for anything but http(s) with a host."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number or out of range
    except ValueError as exc:
        raise InvalidURL(f"bad URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidURL(f"expected an http:// or https:// URL, got {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return Url(parts.scheme, parts.hostname, port or default, target)


def _is_ipv6(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).version == 6
    return False


async def resolve(host: str, port: int) -> list[tuple[int, str]]:
    """(family, address) pairs in resolver order; an IP literal without asking DNS."""
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host)
        return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, host)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WireError("refused", f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    seen: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in infos:
        entry = (int(family), str(sockaddr[0]))
        if entry not in seen:
            seen.append(entry)
    if not seen:
        raise WireError("refused", f"cannot resolve {host!r}: no addresses")
    return seen


async def connect(
    addresses: list[tuple[int, str]], host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The first address that accepts, in resolver order.

    No happy eyeballs: a probe wants the plain answer "does the first address work", and the
    error says what the OS said about each address that did not (``cannot connect to
    127.0.0.1:8000: connection refused``).
    """
    errors: list[tuple[str, str]] = []
    for _, address in addresses:
        try:
            return await asyncio.open_connection(address, port, limit=HEADER_LIMIT_BYTES)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
            errors.append((address, reason.lower()))
    if len(errors) == 1:
        detail = errors[0][1]
    else:
        detail = "; ".join(f"{address}: {reason}" for address, reason in errors)
    raise WireError("refused", f"cannot connect to {host}:{port}: {detail}", detail)


def request_head(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    """The request line and headers, ready to write; WireError for a line break in them
    (a header value from the config must not smuggle a second header or request)."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise WireError("protocol_error", "a header holds a line break")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def merge_headers(defaults: Mapping[str, str], given: Mapping[str, str]) -> dict[str, str]:
    """``defaults`` with ``given`` on top, names compared case-insensitively."""
    out = dict(defaults)
    for name, value in given.items():
        out = {k: v for k, v in out.items() if k.lower() != name.lower()}
        out[name] = value
    return out


class Headers(Mapping[str, str]):
    """Response headers: names case-insensitive, a repeated header's values joined by ", "."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        key = name.strip().lower()
        old = self._values.get(key)
        self._values[key] = value if old is None else f"{old}, {value}"

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


@dataclass(frozen=True, slots=True)
class Head:
    """A response's status line and headers."""

    version: str
    """``HTTP/1.1`` or ``HTTP/1.0``."""
    status: int
    reason: str
    headers: Headers

    def keep_alive(self) -> bool:
        """Whether the server lets the connection carry another request after this answer."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One line, its end included.

    Raises:
        asyncio.IncompleteReadError: the stream ended first.
        WireError: the line is over :data:`HEADER_LIMIT_BYTES`.
    """
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise WireError("protocol_error", "a response line is over 64 KiB") from None


async def read_head(reader: asyncio.StreamReader, status_line: bytes) -> Head:
    """Parse ``status_line`` (already read, so a caller can time the first byte) and read the
    headers up to the blank line."""
    parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        shown = status_line[:80].decode("latin-1", errors="replace")
        raise WireError("protocol_error", f"not an HTTP/1.x status line: {shown!r}")
    headers = Headers()
    size = len(status_line)
    while True:
        line = await read_line(reader)
        size += len(line)
        if size > HEADER_LIMIT_BYTES:
            raise WireError("protocol_error", "response headers over 64 KiB")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise WireError("protocol_error", f"malformed header line: {text[:80]!r}")
        headers.add(name, value.strip())
    return Head(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


class Body:
    """A response body, read piece by piece as it arrives, framed as its head says.

    :meth:`read` returns whatever part of the body has arrived (never more than
    :data:`READ_BYTES`) as soon as any has, and ``b""`` once the body is complete: a streamed
    answer's pieces can be timed as they come. :attr:`done` is True only for a body read to
    its framed end, so only then may the connection carry another request.
    """

    def __init__(self, reader: asyncio.StreamReader, head: Head, method: str) -> None:
        self._reader = reader
        self.done = False
        self.bytes_read = 0
        self._chunked = False
        self._after_chunk = False
        self._left: int | None = None
        """Bytes left of the body (Content-Length) or of the current chunk; None: to the end."""
        status, headers = head.status, head.headers
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self.done = True
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked, self._left = True, 0
        elif "content-length" in headers:
            raw = headers["content-length"]
            if not raw.strip().isdigit():
                raise WireError("protocol_error", f"bad Content-Length {raw!r}")
            self._left = int(raw)
            self.done = self._left == 0

    @property
    def to_eof(self) -> bool:
        """Whether the body runs to the end of the stream (no connection reuse after it)."""
        return not self._chunked and self._left is None

    async def read(self) -> bytes:
        """The next piece of the body, ``b""`` at its end.

        Raises:
            asyncio.IncompleteReadError: the stream ended before the framing said it would.
            WireError: a malformed chunk size line.
            OSError: the connection was reset.
        """
        if self.done:
            return b""
        if self._chunked and self._left == 0 and not await self._next_chunk():
            self.done = True
            return b""
        want = READ_BYTES if self._left is None else min(self._left, READ_BYTES)
        piece = await self._reader.read(want)
        if not piece:
            if self._left is None:  # to the end of the stream: this is the end
                self.done = True
                return b""
            raise asyncio.IncompleteReadError(b"", self._left)
        self.bytes_read += len(piece)
        if self._left is not None:
            self._left -= len(piece)
            if self._left == 0 and not self._chunked:
                self.done = True
        return piece

    async def _next_chunk(self) -> bool:
        """Read up to the next chunk's data; False at the last (zero-size) chunk."""
        if self._after_chunk:
            await self._reader.readexactly(2)  # the CRLF that ends the previous chunk
        line = await read_line(self._reader)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise WireError("protocol_error", f"bad chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise WireError("protocol_error", f"bad chunk size {size_text[:20]!r}")
        if size == 0:
            while (await read_line(self._reader)).strip():  # trailers, up to the blank line
                pass
            return False
        self._left, self._after_chunk = size, True
        return True
