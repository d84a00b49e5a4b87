"""The TCP probe: can a port be connected to, and how fast?

Protocol ``tcp``; the target URL is ``tcp://host:port`` (IPv6 as ``tcp://[::1]:port``). One run
opens a connection with ``asyncio.open_connection`` and closes it at once; ``e2e_ms`` and
``phases_ms["connect"]`` are the connect time. Any connect failure (refused, unreachable, a
name that does not resolve) is ``refused``. Option: ``max_latency``, a duration such as
``"50ms"`` (a slower connect is ``slow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

from probes.base import Probe, now_ms, register
from probes.common import duration_ms, elapsed_ms, make_run, over_bound
from probes.httpclient import HttpClient
from probes.options import MaxDuration, Options, schema_for
from storage.records import ProbeRun


def parse_tcp_url(url: str) -> tuple[str, int]:
    """Split ``tcp://host:port`` into host and port.

    Raises:
        ValueError: for another scheme, or a missing host or port.
    """
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:  # .port may raise too
        raise ValueError(f"expected tcp://host:port, got {url!r}")
    return parts.hostname, parts.port


@register
class TcpProbe(Probe):
    """Measures how long a TCP connect to the target takes."""

    protocol = "tcp"
    allowed_options = frozenset({"max_latency"})
    options_schema = schema_for("tcp", Options, {"max_latency": MaxDuration})

    async def run(self, session: HttpClient) -> ProbeRun:
        """Connect once and close; never raises. ``session`` is unused (no HTTP here)."""
        ts = now_ms()
        try:
            host, port = parse_tcp_url(self.target.url)
        except ValueError as exc:
            return make_run(self.target, "protocol_error", ts_ms=ts, error=str(exc))
        start = time.perf_counter_ns()
        try:
            async with asyncio.timeout(self.target.timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return make_run(
                self.target,
                "timeout",
                ts_ms=ts,
                e2e_ms=elapsed_ms(start),
                error=f"no connection to {host}:{port} in {self.target.timeout_s} s",
            )
        except OSError as exc:  # refused, unreachable, DNS failures (gaierror is an OSError)
            return make_run(
                self.target, "refused", ts_ms=ts, error=f"cannot connect to {host}:{port}: {exc}"
            )
        connect = elapsed_ms(start)
        writer.close()
        # The peer may reset on close; the connect already answered the question.
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        slow = over_bound(connect, duration_ms(self.target.options, "max_latency"), "max_latency")
        return make_run(
            self.target,
            "slow" if slow else "ok",
            ts_ms=ts,
            e2e_ms=connect,
            phases_ms={"connect": connect},
            error=slow,
        )
