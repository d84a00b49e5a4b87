"""A model server stand-in that counts the requests on the wire at once, with a delay knob.

Run it by path or as a module (``python -S tests/fakes/counting_server.py --port 0``); it
imports nothing from Vigil and only the standard library, so it starts in tens of
milliseconds. It prints ``listening on http://127.0.0.1:PORT`` once it listens.

Every request but the ``/_`` ones is a model request: it is answered ``200 {"ok": true}``
after the current delay, each on its own thread, so two requests sent at once are served at
once and counted so (a one-at-a-time server would queue the second and never see them
overlap).

- ``--delay-ms D``: answer each model request after D ms (``POST /_control`` changes it:
  ``{"delay_ms": 600}``; a request already being served keeps the delay it started with).
- ``--loading-s S``: for the first S seconds after it listens, answer ``503 loading`` (after
  the delay): a server still loading its weights, slow to say so.
- ``GET /_stats``: ``{"requests", "inflight", "max_inflight"}`` over the model requests, a
  request in flight from its arrival until its answer is about to be written.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Counter:
    """Model requests in flight now, the most ever at once, and how many so far."""

    def __init__(self, delay_ms: float, loading_s: float) -> None:
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.requests = 0
        self.delay_ms = delay_ms
        self.loading_until = time.monotonic() + loading_s

    def enter(self) -> float:
        with self.lock:
            self.inflight += 1
            self.requests += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            return self.delay_ms

    def leave(self) -> None:
        with self.lock:
            self.inflight -= 1

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {
                "requests": self.requests,
                "inflight": self.inflight,
                "max_inflight": self.max_inflight,
            }


class Handler(BaseHTTPRequestHandler):
    """Model requests (counted, delayed) and the ``/_stats`` and ``/_control`` endpoints."""

    server: Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the agent under test probes this every second

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _model(self) -> None:
        counter = self.server.counter
        delay_ms = counter.enter()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            time.sleep(delay_ms / 1000)
            loading = time.monotonic() < counter.loading_until
        finally:
            # Out of flight before the answer leaves: a client that waits for it before
            # sending its next request can then never be counted twice, however late this
            # thread runs again after writing.
            counter.leave()
        if loading:
            self._send(503, {"error": "loading model"})
        else:
            self._send(200, {"ok": True})

    def do_GET(self) -> None:
        if self.path == "/_stats":
            self._send(200, self.server.counter.stats())
        else:
            self._model()

    def do_POST(self) -> None:
        if self.path == "/_control":
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with self.server.counter.lock:
                self.server.counter.delay_ms = float(body["delay_ms"])
            self._send(200, {"delay_ms": self.server.counter.delay_ms})
        else:
            self._model()


class Server(ThreadingHTTPServer):
    """One thread per connection; ``counter`` is shared by them."""

    daemon_threads = True
    allow_reuse_address = True
    counter: Counter


def main() -> None:
    """Command line: serve until killed."""
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--loading-s", type=float, default=0.0)
    args = p.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.counter = Counter(args.delay_ms, args.loading_s)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
