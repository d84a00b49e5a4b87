"""One HTTP/1.1 request on a fresh connection, timed phase by phase as blackbox_exporter does.

The ``http`` probe answers "can a client reach this endpoint now, and where does the time
go": DNS resolution, TCP connect, TLS handshake, processing (request written to the first
byte of the answer) and transfer (first byte to the end of the body). A pooled client hides
exactly those costs (a kept-alive connection skips the connect and the handshake), and
aiohttp times the connect and the handshake as one step, so this module speaks the little
HTTP/1.1 a probe needs itself, on asyncio streams: one request, ``Connection: close``, a body
read by Content-Length, chunked encoding or to the end of the stream. No redirects, no
proxies, no keep-alive: one probe, one connection, torn down after.

Errors are :class:`WireError` with the run category they mean (``refused``,
``protocol_error``) and the phase they happened in; the caller's deadline scope turns a hang
into ``TimeoutError``, and :attr:`Exchange.phase` says which phase it hung in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

BODY_KEEP_BYTES = 1 << 20
"""Body bytes kept for the checks; the rest is read (transfer is timed to the end) and
dropped, so a huge answer cannot bloat the agent."""
HEADER_LIMIT_BYTES = 64 * 1024
PHASES = ("resolve", "connect", "tls", "processing", "transfer")


class WireError(Exception):
    """The exchange failed; ``category`` is the probe run category it means."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


@dataclass
class Response:
    """What came back: status, headers (lower-case names) and the first bytes of the body."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    body_bytes: int
    """The whole body's size, also what was read past :data:`BODY_KEEP_BYTES`."""


@dataclass
class Exchange:
    """One request's phases, in milliseconds, filled in as they finish."""

    phases_ms: dict[str, float] = field(default_factory=dict)
    phase: str = "resolve"
    """The phase in progress (the one a timeout interrupted)."""
    _mark: int = field(default_factory=time.perf_counter_ns)

    def done(self, phase: str, next_phase: str) -> None:
        now = time.perf_counter_ns()
        self.phases_ms[f"{phase}_ms"] = (now - self._mark) / 1e6
        self._mark, self.phase = now, next_phase


def tls_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The context for https targets: the system's trust store, or ``ca_file``'s; with
    ``insecure`` no verification at all (self-signed endpoints, on purpose only)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    tls: ssl.SSLContext | None = None,
    exchange: Exchange | None = None,
) -> Response:
    """Send one request on a new connection and read the whole answer.

    Raises:
        WireError: cannot resolve or connect (``refused``), TLS or HTTP went wrong
            (``protocol_error``).
        TimeoutError: only from the caller's own timeout scope.
    """
    ex = exchange or Exchange()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WireError("protocol_error", f"expected an http:// or https:// URL, got {url!r}")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    addresses = await _resolve(host, port)
    ex.done("resolve", "connect")
    reader, writer = await _connect(addresses, host, port)
    try:
        ex.done("connect", "tls" if parts.scheme == "https" else "processing")
        if parts.scheme == "https":
            try:
                await writer.start_tls(tls or tls_context(), server_hostname=host)
            except ssl.SSLError as exc:
                raise WireError("protocol_error", f"TLS handshake failed: {exc}") from None
            ex.done("tls", "processing")
        default_port = port == (443 if parts.scheme == "https" else 80)
        head = {
            "Host": host if default_port else f"{_host_header(host)}:{port}",
            "User-Agent": "vigil-probe",
            "Accept": "*/*",
            "Connection": "close",
        }
        for name, value in (headers or {}).items():
            head = {k: v for k, v in head.items() if k.lower() != name.lower()}
            head[name] = value
        if body is not None:
            head["Content-Length"] = str(len(body))
        lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
        for line in lines:
            if "\r" in line or "\n" in line:
                raise WireError("protocol_error", "a header holds a line break")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        status_line = await _line(reader)
        ex.done("processing", "transfer")
        response = await _read_response(reader, status_line, method)
        ex.done("transfer", "done")
        return response
    except (OSError, asyncio.IncompleteReadError) as exc:  # resets, and TLS errors mid-stream
        raise WireError(
            "protocol_error", f"connection lost during {ex.phase}: {exc or type(exc).__name__}"
        ) from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            # Bounded: a TLS peer that never answers close_notify must not hold the probe.
            await asyncio.wait_for(writer.wait_closed(), 0.5)


def _host_header(host: str) -> str:
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host


async def _resolve(host: str, port: int) -> list[tuple[int, str]]:
    """(family, address) pairs, an IP literal without asking DNS."""
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


async def _connect(
    addresses: list[tuple[int, str]], host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The first address that accepts, in resolver order (no happy eyeballs: a probe wants
    the plain answer "does the first address work", and reports which one failed)."""
    errors: list[str] = []
    for _, address in addresses:
        try:
            return await asyncio.open_connection(address, port, limit=HEADER_LIMIT_BYTES)
        except OSError as exc:
            errors.append(f"{address}: {exc.strerror or exc}")
    raise WireError("refused", f"cannot connect to {host}:{port}: " + "; ".join(errors))


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise WireError("protocol_error", "a response line is over 64 KiB") from None


async def _read_response(reader: asyncio.StreamReader, status_line: bytes, method: str) -> Response:
    parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        shown = status_line[:80].decode("latin-1", errors="replace")
        raise WireError("protocol_error", f"not an HTTP/1.x status line: {shown!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    size = len(status_line)
    while True:
        line = await _line(reader)
        size += len(line)
        if size > HEADER_LIMIT_BYTES:
            raise WireError("protocol_error", "response headers over 64 KiB")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, sep, value = text.partition(":")
        if not sep:
            raise WireError("protocol_error", f"malformed header line: {text[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    keep = bytearray()
    total = 0

    def take(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        room = BODY_KEEP_BYTES - len(keep)
        if room > 0:
            keep.extend(chunk[:room])

    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        pass
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        await _read_chunked(reader, take)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise WireError(
                "protocol_error", f"bad Content-Length {headers['content-length']!r}"
            ) from None
        while length > 0:
            chunk = await reader.readexactly(min(length, 65536))
            take(chunk)
            length -= len(chunk)
    else:
        while chunk := await reader.read(65536):
            take(chunk)
    return Response(status, parts[2] if len(parts) > 2 else "", headers, bytes(keep), total)


async def _read_chunked(reader: asyncio.StreamReader, take: Callable[[bytes], None]) -> None:
    while True:
        line = (await _line(reader)).split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            raise WireError("protocol_error", f"bad chunk size {line[:20]!r}") from None
        if size == 0:
            while (await _line(reader)).strip():  # trailers, up to the blank line
                pass
            return
        while size > 0:
            chunk = await reader.readexactly(min(size, 65536))
            take(chunk)
            size -= len(chunk)
        await reader.readexactly(2)  # the CRLF after the chunk
