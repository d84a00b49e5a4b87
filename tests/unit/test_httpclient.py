"""probes.httpclient against real servers on loopback: keep-alive reuse, body framings, broken
and silent servers, the deadline, streaming arrival times, an unbounded pool, redirects, TLS.

The servers are plain asyncio stream servers written here, so each test controls every byte
and every close.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from probes.httpclient import HttpClient, InvalidURL, WireError
from tests.unit.test_http_probe import certificate  # noqa: F401 - a fixture used below


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int
    """Which accepted connection (1-based) carried it."""


Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]
"""Writes the answer; returns whether to keep the connection open for another request."""


@dataclass
class Server:
    url: str
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0


async def read_request(reader: asyncio.StreamReader, connection: int) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body, connection)


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[Server]:
    """A loopback HTTP/1.1 server calling ``answer`` for each request, keep-alive included."""
    server = Server("")
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        server.connections += 1
        server.open_now += 1
        number = server.connections
        try:
            while (request := await read_request(reader, number)) is not None:
                server.requests.append(request)
                if not await answer(request, writer):
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over (a cancelled handler is logged)
        finally:
            server.open_now -= 1
            writer.close()
            handlers.discard(task)

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        listener.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


def sized(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def ok_answer(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(sized(f"{request.method} {request.target}".encode()))
    await writer.drain()
    return True


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    async with HttpClient() as c:
        yield c


# --- framing and keep-alive -------------------------------------------------------------------


async def test_kept_alive_connection_is_reused(client: HttpClient) -> None:
    async with serving(ok_answer) as server:
        for i in range(3):
            async with client.get(f"{server.url}/n{i}") as resp:
                assert (resp.status, resp.reason) == (200, "OK")
                assert await resp.read() == f"GET /n{i}".encode()
        assert server.connections == 1 and client.opened == 1
        assert client.idle_connections() == 1
        assert [r.connection for r in server.requests] == [1, 1, 1]
        assert server.requests[0].headers["host"] == server.url.removeprefix("http://")


async def test_chunked_body_whole_and_piece_by_piece(client: HttpClient) -> None:
    async def chunked(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: Chunks\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )
        await writer.drain()
        return True

    async with serving(chunked) as server:
        async with client.get(server.url) as resp:
            assert resp.headers["x-kind"] == resp.headers["X-KIND"] == "Chunks"
            assert await resp.read() == b"hello world" and resp.at_eof
        async with client.get(server.url) as resp:
            assert [piece async for piece in resp.chunks()] == [b"hello", b" world"]
    assert server.connections == 1  # a chunked body read to its end keeps the connection


async def test_body_to_the_end_of_the_stream_closes_the_connection(client: HttpClient) -> None:
    async def http10(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()
        return False

    async with serving(http10) as server:
        for _ in range(2):
            async with client.get(server.url) as resp:
                assert await resp.text() == "until the end"
    assert server.connections == 2 and client.idle_connections() == 0


async def test_connection_close_and_a_partial_read_are_not_reused(client: HttpClient) -> None:
    async def answer(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.target == "/close":
            writer.write(sized(b"bye", extra="Connection: close\r\n"))
        else:
            writer.write(sized(b"x" * 200_000))
        await writer.drain()
        return request.target != "/close"

    async with serving(answer) as server:
        async with client.get(f"{server.url}/close") as resp:
            assert await resp.read() == b"bye"
        async with client.get(f"{server.url}/big") as resp:
            assert await resp.read(limit=10) == b"x" * 10  # the rest is never read
        async with client.get(f"{server.url}/big") as resp:
            assert len(await resp.read()) == 200_000
    assert client.opened == 3 and client.idle_connections() == 1


async def test_a_stale_kept_connection_is_replaced_without_an_error(client: HttpClient) -> None:
    # The server keeps each connection open but answers only its first request: the second
    # request on it meets a close, as when a server drops an idle connection just as it is
    # reused. The server never saw that request answered, so it goes again, on a new one.
    async def once(request: Request, writer: asyncio.StreamWriter) -> bool:
        if sum(r.connection == request.connection for r in server.requests) > 1:
            return False
        writer.write(sized(b"fine"))
        await writer.drain()
        return True

    async with serving(once) as server:
        for _ in range(2):
            async with client.get(server.url) as resp:
                assert await resp.read() == b"fine"
    assert client.opened == 2


# --- failures -------------------------------------------------------------------------------


async def test_refused(client: HttpClient, closed_port: int) -> None:
    with pytest.raises(WireError) as err:
        await client.send("GET", f"http://127.0.0.1:{closed_port}/")
    assert err.value.category == "refused"
    assert str(err.value) == f"cannot connect to 127.0.0.1:{closed_port}: connection refused"


async def test_bad_urls_are_invalid(client: HttpClient) -> None:
    for url in ("ftp://host/", "http:///nohost", "http://host:99999/"):
        with pytest.raises(InvalidURL) as err:
            await client.send("GET", url)
        assert err.value.category == "protocol_error"


async def test_a_server_closing_mid_body_is_a_protocol_error(client: HttpClient) -> None:
    async def short(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()
        return False

    async with serving(short) as server, client.get(server.url) as resp:
        with pytest.raises(WireError) as err:
            await resp.read()
    assert err.value.category == "protocol_error"
    assert "connection lost mid-body, after 9 bytes" in str(err.value)
    assert client.idle_connections() == 0


async def test_a_server_closing_without_answering_is_a_protocol_error(client: HttpClient) -> None:
    async def hang_up(_: Request, writer: asyncio.StreamWriter) -> bool:
        return False

    async with serving(hang_up) as server:
        with pytest.raises(WireError) as err:
            await client.send("GET", server.url)
    assert err.value.category == "protocol_error"
    assert "closed the connection without answering" in str(err.value)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n", "unexpected Content-Encoding"),
    ],
)
async def test_a_malformed_head_is_a_protocol_error(
    client: HttpClient, answer: bytes, fragment: str
) -> None:
    async def broken(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        await writer.drain()
        return False

    async with serving(broken) as server:
        with pytest.raises(WireError) as err:
            await client.send("GET", server.url)
    assert err.value.category == "protocol_error" and fragment in str(err.value)


async def test_bad_chunk_size_is_a_protocol_error(client: HttpClient) -> None:
    async def broken(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        await writer.drain()
        return False

    async with serving(broken) as server, client.get(server.url) as resp:
        with pytest.raises(WireError, match="bad chunk size"):
            await resp.read()


async def test_a_silent_server_times_out_at_the_deadline(client: HttpClient) -> None:
    release = asyncio.Event()

    async def silent(_: Request, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        return False

    async with serving(silent) as server:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.send("GET", server.url, timeout_s=0.3)
        took = time.monotonic() - started
        release.set()
    assert 0.29 <= took < 1.5


async def test_the_deadline_covers_the_body(client: HttpClient) -> None:
    async def trickle(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(100):  # a byte every 20 ms: no single read waits long
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.02)
        return False

    async with serving(trickle) as server:
        started = time.monotonic()
        async with client.get(server.url, timeout_s=0.4) as resp:
            assert resp.status == 200
            with pytest.raises(TimeoutError):
                await resp.read()
        took = time.monotonic() - started
    assert 0.39 <= took < 1.5
    assert client.idle_connections() == 0


async def test_a_deadline_after_release_leaves_the_kept_connection_alone(
    client: HttpClient,
) -> None:
    async with serving(ok_answer) as server:
        async with client.get(server.url, timeout_s=0.1) as resp:
            assert await resp.read() == b"GET /"
        await asyncio.sleep(0.2)  # past the first request's deadline
        async with client.get(server.url) as resp:
            assert await resp.read() == b"GET /"
    assert client.opened == 1


# --- streaming and the pool -------------------------------------------------------------------


async def test_pieces_arrive_as_the_server_writes_them(client: HttpClient) -> None:
    written: list[int] = []

    async def stream(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(5):
            await asyncio.sleep(0.05)
            piece = f"data: {i}\n\n".encode()
            written.append(time.perf_counter_ns())
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    arrived: list[int] = []
    async with serving(stream) as server, client.get(server.url) as resp:
        async for piece in resp.chunks():
            arrived.append(time.perf_counter_ns())
            assert piece == f"data: {len(arrived) - 1}\n\n".encode()
    assert len(arrived) == len(written) == 5
    for i, at in enumerate(arrived):
        # Each piece is in hand before the next is even written: nothing waits in a buffer.
        assert at >= written[i]
        if i + 1 < len(written):
            assert at < written[i + 1]
    assert client.idle_connections() == 1  # streamed to its end: kept


async def test_the_pool_never_makes_a_request_wait(client: HttpClient) -> None:
    # More requests at once than aiohttp's default pool (100): none waits for another.
    many = 120
    release = asyncio.Event()

    async def answer(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.target == "/slow":
            await release.wait()
        writer.write(sized(b"done"))
        await writer.drain()
        return True

    async def fetch(path: str) -> bytes:
        async with client.get(server.url + path, timeout_s=10) as resp:
            return await resp.read()

    async with serving(answer) as server:
        slow = [asyncio.create_task(fetch("/slow")) for _ in range(many)]
        async with asyncio.timeout(10):
            while len(server.requests) < many:  # every slow request reached the server
                await asyncio.sleep(0.01)
            assert await fetch("/fast") == b"done"  # and a quick one is not held behind them
        assert client.opened == many + 1
        release.set()
        assert set(await asyncio.gather(*slow)) == {b"done"}
    assert client.idle_connections() == many + 1


# --- requests -----------------------------------------------------------------------------


async def test_json_data_and_headers_are_sent(client: HttpClient) -> None:
    async with serving(ok_answer) as server:
        async with client.post(
            server.url + "/j", json={"a": [1, "é"]}, headers={"authorization": "Bearer k"}
        ) as resp:
            await resp.read()
        async with client.post(
            server.url + "/d", data=b"raw", headers={"User-Agent": "mine", "Content-Type": "x/y"}
        ) as resp:
            await resp.read()
        async with client.post(server.url + "/empty") as resp:
            await resp.read()
    j, d, empty = server.requests
    assert (j.method, j.body, j.headers["content-type"]) == (
        "POST",
        b'{"a": [1, "\\u00e9"]}',
        "application/json",
    )
    assert j.headers["authorization"] == "Bearer k" and j.headers["user-agent"] == "vigil-probe"
    assert (d.body, d.headers["user-agent"], d.headers["content-type"]) == (b"raw", "mine", "x/y")
    assert empty.headers["content-length"] == "0"
    assert all(r.headers["accept-encoding"] == "identity" for r in server.requests)


async def test_a_header_with_a_line_break_is_refused(client: HttpClient) -> None:
    async with serving(ok_answer) as server:
        with pytest.raises(WireError, match="line break"):
            await client.send("GET", server.url, headers={"X-A": "1\r\nX-Evil: 2"})
    assert server.requests == []


async def test_redirects(client: HttpClient) -> None:
    async def other_answer(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(sized(request.headers.get("authorization", "none").encode()))
        await writer.drain()
        return True

    async def answer(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.target == "/loop":
            writer.write(sized(b"again", "302 Found", "Location: /loop\r\n"))
        elif request.target == "/away":
            writer.write(sized(b"", "307 Temporary Redirect", f"Location: {other.url}/\r\n"))
        elif request.target in ("/moved", "/post"):
            writer.write(sized(b"moved", "303 See Other", "Location: /here\r\n"))
        else:
            writer.write(sized(f"{request.method} {request.target}".encode()))
        await writer.drain()
        return True

    auth = {"Authorization": "Bearer secret"}
    async with serving(other_answer) as other, serving(answer) as server:
        async with client.get(f"{server.url}/moved") as resp:
            assert (resp.status, await resp.read()) == (200, b"GET /here")
        async with client.post(f"{server.url}/post", json={"x": 1}) as resp:
            assert await resp.read() == b"GET /here"  # 303: the body is not sent again
        async with client.get(f"{server.url}/moved", follow_redirects=False) as resp:
            assert (resp.status, resp.headers["location"]) == (303, "/here")
            assert await resp.read() == b"moved"
        async with client.get(f"{server.url}/away", headers=auth) as resp:
            assert await resp.read() == b"none"  # the credential stays with its origin
        with pytest.raises(WireError, match="more than 10 redirects"):
            await client.send("GET", f"{server.url}/loop")
    assert server.connections == 1  # redirect bodies are read, so the connection is reused
    post, after = server.requests[2:4]
    assert (post.method, post.body) == ("POST", b'{"x": 1}')
    assert (after.method, after.body, "content-type" in after.headers) == ("GET", b"", False)


async def test_interim_answers_are_skipped(client: HttpClient) -> None:
    async def cont(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + sized(b"final"))
        await writer.drain()
        return True

    async with serving(cont) as server, client.get(server.url) as resp:
        assert (resp.status, await resp.read()) == (200, b"final")


async def test_a_closed_client_refuses_requests_and_closes_its_connections() -> None:
    client = HttpClient()
    async with serving(ok_answer) as server:
        async with client.get(server.url) as resp:
            await resp.read()
        assert client.idle_connections() == 1
        await client.close()
        assert client.idle_connections() == 0
        async with asyncio.timeout(5):
            while server.open_now:  # the server sees the close
                await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="closed"):
            await client.send("GET", server.url)


# --- TLS ----------------------------------------------------------------------------------


async def test_https_verified_by_the_trust_store_given(
    certificate: tuple[Path, Path],  # noqa: F811 - the imported fixture
) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await read_request(reader, connections) is not None:
            writer.write(sized(b"secure"))
            await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://localhost:{listener.sockets[0].getsockname()[1]}/"
    try:
        async with HttpClient(ssl_context=ssl.create_default_context(cafile=cert)) as trusting:
            for _ in range(2):
                async with trusting.get(url) as resp:
                    assert await resp.read() == b"secure"
            assert trusting.opened == 1
        async with HttpClient() as default:
            with pytest.raises(WireError) as err:
                await default.send("GET", url)
        assert err.value.category == "protocol_error"
        assert "TLS handshake failed" in str(err.value)
        assert "certificate verify failed" in str(err.value)
    finally:
        listener.close()
