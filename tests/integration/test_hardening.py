"""Hostile input and a hostile environment, against a real agent process (issue 17)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers import running_agent, write_config

pytestmark = pytest.mark.integration


def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` (a request's bytes, sent as they are) and read the whole answer."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body


def test_non_utf8_bytes_in_the_authorization_header_are_a_401(tmp_path: Path) -> None:
    # Such a header used to crash the token check: an unauthenticated 500 and a traceback
    # logged for every request, which anyone who reaches the port could repeat.
    with running_agent(write_config(tmp_path)) as agent:
        for token in (b"\xff\xfe\xfd", agent.token.encode() + b"\xff", b"\xc3\xa9t\xc3\xa9"):
            head = (
                b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\n"
                b"Authorization: Bearer " + token + b"\r\nConnection: close\r\n\r\n"
            )
            status, body = raw_request(agent.url, head)
            assert status == 401, body
            assert json.loads(body) == {"error": "token rejected"}
        assert agent.get("/api/v1/status")[0] == 200  # still serving
        log = agent.log()
        assert "Traceback" not in log and "UnicodeEncodeError" not in log, log
