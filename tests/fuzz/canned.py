"""A loopback HTTP server answering each path with canned bytes, for running real probes against
fuzzed answers; and the check that a probe's run can be stored.

The server runs in a thread of the test process: each example sets :attr:`CannedServer.routes`
(path -> status, content type, body, and where to cut the body into chunks) and runs the probe
with its real :class:`probes.httpclient.HttpClient`. Bodies go out with chunked transfer
encoding, one chunk per cut, so the stream parsers get them split at the fuzzed places, as a
server writing token by token would send them. Every answer closes its connection.
"""

from __future__ import annotations

import itertools
import json
import socket
import sqlite3
import threading
from dataclasses import dataclass, field

from storage.records import ProbeRun


@dataclass
class Canned:
    """One path's answer."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    cuts: list[int] = field(default_factory=list)


class CannedServer:
    """A thread serving :attr:`routes` on 127.0.0.1 (an unknown path is a 404)."""

    def __init__(self) -> None:
        self.routes: dict[str, Canned] = {}
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                canned = self.routes.get(path, Canned(b'{"error": "no such path"}', 404))
                conn.sendall(
                    f"HTTP/1.1 {canned.status} X\r\nContent-Type: {canned.content_type}\r\n"
                    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
                )
                body = canned.body
                bounds = [0, *sorted(min(max(c, 0), len(body)) for c in canned.cuts), len(body)]
                for a, b in itertools.pairwise(bounds):
                    if b > a:
                        conn.sendall(f"{b - a:x}\r\n".encode() + body[a:b] + b"\r\n")
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the probe gave up (its deadline) or closed early: nothing to answer


def check_storable(run: ProbeRun) -> None:
    """Insert ``run`` as :class:`storage.writer.Writer` does, into an in-memory table: a value
    SQLite cannot hold (an integer over 64 bits) raises there as it would in the writer."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(
            "CREATE TABLE probe_runs (ts, model, ok, category, status, error, ttft_ms, itl_ms, "
            "e2e_ms, output_tokens, tokens_per_s, phases, end_ts, planned)"
        )
        conn.execute(
            "INSERT INTO probe_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.ts_ms,
                run.model,
                int(run.ok),
                run.category,
                run.status,
                run.error,
                run.ttft_ms,
                run.itl_ms,
                run.e2e_ms,
                run.output_tokens,
                run.tokens_per_s,
                json.dumps(dict(run.phases_ms), sort_keys=True),
                run.end_ms,
                int(run.planned),
            ),
        )
    finally:
        conn.close()
