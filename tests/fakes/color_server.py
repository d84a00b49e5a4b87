"""A model copy stand-in for blue-green tests: answers every request with its colour.

Run it by path (``python -S tests/fakes/color_server.py --color blue --port 0``); it imports only
the standard library, so it starts in tens of milliseconds, and prints ``listening on
http://127.0.0.1:PORT`` once it listens. HTTP/1.1 with keep-alive (a proxy keeps a pool of
connections to it); each connection on its own thread.

- every ``GET`` answers ``200`` with the colour as the body and in ``X-Color``;
- ``?delay_ms=D`` answers after D ms: a long request (a streamed generation) in flight while
  the traffic is switched away.
"""

from __future__ import annotations

import argparse
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the proxy's
    # delayed ACK (40 ms a request).
    disable_nagle_algorithm = True
    color = "none"

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        delay_ms = float(query.get("delay_ms", ["0"])[0])
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        body = self.color.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Color", self.color)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--color", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    Handler.color = args.color
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
