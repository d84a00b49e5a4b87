"""The http probe on the wire: phases as blackbox_exporter reports them, TLS, JSON paths,
status ranges, and every way an answer can go wrong, against real servers on loopback."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from probes.base import OptionError, ProbeTarget
from probes.http import HttpProbe, json_at, parse_json_path
from probes.httpclient import HttpClient
from tests.unit.test_model_probes import app_with, assert_failed, http, serving

Raw = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Raw) -> AsyncIterator[str]:
    """A TCP server on loopback speaking whatever ``handler`` writes; yields its base URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


# --- phases --------------------------------------------------------------------------------


async def test_phases_add_up_to_the_request(session: HttpClient) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="fine")

    async with serving(app_with({"/": ok})) as url:
        run = await http(url.replace("127.0.0.1", "localhost") + "/").run(session)
    assert run.ok, run
    assert set(run.phases_ms) == {"resolve_ms", "connect_ms", "processing_ms", "transfer_ms"}
    assert run.e2e_ms is not None
    assert sum(run.phases_ms.values()) <= run.e2e_ms + 0.01


async def test_a_slow_handler_is_processing_a_slow_body_is_transfer(
    session: HttpClient,
) -> None:
    async def think(_: web.Request) -> web.Response:
        await asyncio.sleep(0.15)
        return web.Response(text="done")

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"first ")
        await asyncio.sleep(0.15)
        await resp.write(b"second")
        await resp.write_eof()
        return resp

    async with serving(app_with({"/think": think, "/trickle": trickle})) as url:
        thought = await http(f"{url}/think").run(session)
        trickled = await http(f"{url}/trickle", expect_body_regex="^first second$").run(session)
    assert thought.ok and trickled.ok, (thought, trickled)
    assert thought.phases_ms["processing_ms"] >= 140
    assert thought.phases_ms["transfer_ms"] < 100
    assert trickled.phases_ms["transfer_ms"] >= 140
    assert trickled.phases_ms["processing_ms"] < 100


async def test_each_run_opens_its_own_connection(session: HttpClient) -> None:
    peers: list[int] = []

    async def ok(request: web.Request) -> web.Response:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peers.append(peername[1] if peername else -1)
        return web.Response(text="fine", headers={"Connection": "keep-alive"})

    async with serving(app_with({"/": ok})) as url:
        probe = http(f"{url}/")
        for _ in range(3):
            assert (await probe.run(session)).ok
    assert len(set(peers)) == 3  # three client ports: no connection was reused


async def test_a_timeout_names_the_phase_it_hung_in(session: HttpClient) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # accepts, reads nothing, answers nothing
        writer.close()

    async with raw_server(silent) as url:
        plain = await http(f"{url}/", timeout_s=0.3).run(session)
        tls = await http(url.replace("http:", "https:") + "/", timeout_s=0.3).run(session)
        release.set()
    assert_failed(plain, "timeout", "during processing")
    assert set(plain.phases_ms) == {"resolve_ms", "connect_ms"}
    assert_failed(tls, "timeout", "during tls")


# --- what comes back -----------------------------------------------------------------------


async def test_body_by_length_by_chunks_and_to_the_end(session: HttpClient) -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async with raw_server(http10) as url:
        assert (await http(url, expect_body_regex="^until the end$").run(session)).ok
    async with raw_server(chunked) as url:
        assert (await http(url, expect_body_regex="^hello world$").run(session)).ok


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "connection lost during"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", "bad Content-Length"),
    ],
)
async def test_a_broken_answer_is_a_protocol_error(
    answer: bytes, fragment: str, session: HttpClient
) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with raw_server(broken) as url:
        assert_failed(await http(f"{url}/").run(session), "protocol_error", fragment)


async def test_a_huge_body_is_read_but_not_kept(session: HttpClient) -> None:
    big = b"x" * (3 << 20) + b"TAIL"

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=big)

    async with serving(app_with({"/": huge})) as url:
        assert (await http(f"{url}/").run(session)).ok
        # Checks see the first MiB only: the tail is past it.
        assert_failed(await http(f"{url}/", expect_body_regex="TAIL").run(session), "wrong_output")


async def test_unresolvable_and_refused(closed_port: int, session: HttpClient) -> None:
    assert_failed(
        await http("http://no-such-host.invalid/").run(session), "refused", "cannot resolve"
    )
    assert_failed(
        await http(f"http://127.0.0.1:{closed_port}/").run(session), "refused", "cannot connect"
    )


# --- status ranges and JSON ----------------------------------------------------------------


async def test_status_ranges(session: HttpClient) -> None:
    async def teapot(_: web.Request) -> web.Response:
        return web.Response(status=418, text="short and stout")

    async with serving(app_with({"/": teapot})) as url:
        assert (await http(f"{url}/", expect_status="400-420").run(session)).ok
        assert (await http(f"{url}/", expect_status=["200-299", 418]).run(session)).ok
        run = await http(f"{url}/", expect_status=["419-499"]).run(session)
    assert_failed(run, "http_error", "HTTP 418")


async def test_json_path_expectations(session: HttpClient) -> None:
    doc = {"status": "ok", "models": [{"name": "a", "ready": True}, {"ready": 1}], "a b": None}

    async def health(_: web.Request) -> web.Response:
        return web.json_response(doc)

    async def text(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with serving(app_with({"/": health, "/text": text})) as url:

        async def check(**options: Any) -> Any:
            return await http(f"{url}/", **options).run(session)

        assert (await check(expect_json_path="$.status", expect_json_value="ok")).ok
        assert (await check(expect_json_path="$.models[0].ready", expect_json_value=True)).ok
        assert (await check(expect_json_path="$.models[-1].ready", expect_json_value=1)).ok
        assert (await check(expect_json_path='$["a b"]')).ok  # present, even if null
        assert (await check(expect_json_path="$.models", expect_json_value=doc["models"])).ok
        assert_failed(
            await check(expect_json_path="$.models[1].ready", expect_json_value=True),
            "wrong_output",
            "$.models[1].ready is 1, expected true",  # 1 is not true, as in JSON
        )
        assert_failed(
            await check(expect_json_path="$.status", expect_json_value="degraded"),
            "wrong_output",
            'is "ok", expected "degraded"',
        )
        assert_failed(await check(expect_json_path="$.gpu"), "wrong_output", "$.gpu not found")
        assert_failed(await check(expect_json_path="$.models[5]"), "wrong_output", "not found")
        run = await http(f"{url}/text", expect_json_path="$.status").run(session)
    assert_failed(run, "wrong_output", "body is not JSON")


def test_json_path_parsing() -> None:
    assert parse_json_path("$") == []
    assert parse_json_path("$.a.b_c[0][-2]['x y'][\"z\"]") == ["a", "b_c", 0, -2, "x y", "z"]
    assert json_at({"a": [1, {"b": 2}]}, ["a", 1, "b"]) == (True, 2)
    assert json_at({"a": [1]}, ["a", "b"]) == (False, None)
    assert json_at([1], [-2]) == (False, None)
    for bad in ("status", "$.", "$[abc]", "$.a[", "$..a", "$.a[*]"):
        with pytest.raises(ValueError):
            parse_json_path(bad)


@pytest.mark.parametrize(
    ("options", "key", "fragment"),
    [
        ({"expect_json_path": "$..x"}, "expect_json_path", "expected a JSONPath"),
        ({"expect_json_value": 1}, "expect_json_value", "needs expect_json_path"),
        ({"expect_status": "300-200"}, "expect_status", "ranges like"),
        ({"expect_status": "2xxx"}, "expect_status", "classes like"),
        ({"tls_insecure": "yes"}, "tls_insecure", ""),
        ({"tls_ca_file": 3}, "tls_ca_file", ""),
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file", "expected a readable PEM"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(OptionError) as err:
        HttpProbe.check_options(options)
    assert err.value.field == key
    assert fragment in str(err.value)


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (scripts/debian-deps.sh installs it)")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@asynccontextmanager
async def tls_serving(app: web.Application, cert: Path, key: Path) -> AsyncIterator[str]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://localhost:{port}"
    finally:
        await runner.cleanup()


async def test_https_is_verified_and_its_handshake_timed(
    certificate: tuple[Path, Path], session: HttpClient
) -> None:
    cert, key = certificate

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async with tls_serving(app_with({"/": ok}), cert, key) as url:
        trusted = await http(
            f"{url}/", tls_ca_file=str(cert), expect_json_path="$.ready", expect_json_value=True
        ).run(session)
        untrusted = await http(f"{url}/").run(session)
        insecure = await http(f"{url}/", tls_insecure=True).run(session)
    assert trusted.ok, trusted
    assert set(trusted.phases_ms) == {
        "resolve_ms",
        "connect_ms",
        "tls_ms",
        "processing_ms",
        "transfer_ms",
    }
    assert trusted.phases_ms["tls_ms"] > 0
    assert_failed(untrusted, "protocol_error", "TLS handshake failed", "certificate verify failed")
    assert "tls_ms" not in untrusted.phases_ms
    assert insecure.ok, insecure


def test_a_ca_bundle_gone_since_load_fails_runs_not_the_agent(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    probe_options = {"tls_ca_file": str(ca)}
    # Valid when the config was loaded (checked then); removed before the probe is built.
    probe = HttpProbe(
        ProbeTarget(name="web", url="https://127.0.0.1:1/", timeout_s=1.0, options=probe_options)
    )
    run = asyncio.run(probe.run(None))  # type: ignore[arg-type] # the session is not used
    assert_failed(run, "protocol_error", "cannot load tls_ca_file")
