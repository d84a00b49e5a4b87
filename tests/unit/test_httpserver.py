"""The agent's own HTTP/1.1 server (agent/serve/httpserver.py) on real loopback sockets:
keep-alive, pipelining, routing errors, limits and deadlines, handler failures, streaming,
and shutdown. Most tests speak raw HTTP over asyncio streams, so what is on the wire is exactly
what is asserted; streaming is also read back by real clients (aiohttp, urllib)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from agent.runtime.apiserver import bind
from agent.serve.httpmessages import (
    HttpError,
    Request,
    Response,
    StreamResponse,
    http_date,
    json_response,
)
from agent.serve.httpserver import HttpServer, Limits
from agent.serve.routing import Handler, Router
from tests.helpers import child_env

Answer = tuple[int, dict[str, str], bytes]


def make_router() -> tuple[Router, dict[str, asyncio.Event]]:
    """Routes exercising what the API's handlers use; events let a test hold a request."""
    events = {"release": asyncio.Event(), "entered": asyncio.Event()}

    async def hello(request: Request) -> Response:
        return json_response({"path": request.path, "query": dict(request.query)})

    async def item(request: Request) -> Response:
        return json_response({"match": request.match_info, "method": request.method})

    async def echo(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise HttpError(400, "body: expected JSON") from None
        return json_response({"got": body}, status=201)

    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query.get("s", "0.2")))
        return json_response({"slow": True})

    async def held(request: Request) -> Response:
        events["entered"].set()
        await events["release"].wait()
        return json_response({"held": True})

    async def boom(request: Request) -> Response:
        raise RuntimeError("handler bug")

    async def stream(request: Request) -> StreamResponse:
        resp = StreamResponse(content_type="text/plain")
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f"part {i}\n".encode())
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def whoami(request: Request) -> Response:
        return json_response({"who": request["who"]})

    async def tag(request: Request, handler: Handler) -> Response | StreamResponse:
        request["who"] = request.headers.get("X-Who", "nobody")
        return await handler(request)

    router = Router(middlewares=[tag])
    router.add_get("/hello", hello)
    router.add_get("/items/{name}", item)
    router.add_post(r"/items/{name}/{action:start|stop}", item)
    router.add_delete("/items/{name}", item)
    router.add_post("/echo", echo)
    router.add_get("/slow", slow)
    router.add_get("/held", held)
    router.add_get("/boom", boom)
    router.add_get("/stream", stream)
    router.add_get("/whoami", whoami)
    return router, events


@asynccontextmanager
async def serving(limits: Limits | None = None) -> AsyncIterator[tuple[HttpServer, int, dict]]:
    router, events = make_router()
    server = HttpServer(router, limits)
    await server.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield server, port, events
    finally:
        await server.close()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One response: status, headers (lower-case names) and the body (chunked decoded)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def exchange(port: int, raw: bytes) -> tuple[Answer, bytes]:
    """Send ``raw`` on a new connection; the answer and whatever follows until the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        answer = await read_answer(reader)
        rest = await asyncio.wait_for(reader.read(), 5)
        return answer, rest
    finally:
        writer.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


# --- keep-alive and pipelining ---------------------------------------------------------------


async def test_several_requests_on_one_keep_alive_connection() -> None:
    async with serving() as (server, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(5):
            writer.write(get(f"/hello?i={i}"))
            status, headers, body = await read_answer(reader)
            assert status == 200
            assert headers["content-type"] == "application/json; charset=utf-8"
            assert "connection" not in headers  # HTTP/1.1: kept open by default
            assert json.loads(body) == {"path": "/hello", "query": {"i": str(i)}}
        assert server.connections == 1
        writer.write(get("/hello", "Connection: close\r\n"))
        status, headers, _ = await read_answer(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed after it
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving() as (_, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # The slow one first: answers follow the requests' order, not the handlers' finish.
        writer.write(get("/slow?s=0.2") + get("/hello?n=2") + get("/items/x") + get("/hello?n=4"))
        answers = [await read_answer(reader) for _ in range(4)]
        assert [json.loads(b) for _, _, b in answers] == [
            {"slow": True},
            {"path": "/hello", "query": {"n": "2"}},
            {"match": {"name": "x"}, "method": "GET"},
            {"path": "/hello", "query": {"n": "4"}},
        ]
        writer.close()


async def test_http_1_0_closes_unless_asked_to_keep_alive() -> None:
    async with serving() as (_, port, _):
        (status, headers, _), rest = await exchange(port, b"GET /hello HTTP/1.0\r\n\r\n")
        assert status == 200 and headers["connection"] == "close" and rest == b""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = await read_answer(reader)
            assert status == 200 and headers["connection"] == "keep-alive"
        writer.close()


# --- routing ---------------------------------------------------------------------------------


async def test_unknown_path_404_and_wrong_method_405_with_allow() -> None:
    async with serving() as (_, port, _):
        (status, headers, body), _ = await exchange(port, get("/nope", "Connection: close\r\n"))
        assert status == 404
        assert json.loads(body) == {"error": "no such route: /nope"}
        raw = b"PUT /items/a HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        (status, headers, body), _ = await exchange(port, raw)
        assert status == 405
        assert headers["allow"] == "DELETE, GET, HEAD"
        assert "allowed: DELETE, GET, HEAD" in json.loads(body)["error"]
        # A parameter's regex is part of the route: stop is routed, pause is not.
        raw = b"POST /items/a/pause HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        (status, _, _), _ = await exchange(port, raw)
        assert status == 404


async def test_path_parameters_query_and_middleware_state() -> None:
    async with serving() as (_, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Each segment is decoded on its own: an encoded slash stays inside the name.
        writer.write(b"POST /items/my%20model%2Fv2/stop HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        _, _, body = await read_answer(reader)
        assert json.loads(body) == {
            "match": {"name": "my model/v2", "action": "stop"},
            "method": "POST",
        }
        writer.write(get("/hello?state=&a=1&a=2&q=two+words&x=%7B%7D"))
        _, _, body = await read_answer(reader)
        assert json.loads(body)["query"] == {"state": "", "a": "1", "q": "two words", "x": "{}"}
        writer.write(get("/whoami", "x-who: ops@host\r\n"))  # header names are case-blind
        _, _, body = await read_answer(reader)
        assert json.loads(body) == {"who": "ops@host"}
        writer.close()


async def test_head_answers_a_get_route_without_a_body() -> None:
    async with serving() as (_, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /hello HTTP/1.1\r\n\r\n" + get("/hello"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert length == len(b'{"path": "/hello", "query": {}}')
        # No body followed: the next bytes are the second answer's status line.
        status, _, body = await read_answer(reader)
        assert status == 200 and len(body) == length
        writer.close()


def test_a_route_table_refuses_what_it_cannot_route() -> None:
    router, _ = make_router()

    async def h(request: Request) -> Response:
        return Response()

    with pytest.raises(ValueError, match="routed twice"):
        router.add_get("/hello", h)
    with pytest.raises(ValueError, match="whole segment"):
        router.add_get("/files/v{version}", h)
    with pytest.raises(ValueError, match="starting with /"):
        router.add_get("hello", h)


# --- bad requests, limits, deadlines ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /hello\r\n\r\n",
        b"GET  /hello HTTP/1.1\r\n\r\n",
        b"GET hello HTTP/1.1\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_a_malformed_request_gets_400_and_the_connection_closes(raw: bytes) -> None:
    async with serving() as (server, port, _):
        (status, headers, body), rest = await exchange(port, raw)
        assert status == 400, body
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]
        assert rest == b""
        # The server goes on serving.
        (status, _, _), _ = await exchange(port, get("/hello", "Connection: close\r\n"))
        assert status == 200
        assert await _settle(server)


async def test_limits_answer_413_414_431_411_505() -> None:
    limits = Limits(max_head_bytes=2048, max_request_line=512, max_headers=10, max_body_bytes=100)
    async with serving(limits) as (_, port, _):
        cases = [
            (get("/hello", "X-Big: " + "a" * 4000 + "\r\n"), 431),
            (get("/hello", "".join(f"X-{i}: v\r\n" for i in range(11))), 431),
            (get("/hello?" + "q" * 600), 414),
            (b"POST /echo HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
            (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
            (b"GET /hello HTTP/2.0\r\n\r\n", 505),
        ]
        for raw, want in cases:
            (status, headers, body), rest = await exchange(port, raw)
            assert (status, headers["connection"], rest) == (want, "close", b""), body
        # A body over the limit sent anyway: the 413 still reaches the client.
        (status, _, _), _ = await exchange(
            port, b"POST /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000
        )
        assert status == 413


async def test_a_body_is_read_by_content_length_and_expect_100_continue_is_honoured() -> None:
    async with serving() as (_, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"a": [1, 2, 3]}).encode()
        writer.write(f"POST /echo HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        status, _, answer = await read_answer(reader)
        assert (status, json.loads(answer)) == (201, {"got": {"a": [1, 2, 3]}})
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"[42]")
        status, _, answer = await read_answer(reader)
        assert (status, json.loads(answer)) == (201, {"got": [42]})
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nnot")
        status, _, answer = await read_answer(reader)
        assert (status, json.loads(answer)) == (400, {"error": "body: expected JSON"})
        writer.close()


async def test_a_client_sending_headers_slowly_is_cut_off_at_the_deadline() -> None:
    async with serving(Limits(header_timeout_s=0.5)) as (server, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        writer.write(b"GET /hello HTTP/1.1\r\n")

        async def trickle() -> None:
            # A header byte every 100 ms: never idle for long, never done.
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.1)

        sender = asyncio.create_task(trickle())
        status, headers, body = await read_answer(reader)
        elapsed = time.monotonic() - t0
        sender.cancel()
        assert (status, headers["connection"]) == (408, "close"), body
        assert 0.45 < elapsed < 2.0, elapsed
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and it was closed
        writer.close()
        assert await _settle(server)


async def _settle(server: HttpServer) -> bool:
    for _ in range(100):
        if server.connections == 0:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_silent_connection_and_an_idle_one_are_closed_after_their_timeouts() -> None:
    async with serving(Limits(header_timeout_s=0.3, idle_timeout_s=0.5)) as (server, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # said nothing: closed
        assert 0.25 < time.monotonic() - t0 < 2.0
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/hello"))
        await read_answer(reader)
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.45 < time.monotonic() - t0 < 2.0
        writer.close()
        assert await _settle(server)


async def test_at_the_connection_cap_the_longest_idle_makes_room_else_503() -> None:
    """Issue 17, defect 8: connections are capped. Silent clients give way to a newcomer
    (oldest first); clients busy sending headers do not, so the newcomer gets a 503."""
    async with serving(Limits(max_connections=3, header_timeout_s=30)) as (server, port, _):
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _ in range(100):
            if server.connections == 3:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 3
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/hello"))
        status, _, _ = await read_answer(reader)
        assert status == 200
        # The first silent client (the longest idle) was closed to make room.
        assert await asyncio.wait_for(silent[0][0].read(), 5) == b""
        writer.close()
        for _, w in silent:
            w.close()
        assert await _settle(server)

        # Three clients in the middle of their headers: none idle, no room.
        busy = []
        for _ in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
            await w.drain()
            busy.append((r, w))
        for _ in range(100):
            if server.connections == 3:
                break
            await asyncio.sleep(0.01)
        (status, headers, body), _ = await exchange(port, get("/hello"))
        assert (status, headers["connection"]) == (503, "close")
        assert b"too many connections" in body
        # The busy ones are still served once they finish their headers.
        r, w = busy[0]
        w.write(b"\r\n")
        status, _, _ = await read_answer(r)
        assert status == 200
        for _, w in busy:
            w.close()
        assert await _settle(server)


# --- handler failures ------------------------------------------------------------------------


async def test_a_handler_exception_is_a_500_and_the_server_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving() as (_, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with caplog.at_level(logging.ERROR, logger="vigil.http"):
            writer.write(get("/boom"))
            status, headers, body = await read_answer(reader)
        assert status == 500
        assert json.loads(body) == {"error": "internal error (RuntimeError): see the agent's log"}
        assert "request failed method=GET path=/boom" in caplog.text
        assert "handler bug" in caplog.text  # the traceback is in the log
        # The same connection, and a new one, still work.
        writer.write(get("/hello"))
        assert (await read_answer(reader))[0] == 200
        writer.close()
        (status, _, _), _ = await exchange(port, get("/hello", "Connection: close\r\n"))
        assert status == 200


# --- streaming -------------------------------------------------------------------------------


async def test_a_streamed_response_is_chunked_and_read_back_by_real_clients() -> None:
    async with serving() as (_, port, _):
        url = f"http://127.0.0.1:{port}/stream"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert resp.headers["Content-Type"] == "text/plain"
            pieces = [line async for line in resp.content]
        assert pieces == [b"part 0\n", b"part 1\n", b"part 2\n"]

        def with_urllib() -> bytes:
            with urllib.request.urlopen(url, timeout=5) as r:
                return bytes(r.read())

        assert await asyncio.to_thread(with_urllib) == b"part 0\npart 1\npart 2\n"
        # On a kept-alive connection the stream's end is its last chunk: the next answer
        # follows on the same connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/stream") + get("/hello"))
        assert (await read_answer(reader))[2] == b"part 0\npart 1\npart 2\n"
        assert (await read_answer(reader))[0] == 200
        writer.close()
        # To HTTP/1.0 the end is the close.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)
        assert raw.endswith(b"\r\n\r\npart 0\npart 1\npart 2\n")
        assert b"Transfer-Encoding" not in raw and b"Connection: close" in raw
        writer.close()


# --- shutdown and binding --------------------------------------------------------------------


async def test_shutdown_with_an_idle_keep_alive_connection_is_prompt() -> None:
    router, _ = make_router()
    server = HttpServer(router, Limits(idle_timeout_s=60, shutdown_grace_s=5))
    await server.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/hello"))
    assert (await read_answer(reader))[0] == 200
    t0 = time.monotonic()
    await server.close()
    assert time.monotonic() - t0 < 0.5
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert server.connections == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.close()


async def test_shutdown_lets_a_request_in_flight_finish_within_the_grace() -> None:
    router, events = make_router()
    server = HttpServer(router, Limits(shutdown_grace_s=5))
    await server.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/held"))
    await asyncio.wait_for(events["entered"].wait(), 5)
    closing = asyncio.create_task(server.close())
    await asyncio.sleep(0.1)
    assert not closing.done()  # waiting for the request in flight
    events["release"].set()
    status, headers, body = await read_answer(reader)
    assert (status, headers["connection"], json.loads(body)) == (200, "close", {"held": True})
    await asyncio.wait_for(closing, 2)
    writer.close()


async def test_shutdown_cancels_a_request_that_outlasts_the_grace() -> None:
    router, events = make_router()
    server = HttpServer(router, Limits(shutdown_grace_s=0.2))
    await server.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/held"))
    await asyncio.wait_for(events["entered"].wait(), 5)
    t0 = time.monotonic()
    await server.close()
    assert time.monotonic() - t0 < 2.0
    assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped, never answered
    writer.close()


async def test_bind_reads_back_the_port_and_writes_ipv6_urls_in_brackets() -> None:
    router, _ = make_router()
    server, url = await bind(router, "127.0.0.1", 0)
    try:
        assert url == f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        assert await asyncio.to_thread(_fetch, url + "/hello") == 200
    finally:
        await server.close()
    if not socket.has_ipv6 or not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    server, url = await bind(router, "::1", 0)
    try:
        assert url.startswith("http://[::1]:")
        assert await asyncio.to_thread(_fetch, url + "/hello") == 200
    finally:
        await server.close()


def _fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as r:
        return int(r.status)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_dates_are_imf_fixdate_whatever_the_locale() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_the_agent_loads_no_aiohttp_server() -> None:
    """The daemon and its API import no part of aiohttp's server (issue 14); the probes'
    client is another matter, tracked by tests/unit/test_lean_agent.py."""
    code = (
        "import sys, json; import agent.runtime.daemon, agent.runtime.apiserver, "
        "agent.serve.api; print(json.dumps(sorted(sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert not {m for m in loaded if m.startswith("aiohttp.web")}
