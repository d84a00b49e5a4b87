"""A raw HTTP/1.1 exchange over a socket: the request exactly as given (bytes no client library
would send: non-UTF-8 header values, malformed lines), the answer parsed leniently.

One connection per request, closed by the server (``Connection: close``) or at the end of the
answer's declared length; a server that neither answers nor closes within ``timeout_s`` is a
:class:`NoAnswer`, which the fuzz tests report as a hang.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any


class NoAnswer(AssertionError):
    """The server closed without an answer, or sent none in time."""


@dataclass
class Answer:
    """What came back: the status, the headers (names lower-cased) and the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    address: tuple[str, int], request: bytes, timeout_s: float = 10.0, *, head: bool = False
) -> Answer:
    """Send ``request`` and read one answer (the connection is closed after it); ``head``: the
    request was a HEAD, whose answer has no body whatever its Content-Length says."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection(address, timeout=timeout_s) as sock:
        # The server may answer (413, 400) and close before reading everything.
        with contextlib.suppress(OSError):
            sock.sendall(request)
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoAnswer(f"no complete answer within {timeout_s:g}s, got {data[:300]!r}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise NoAnswer(
                    f"no complete answer within {timeout_s:g}s, got {data[:300]!r}"
                ) from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            data += chunk
            answer = _parse(data, complete=False, no_body=head)
            if answer is not None:
                return answer
    answer = _parse(data, complete=True, no_body=head)
    if answer is None:
        raise NoAnswer(f"the connection closed without an answer, got {data[:300]!r}")
    return answer


def _parse(data: bytes, *, complete: bool, no_body: bool = False) -> Answer | None:
    """The answer in ``data`` when it is all there (``complete``: the peer closed)."""
    while data.startswith(b"HTTP/1.1 100 "):  # Expect: 100-continue's interim answer
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        data = data[end + 4 :]
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise NoAnswer(f"not an HTTP answer: {data[:300]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if no_body:
        body = b""
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if len(body) < length:
            return None
        body = body[:length]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        decoded = _dechunk(body)
        if decoded is None:
            return None
        body = decoded
    elif not complete:
        return None
    return Answer(int(parts[1]), headers, body)


def _dechunk(body: bytes) -> bytes | None:
    out = b""
    while True:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            return None
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        if len(rest) < size + 2:
            return None
        out += rest[:size]
        body = rest[size + 2 :]
