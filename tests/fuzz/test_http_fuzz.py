"""The agent's HTTP/1.1 server: valid requests with one part of the request line or headers
mutated, through ``parse_head`` alone and then over a socket to a real agent.

``parse_head`` documents one outcome for a bad head: ``_Refused`` with the status to answer
(400, 411, 413, 414, 431, 505). Over the socket, every request gets an answer within the
deadline (never a silently closed connection), never a 500, and every refusal is
``{"error": "..."}``. Line endings inside the head are mutated, but the head always ends with
CRLF CRLF and a valid Content-Length is always followed by that many bytes: a client that
stops sending is the header and body timeouts' business (tests/unit/test_httpserver.py), and
would only make this test wait for them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.serve.httpserver import Limits, _Head, _Refused, parse_head
from tests.fuzz.httpraw import exchange
from tests.fuzz.mutate import CONTROL, NUMERIC_TEXT
from tests.fuzz.support import EXAMPLE_DEADLINE_S, budget, deadline, outcome
from tests.helpers import RunningAgent

SILENCE = b'{"matchers": ["model=m1"], "duration": "1h", "comment": "fuzz"}'

SEEDS: list[tuple[str, str, str, list[tuple[str, str]], bytes]] = [
    ("GET", "/api/v1/status", "HTTP/1.1", [("Accept", "application/json")], b""),
    ("GET", "/healthz", "HTTP/1.0", [("Connection", "keep-alive")], b""),
    ("HEAD", "/api/v1/models", "HTTP/1.1", [], b""),
    ("GET", "/api/v1/events?limit=5&kind=agent.started", "HTTP/1.1", [], b""),
    ("GET", "/api/v1/series?name=host.cpu.percent&labels=%7B%7D", "HTTP/1.1", [], b""),
    ("POST", "/api/v1/silences", "HTTP/1.1", [("Content-Type", "application/json")], SILENCE),
    ("POST", "/api/v1/silences", "HTTP/1.1", [("Expect", "100-continue")], SILENCE),
    ("DELETE", "/api/v1/silences/abc", "HTTP/1.1", [], b""),
]

METHODS = ["get", "", "G T", "GET\x00", "PATCH", "OPTIONS", "BREW", "X" * 10_000, "GET\t"]
TARGETS = [
    "*",
    "api/v1/status",
    "http://127.0.0.1/api/v1/status?x=1",
    "https://h",
    "/api/v1/../v1/status",
    "//api//v1//status",
    "/%zz",
    "/%00",
    "/api/v1/processes/%FF%FE/logs",
    "/\u00e9",
    "/" + "a" * 9000,
    "/api/v1/series?labels=" + "%5B" * 2000 + "&name=x",
    "/api/v1/events?limit=" + "9" * 5000,
    "/api/v1/status#frag",
    "/api/v1/status?%",
    "/api/v1/events?since=%C2%B2",
]
VERSIONS = ["HTTP/2.0", "HTTP/1.1 ", "http/1.1", "HTTP/1", "HTTP/9.9", "", "HTTP/1.1\x00"]
NAMES = ["", "Bad Name", "X\x00", "Host:", "Content-Length ", "\u00e9", "X" * 10_000]
VALUES = ["", "\xff\xfe", "\x00", "a\rb", " leading", "x" * 40_000, *CONTROL, *NUMERIC_TEXT]
MUTATIONS = [
    "none",
    "method",
    "target",
    "version",
    "name",
    "value",
    "length",
    "framing",
    "drop",
    "duplicate",
    "many",
    "eol",
    "fold",
    "bytes",
]
LENGTHS = ["\u00b2", "-1", "1,2", "5, 5", "", " 0", "0x10", "1e3", "+5", *NUMERIC_TEXT]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(what was mutated, the request's bytes, its method as sent)."""
    method, target, version, headers, body = draw(st.sampled_from(SEEDS))
    headers = [("Host", "127.0.0.1"), ("Connection", "close"), *headers]
    kind = draw(st.sampled_from(MUTATIONS))
    length: str | None = str(len(body)) if body else None
    odd_eol: tuple[int, str] | None = None
    if kind == "method":
        method = draw(st.sampled_from(METHODS))
    elif kind == "target":
        target = draw(st.sampled_from(TARGETS))
    elif kind == "version":
        version = draw(st.sampled_from(VERSIONS))
    elif kind in ("name", "value", "drop", "duplicate"):
        i = draw(st.integers(0, len(headers) - 1))
        name, value = headers[i]
        if kind == "name":
            headers[i] = (draw(st.sampled_from(NAMES)), value)
        elif kind == "value":
            headers[i] = (name, draw(st.sampled_from(VALUES)))
        elif kind == "drop":
            del headers[i]
        else:
            headers.insert(i, (name, value + "x"))
    elif kind == "length":
        length = draw(st.sampled_from(LENGTHS))
    elif kind == "framing":
        headers.append(
            draw(
                st.sampled_from(
                    [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "gzip, chunked")]
                )
            )
        )
    elif kind == "many":
        headers += [(f"X-{i}", "y") for i in range(draw(st.sampled_from([99, 101, 500])))]
    elif kind == "eol":
        odd_eol = (
            draw(st.integers(0, len(headers))),
            draw(st.sampled_from(["\n", "\r", "\r\r\n"])),
        )
    elif kind == "fold":
        headers.append((" folded", "continuation"))
    if length is not None:
        headers.append(("Content-Length", length))
    lines = [
        f"{method} {target} {version}",
        *(f"{n}: {v}" if n.strip() or v else n for n, v in headers),
    ]
    if kind == "fold":
        lines[-2 if length is not None else -1] = " folded continuation"
    eol = ["\r\n"] * len(lines)
    if odd_eol is not None:
        # Never the last line's: the head must still end with CRLF CRLF (see the module docs).
        eol[min(odd_eol[0], len(lines) - 2)] = odd_eol[1]
    head = "".join(line + eol[i] for i, line in enumerate(lines)) + "\r\n"
    # Latin-1 where it can be (the server decodes the head so: U+00B2 arrives as one byte,
    # 0xB2, and reads as "²"), UTF-8 for the rest.
    try:
        raw = head.encode("latin-1")
    except UnicodeEncodeError:
        raw = head.encode("utf-8", "surrogateescape")
    if kind == "bytes":
        # A byte that no text has (the server decodes the head as latin-1), in the request
        # line, so the head still ends with CRLF CRLF.
        at = draw(st.integers(1, raw.index(b"\r\n")))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\x80", b"\x00", b"\xb2"])) + raw[at:]
    # A list of one length ("5, 5") is that length (RFC 9110 8.6), as the server reads it.
    values = {v.strip() for v in (length or "").split(",")}
    declared = values.pop() if len(values) == 1 else ""
    small = declared.isascii() and declared.isdigit() and len(declared) < 10
    if small and int(declared) <= Limits().max_body_bytes:
        body = body.ljust(int(declared), b"x")[: int(declared)]
    elif length is not None and length != str(len(body)):
        body = b""  # refused before any body is read
    return kind, raw + body, method


def _parse(raw: bytes) -> Any:
    head = raw[: raw.index(b"\r\n\r\n") + 4] if b"\r\n\r\n" in raw else raw + b"\r\n\r\n"
    return parse_head(head, Limits(), "127.0.0.1")


@budget(ci=300, fuzz=30_000)
@given(request=requests())
def test_parse_head_refuses_with_a_status_or_parses(request: tuple[str, bytes, str]) -> None:
    kind, raw, _ = request
    with deadline(f"parse_head of {raw[:300]!r}"):
        try:
            head = _parse(raw)
        except _Refused as exc:
            assert exc.status in (400, 411, 413, 414, 431, 505), exc.status
            outcome("http head", f"refused {exc.status}")
            return
    assert isinstance(head, _Head)
    assert 0 <= head.length <= Limits().max_body_bytes
    assert head.request.raw_path.startswith("/")
    outcome("http head", "accepted")


@pytest.mark.integration
@budget(ci=150, fuzz=5_000)
@given(request=requests())
def test_the_server_answers_every_request(
    agent: RunningAgent, request: tuple[str, bytes, str]
) -> None:
    kind, raw, method = request
    token = f"Bearer {agent.token}".encode()
    raw = raw.replace(b"\r\nHost: ", b"\r\nAuthorization: " + token + b"\r\nHost: ", 1)
    split = urlsplit(agent.url)
    assert split.hostname is not None and split.port is not None
    what = f"{kind}: {raw[:300]!r}"
    with deadline(what, EXAMPLE_DEADLINE_S + 5):
        answer = exchange(
            (split.hostname, split.port), raw, EXAMPLE_DEADLINE_S, head=method == "HEAD"
        )
    assert answer.status != 500, f"{what}: {answer.body[:300]!r}"
    assert answer.status < 500 or answer.status in (503, 505), f"{what}: {answer.status}"
    if answer.status >= 400 and method != "HEAD":
        doc = answer.json()
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str), answer.body[:300]
    outcome("http server", "accepted" if answer.status < 400 else f"refused {answer.status}")


@pytest.mark.integration
def test_zz_the_agent_logged_no_failed_connection(agent: RunningAgent) -> None:
    """After the fuzz test (file order): a connection that failed was logged, and may have
    gone unanswered."""
    log = agent.log()
    for sign in ("Traceback", "request failed", "connection failed"):
        assert sign not in log, log[log.find(sign) - 2000 : log.find(sign) + 3000]
