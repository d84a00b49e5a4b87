"""The agent's HTTP API: valid requests with one part mutated (a path parameter, a query
parameter, a JSON body field, a header), sent to a real agent process over loopback.

Property: every answer comes within the deadline, is never a 500 (nor any 5xx but a 503 that
says why), and every 4xx or 5xx is ``{"error": "..."}``. A bad request is the client's
fault, answered as such; a handler that raises is the server's. The agent's log must not show a
failed request or connection either (the server logs those with a traceback).

The agent is tests/fuzz/conftest.py's ``agent``. Requests carry the operate token, except where
the mutation hits the ``Authorization`` header.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.httpraw import Answer, exchange
from tests.fuzz.mutate import DEEP, json_bytes, json_text, mutate
from tests.fuzz.support import EXAMPLE_DEADLINE_S, budget, deadline, outcome
from tests.helpers import RunningAgent

pytestmark = pytest.mark.integration

# method, path pattern, path parameters, query, JSON body (None: no body)
ROUTES: list[tuple[str, str, dict[str, str], dict[str, str], Any]] = [
    ("GET", "/healthz", {}, {}, None),
    ("GET", "/api/v1/status", {}, {}, None),
    ("GET", "/api/v1/whoami", {}, {}, None),
    ("GET", "/api/v1/models", {}, {}, None),
    ("GET", "/api/v1/processes", {}, {}, None),
    ("GET", "/api/v1/processes/{name}/logs", {"name": "sleeper"}, {"lines": "20"}, None),
    (
        "GET",
        "/api/v1/series",
        {},
        {
            "name": "host.cpu.percent",
            "labels": '{"core": "0"}',
            "since": "-5m",
            "until": "now",
            "step": "10s",
        },
        None,
    ),
    (
        "GET",
        "/api/v1/events",
        {},
        {"limit": "10", "kind": "agent.started", "subject": "agent", "since": "-1h"},
        None,
    ),
    ("GET", "/api/v1/probe_runs", {}, {"model": "m1", "limit": "5"}, None),
    ("GET", "/api/v1/report", {}, {"format": "json", "since": "1h"}, None),
    ("GET", "/api/v1/incidents", {}, {"state": "open", "limit": "10", "subject": "model:m1"}, None),
    ("POST", "/api/v1/incidents/{id}/{action}", {"id": "1", "action": "acknowledge"}, {}, None),
    ("POST", "/api/v1/processes/{name}/{action}", {"name": "sleeper", "action": "stop"}, {}, None),
    ("GET", "/api/v1/alerts", {}, {"state": "firing", "since": "-1h"}, None),
    ("GET", "/api/v1/silences", {}, {"state": "active"}, None),
    (
        "POST",
        "/api/v1/silences",
        {},
        {},
        {"matchers": ["model=m1", "severity=~crit.*"], "duration": "2h", "comment": "fuzz"},
    ),
    ("DELETE", "/api/v1/silences/{id}", {"id": "0123abcd"}, {}, None),
    ("GET", "/api/v1/deliveries", {}, {"state": "pending", "limit": "10", "channel": "hook"}, None),
    ("POST", "/api/v1/notify/{channel}/test", {"channel": "hook"}, {}, None),
    ("POST", "/api/v1/models/{name}/probe", {"name": "m1"}, {}, None),
    ("POST", "/api/v1/models/{name}/canary", {"name": "m1"}, {}, {"count": 2}),
    ("GET", "/api/v1/config", {}, {}, None),
    ("GET", "/metrics", {}, {}, None),
    (
        "POST",
        "/api/v1/models/{name}/deploy",
        {"name": "m1"},
        {},
        {
            "artifact": "/srv/models/no-such-version",
            "strategy": "in-place",
            "bake": "10m",
            "actor": "ci",
            "pipeline_id": "42",
            "git_sha": "abc123",
            "notes": "fuzz",
        },
    ),
    ("POST", "/api/v1/models/{name}/rollback", {"name": "m1"}, {}, {"to": "abc", "bake": 60}),
    ("POST", "/api/v1/models/{name}/record", {"name": "m1"}, {}, {"version_hash": "abc"}),
    ("GET", "/api/v1/models/{name}/versions", {"name": "m1"}, {}, None),
    ("GET", "/api/v1/deployments", {}, {"model": "m1", "limit": "10"}, None),
    ("GET", "/api/v1/deployments/kpi", {}, {"model": "m1", "since": "30d"}, None),
    ("GET", "/api/v1/deployments/{id}", {"id": "1"}, {}, None),
    ("POST", "/api/v1/deployments/{id}/approve", {"id": "1"}, {}, None),
]

RAW_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"text"',
    b"\xff\xfe{}",
    b"1e999",
    b'{"count": 1e999, "duration": 1e999, "bake": -1e999}',
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b'{"matchers": ["model=~a{99999999999}"], "duration": "1h", "comment": "x"}',
    b'{"matchers": ["model=~' + b"(" * 2000 + b'"], "duration": "1h", "comment": "x"}',
    b'{"count": 99999999999999999999999999}',
    b'{"duration": 99999999999999999999999999, "matchers": ["a=b"], "comment": "c"}',
]


def _text(value: Any) -> str:
    return value if isinstance(value, str) and value != DEEP else json_text(value)


def build(agent: RunningAgent, request: dict[str, Any], raw_body: bytes | None) -> bytes:
    """The request's bytes: the route's path with its (maybe mutated) parameters, the query,
    the headers and the body."""
    params = request["params"] if isinstance(request["params"], dict) else {}
    path = request["path"]
    for name in ("name", "id", "action", "channel"):
        path = path.replace("{" + name + "}", quote(_text(params.get(name, "")), safe=""))
    query = request["query"]
    if isinstance(query, dict):
        qs = urlencode({_text(k): _text(v) for k, v in query.items()}, quote_via=quote)
    else:
        qs = quote(_text(query), safe="=&")
    target = path + (f"?{qs}" if qs else "")
    if raw_body is not None:
        body = raw_body
    elif "body" in request and request["body"] is not None:
        body = json_bytes(request["body"])
    else:
        body = b""
    headers = request["headers"] if isinstance(request["headers"], dict) else {}
    host = urlsplit(agent.url).netloc
    lines = [f"{request['method']} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    head = "\r\n".join(lines).encode("ascii")
    for name, value in headers.items():
        head += b"\r\n" + _text(name).encode("utf-8") + b": " + _text(value).encode("utf-8")
    head += b"\r\nContent-Type: application/json"
    head += f"\r\nContent-Length: {len(body)}\r\n\r\n".encode("ascii")
    return head + body


def check_answer(answer: Answer, what: str) -> None:
    assert answer.status != 500, f"{what}: 500 {answer.body[:500]!r}"
    assert answer.status < 500 or answer.status == 503, f"{what}: {answer.status}"
    if answer.status >= 400:
        doc = answer.json()
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str), answer.body[:300]


@budget(ci=150, fuzz=5_000)
@given(data=st.data())
def test_api_request_with_one_part_mutated(agent: RunningAgent, data: st.DataObject) -> None:
    method, pattern, params, query, body = data.draw(st.sampled_from(ROUTES), label="route")
    seed = {
        "params": params,
        "query": query,
        "headers": {"Authorization": f"Bearer {agent.token}", "X-Vigil-Operator": "fuzz@test"},
    }
    if body is not None:
        seed["body"] = body
    label, mutated = data.draw(mutate(seed, toml=False), label="mutation")
    raw_body = None
    if method != "GET" and data.draw(st.integers(0, 5), label="raw body?") == 0:
        # Drawn by index: hypothesis would print a 100,000-byte body whole.
        raw_body = RAW_BODIES[data.draw(st.integers(0, len(RAW_BODIES) - 1), label="RAW_BODIES")]
    request = {"method": method, "path": pattern, "body": None, **mutated}
    for key in ("params", "query", "headers"):
        request.setdefault(key, {})
    raw = build(agent, request, raw_body)
    what = f"{method} {pattern} ({label}) {raw[:400]!r}"
    host, port = urlsplit(agent.url).hostname, urlsplit(agent.url).port
    assert host is not None and port is not None
    with deadline(what, EXAMPLE_DEADLINE_S + 5):
        answer = exchange((host, port), raw, timeout_s=EXAMPLE_DEADLINE_S)
    check_answer(answer, what)
    outcome("api", "accepted" if answer.status < 400 else f"refused {answer.status}")


def test_zz_the_agent_logged_no_failed_request(agent: RunningAgent) -> None:
    """Runs after the fuzz test (file order): a handler that raised is answered 500 and logged
    with a traceback; a connection that failed, logged too, may have answered nothing."""
    log = agent.log()
    for sign in ("Traceback", "request failed", "connection failed", "probe crashed"):
        assert sign not in log, log[log.find(sign) - 2000 : log.find(sign) + 3000]
