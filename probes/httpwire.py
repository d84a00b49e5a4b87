"""One HTTP/1.1 request on a fresh connection, timed phase by phase as blackbox_exporter does.

The ``http`` probe answers "can a client reach this endpoint now, and where does the time
go": DNS resolution, TCP connect, TLS handshake, processing (request written to the first
byte of the answer) and transfer (first byte to the end of the body). A pooled client hides
exactly those costs (a kept-alive connection skips the connect and the handshake), and
aiohttp times the connect and the handshake as one step, so this module speaks the little
HTTP/1.1 a probe needs itself, on asyncio streams: one request, ``Connection: close``, a body
read by Content-Length, chunked encoding or to the end of the stream. No redirects, no
proxies, no keep-alive: one probe, one connection, torn down after.

The wire format itself (URL, head, body framing) is :mod:`probes.http1`, shared with the pooled
client. Errors are :class:`WireError` with the run category they mean (``refused``,
``protocol_error``) and the phase they happened in; the caller's deadline scope turns a hang
into ``TimeoutError``, and :attr:`Exchange.phase` says which phase it hung in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field

from probes.http1 import (
    HEADER_LIMIT_BYTES,
    Body,
    Headers,
    WireError,
    connect,
    merge_headers,
    read_head,
    read_line,
    request_head,
    resolve,
    split_url,
)

__all__ = [
    "BODY_KEEP_BYTES",
    "HEADER_LIMIT_BYTES",
    "PHASES",
    "Exchange",
    "Response",
    "WireError",
    "request",
    "tls_context",
]

BODY_KEEP_BYTES = 1 << 20
"""Body bytes kept for the checks; the rest is read (transfer is timed to the end) and
dropped, so a huge answer cannot bloat the agent."""
PHASES = ("resolve", "connect", "tls", "processing", "transfer")


@dataclass
class Response:
    """What came back: status, headers (names case-insensitive) and the body's first bytes."""

    status: int
    reason: str
    headers: Headers
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
    where = split_url(url)
    addresses = await resolve(where.host, where.port)
    ex.done("resolve", "connect")
    reader, writer = await connect(addresses, where.host, where.port)
    try:
        ex.done("connect", "tls" if where.tls else "processing")
        if where.tls:
            try:
                await writer.start_tls(tls or tls_context(), server_hostname=where.host)
            except ssl.SSLError as exc:
                raise WireError("protocol_error", f"TLS handshake failed: {exc}") from None
            ex.done("tls", "processing")
        default = {
            "Host": where.host_header(),
            "User-Agent": "vigil-probe",
            "Accept": "*/*",
            "Connection": "close",
        }
        head = merge_headers(default, headers or {})
        if body is not None:
            head["Content-Length"] = str(len(body))
        writer.write(request_head(method, where.target, head) + (body or b""))
        await writer.drain()
        status_line = await read_line(reader)
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


async def _read_response(reader: asyncio.StreamReader, status_line: bytes, method: str) -> Response:
    head = await read_head(reader, status_line)
    body = Body(reader, head, method)
    keep = bytearray()
    while piece := await body.read():
        room = BODY_KEEP_BYTES - len(keep)
        if room > 0:
            keep.extend(piece[:room])
    return Response(head.status, head.reason, head.headers, bytes(keep), body.bytes_read)
