"""TLS for the agent's API (issue 17): the config's refusals, the server's handshake deadline
and versions, the certificate swapped on change or kept when the new one is broken, and how
clients trust an agent (CA file, pinned certificate, fleet file). Real sockets on loopback,
throwaway certificates from trustme."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from agent.cli.api_client import trust_for
from agent.config import ConfigError, parse_config
from agent.config.records import TlsConfig
from agent.config.tls import is_loopback, server_context
from agent.runtime.apiserver import ApiServer, bind, publish
from agent.runtime.certreload import CertReloader
from agent.runtime.reloading import restart_needed
from agent.serve.httpmessages import Request, Response, json_response
from agent.serve.httpserver import HttpServer, Limits
from agent.serve.routing import Router
from storage.records import Event
from storage.tlstrust import TrustError, client_context
from tests.tls_support import Pair, write_atomic, write_ca, write_pair
from tui.fleet import FleetError, parse_fleet
from tui.remote.client import AgentError
from tui.remote.ssh import SshAddress, parse_remote_output, remote_script

CFG = Path("/etc/vigil/tls.toml")


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pair(ca: trustme.CA, tmp_path: Path) -> Pair:
    return write_pair(ca, tmp_path / "tls")


def tls_table(pair: Pair, extra: str = "") -> str:
    return f'[agent.tls]\ncert = "{pair.cert}"\nkey = "{pair.key}"\n{extra}'


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, CFG)
    return info.value


# --- the config -------------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:8470", "[::]:8470", "10.1.2.3:0", "gpu-01:8470"])
def test_a_listen_beyond_loopback_without_tls_is_refused(listen: str) -> None:
    err = refused(f'[agent]\nhost = "h"\nlisten = "{listen}"\n')
    assert (err.field, err.line) == ("agent.listen", 3)
    assert "reachable from other hosts" in err.reason
    assert "[agent.tls]" in err.reason and "allow_insecure_listen = true" in err.reason


def test_allow_insecure_listen_accepts_plain_http_beyond_loopback() -> None:
    cfg = parse_config('[agent]\nlisten = "0.0.0.0:8470"\nallow_insecure_listen = true\n', CFG)
    assert (cfg.agent.listen_host, cfg.agent.tls, cfg.agent.allow_insecure_listen) == (
        "0.0.0.0",
        None,
        True,
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.9.9.9:8470", "[::1]:0", "localhost:0"])
def test_loopback_stays_plain_http_by_default(listen: str) -> None:
    assert parse_config(f'[agent]\nlisten = "{listen}"\n', CFG).agent.tls is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("::ffff:10.0.0.1", False),
        ("gpu-01.internal", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_tls_on_loopback_and_beyond(pair: Pair) -> None:
    for listen in ("127.0.0.1:0", "0.0.0.0:8470"):
        text = f'[agent]\nlisten = "{listen}"\n' + tls_table(pair, 'min_version = "1.3"\n')
        tls = parse_config(text, CFG).agent.tls
        assert tls == TlsConfig(cert_file=pair.cert, key_file=pair.key, min_version="1.3")


def test_tls_files_are_checked_at_load(ca: trustme.CA, pair: Pair, tmp_path: Path) -> None:
    other = write_pair(ca, tmp_path / "other")
    head = '[agent]\nlisten = "0.0.0.0:8470"\n[agent.tls]\n'

    def error(cert: object, key: object, extra: str = "") -> ConfigError:
        return refused(f'{head}cert = "{cert}"\nkey = "{key}"\n{extra}')

    err = error(pair.cert, other.key)
    assert (err.field, err.line) == ("agent.tls.key", 5)
    assert "is not the key of the certificate" in err.reason
    err = error(tmp_path / "missing.crt", pair.key)
    assert (err.field, err.line) == ("agent.tls.cert", 4)
    assert "cannot read" in err.reason and "No such file" in err.reason
    err = error(pair.key, pair.key)
    assert err.field == "agent.tls.cert" and "holds no PEM certificate" in err.reason
    err = error(pair.cert, pair.cert)
    assert err.field == "agent.tls.key" and "holds no PEM private key" in err.reason
    err = error("relative/api.crt", pair.key)
    assert err.field == "agent.tls.cert" and "expected an absolute path" in err.reason
    damaged = tmp_path / "damaged.crt"
    damaged.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    err = error(damaged, pair.key)
    assert err.field == "agent.tls.cert" and "not a valid PEM certificate chain" in err.reason
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n")
    os.chmod(encrypted, 0o600)
    err = error(pair.cert, encrypted)
    assert err.field == "agent.tls.key" and "encrypted with a passphrase" in err.reason
    err = error(pair.cert, pair.key, 'min_version = "1.1"\n')
    assert err.field == "agent.tls.min_version" and "'1.2', '1.3'" in err.reason
    err = refused(f'{head}cert = "{pair.cert}"\n')
    assert err.field == "agent.tls.key" and "missing required field" in err.reason
    os.chmod(pair.key, 0o644)
    err = error(pair.cert, pair.key)
    assert err.field == "agent.tls.key" and "readable by every user (mode 0644)" in err.reason


def test_a_tls_change_needs_a_restart(ca: trustme.CA, pair: Pair, tmp_path: Path) -> None:
    other = write_pair(ca, tmp_path / "other")
    old = parse_config("[agent]\n" + tls_table(pair), CFG)
    new = parse_config("[agent]\n" + tls_table(other), CFG)
    assert restart_needed(old, new) == ["tls"]
    assert restart_needed(old, parse_config("[agent]\n" + tls_table(pair), CFG)) == []


# --- the server ------------------------------------------------------------------------------


def router() -> Router:
    async def healthz(request: Request) -> Response:
        return json_response({"ok": True})

    app = Router()
    app.add_get("/healthz", healthz)
    return app


async def handshake(
    port: int, ca_file: Path | None, *, max_version: ssl.TLSVersion | None = None
) -> str:
    """A new connection's view of the server: the SHA-256 of the certificate it was given,
    after one request answered over it."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if max_version is not None:
        ctx.maximum_version = max_version
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200 OK\r\n")
        return hashlib.sha256(der).hexdigest()
    finally:
        writer.close()


@asynccontextmanager
async def serving(tls: TlsConfig) -> AsyncIterator[tuple[ApiServer, int, list[Event]]]:
    events: list[Event] = []
    server, url = await bind(router(), "127.0.0.1", 0, tls, events.append)
    try:
        assert url.startswith("https://127.0.0.1:")
        yield server, int(url.rsplit(":", 1)[1]), events
    finally:
        await server.close()


def tls_of(pair: Pair, min_version: str = "1.2") -> TlsConfig:
    return TlsConfig(cert_file=pair.cert, key_file=pair.key, min_version=min_version)


async def test_https_with_the_ca_and_refused_without(ca: trustme.CA, pair: Pair) -> None:
    ca_file = write_ca(ca, pair.cert.parent / "ca.pem")
    async with serving(tls_of(pair)) as (_, port, _):
        assert await handshake(port, ca_file) == pair.sha256
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            await handshake(port, None)


async def test_the_oldest_version_is_the_configured_one(ca: trustme.CA, pair: Pair) -> None:
    ca_file = write_ca(ca, pair.cert.parent / "ca.pem")
    async with serving(tls_of(pair)) as (_, port, _):
        assert await handshake(port, ca_file, max_version=ssl.TLSVersion.TLSv1_2) == pair.sha256
    async with serving(tls_of(pair, "1.3")) as (_, port, _):
        assert await handshake(port, ca_file) == pair.sha256
        # The server ends the handshake (a protocol_version alert, or a reset before it).
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await handshake(port, ca_file, max_version=ssl.TLSVersion.TLSv1_2)
    ctx = server_context(tls_of(pair))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_a_handshake_never_finished_is_cut_off(pair: Pair) -> None:
    server = HttpServer(router(), Limits(header_timeout_s=0.5))
    await server.start("127.0.0.1", 0, ssl=server_context(tls_of(pair)))
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server, nothing said
        assert 0.4 < time.monotonic() - started < 3
        writer.close()
    finally:
        await server.close()


async def test_a_new_certificate_serves_new_connections(ca: trustme.CA, pair: Pair) -> None:
    ca_file = write_ca(ca, pair.cert.parent / "ca.pem")
    async with serving(tls_of(pair)) as (server, port, events):
        certs = server.certs
        assert certs is not None and certs.sha256 == pair.sha256
        assert certs.check("test") is None  # nothing changed: nothing done, nothing said
        renewed = write_pair(ca, pair.cert.parent)  # the same paths, as a renewal writes them
        assert certs.check("test") is True
        assert await handshake(port, ca_file) == renewed.sha256
        event = events[-1]
        assert event.kind == "api.tls_reloaded"
        assert event.data["sha256"] == renewed.sha256
        assert event.data["previous_sha256"] == pair.sha256


async def test_a_broken_replacement_keeps_the_running_certificate(
    ca: trustme.CA, pair: Pair, tmp_path: Path
) -> None:
    ca_file = write_ca(ca, tmp_path / "ca.pem")
    stranger = write_pair(ca, tmp_path / "stranger")
    async with serving(tls_of(pair)) as (server, port, events):
        certs = server.certs
        assert certs is not None
        # A renewal caught halfway: the new certificate is in, its key is another's.
        renewed = write_pair(ca, tmp_path / "renewed")
        write_atomic(pair.cert, renewed.cert.read_bytes(), 0o644)
        write_atomic(pair.key, stranger.key.read_bytes(), 0o600)
        assert certs.check("test") is False
        assert await handshake(port, ca_file) == pair.sha256
        refusal = events[-1]
        assert refusal.kind == "api.tls_reload_refused"
        assert refusal.data["field"] == "agent.tls.key"
        assert refusal.data["path"] == str(pair.key)
        assert "is not the key of the certificate" in refusal.data["reason"]
        assert refusal.data["sha256"] == pair.sha256
        assert certs.check("test") is None and len(events) == 1  # said once per change
        write_atomic(pair.key, renewed.key.read_bytes(), 0o600)  # the renewal completes
        assert certs.check("test") is True
        assert await handshake(port, ca_file) == renewed.sha256
        # An unreadable file is refused too, the running pair kept.
        pair.cert.unlink()
        assert certs.check("test") is False
        assert "cannot read" in events[-1].data["reason"]
        assert await handshake(port, ca_file) == renewed.sha256


def test_the_reloader_refuses_to_start_on_bad_files(ca: trustme.CA, pair: Pair) -> None:
    os.chmod(pair.key, 0o644)
    with pytest.raises(Exception, match="readable by every user"):
        CertReloader(tls_of(pair), lambda event: None)


def test_api_json_names_the_certificate(pair: Pair, tmp_path: Path) -> None:
    publish(tmp_path, "https://127.0.0.1:1", 5, tls_of(pair))
    assert '"tls_cert": "' + str(pair.cert) + '"' in (tmp_path / "api.json").read_text()
    publish(tmp_path, "http://127.0.0.1:1", 5)
    assert "tls_cert" not in (tmp_path / "api.json").read_text()


# --- clients' trust ---------------------------------------------------------------------------


async def test_a_pinned_certificate_is_trusted_by_itself_only(
    ca: trustme.CA, pair: Pair, tmp_path: Path
) -> None:
    """The local agent's own certificate, pinned, is trusted on any address (0.0.0.0 is in no
    certificate), and another certificate from the same CA is not."""
    sibling = write_pair(ca, tmp_path / "sibling", "sibling", "127.0.0.1")
    async with serving(tls_of(pair)) as (_, port, _):

        async def connect(ctx: ssl.SSLContext, name: str) -> None:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname=name
            )
            writer.close()

        await connect(client_context(pinned_cert=pair.cert), "gpu-01.example")
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(client_context(pinned_cert=sibling.cert), "127.0.0.1")
        ca_file = write_ca(ca, tmp_path / "ca.pem")
        with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|IP address"):
            await connect(client_context(ca_file), "gpu-01.example")


def test_trust_for_the_cli(
    ca: trustme.CA, pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIGIL_CA", raising=False)
    assert trust_for("http://127.0.0.1:1", tmp_path / "nope.pem") is None
    ca_file = write_ca(ca, tmp_path / "ca.pem")
    ctx = trust_for("https://127.0.0.1:1", ca_file)
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    pinned = trust_for("https://0.0.0.0:1", None, pair.cert)
    assert pinned is not None and not pinned.check_hostname
    assert pinned.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match=r"nope\.pem: cannot read the CA file: No such file"):
        trust_for("https://127.0.0.1:1", tmp_path / "nope.pem")
    monkeypatch.setenv("VIGIL_CA", str(tmp_path / "env.pem"))
    with pytest.raises(ConfigError, match=r"env\.pem: cannot read the CA file"):
        trust_for("https://127.0.0.1:1", None, pair.cert)  # $VIGIL_CA over the pin
    monkeypatch.delenv("VIGIL_CA")
    with pytest.raises(ConfigError, match=r"its api\.json names it; or pass --ca FILE"):
        trust_for("https://127.0.0.1:1", None, tmp_path / "gone.crt")
    with pytest.raises(TrustError, match="holding no PEM certificate"):
        client_context(pair.key)


def test_the_fleet_file_ca(ca: trustme.CA, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    write_ca(ca, tmp_path / "ca.pem")
    entries = parse_fleet(
        '[defaults]\ntoken = "t"\nca = "ca.pem"\n\n'
        '[[agent]]\nname = "a"\nurl = "https://10.0.0.1:8470"\n\n'
        '[[agent]]\nname = "b"\nurl = "http://127.0.0.1:8470"\n',
        fleet,
    )
    assert entries[0].ca_file == tmp_path / "ca.pem" and entries[0].ssl_context is not None
    assert entries[1].ca_file is None and entries[1].ssl_context is None
    with pytest.raises(FleetError) as info:
        parse_fleet(
            '[[agent]]\nname = "c"\nurl = "https://10.0.0.3:8470"\ntoken = "t"\n'
            'ca = "/nope/ca.pem"\n',
            fleet,
        )
    assert str(info.value) == (
        f"{fleet}:5: agent[0].ca: /nope/ca.pem: cannot read the CA file: No such file or directory"
    )
    with pytest.raises(FleetError, match=r":4: agent\[0\]\.ca: only for https:// agents"):
        parse_fleet(
            '[[agent]]\nname = "d"\nurl = "http://10.0.0.4:8470"\nca = "ca.pem"\ntoken = "t"\n',
            fleet,
        )


def test_the_ssh_transport_reads_an_https_agents_certificate(pair: Pair, tmp_path: Path) -> None:
    """The script ssh runs, run here by sh: api.json's tls_cert comes back with it, and an
    https:// agent whose certificate cannot be read is refused (nothing to verify it by)."""
    data = tmp_path / "data"
    data.mkdir()
    publish(data, "https://0.0.0.0:8470", 5, tls_of(pair))
    (data / "api-token").write_text("tok\n")
    address = SshAddress("h", data_dir=str(data))
    out = subprocess.run(
        ["sh", "-c", remote_script(str(data), want_token=True)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    agent = parse_remote_output(address, out)
    assert (agent.host, agent.port, agent.token) == ("127.0.0.1", 8470, "tok")
    assert agent.cert_pem == pair.cert.read_text()
    assert client_context(pinned_pem=agent.cert_pem).verify_mode == ssl.CERT_REQUIRED
    pair.cert.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway
        out = subprocess.run(
            ["sh", "-c", remote_script(str(data), want_token=True)], capture_output=True, text=True
        ).stdout
        with pytest.raises(AgentError, match=r"its certificate .* cannot be read through ssh"):
            parse_remote_output(address, out)
    no_cert = f'vigil-dir {data}\nvigil-api {{"url": "https://127.0.0.1:1"}}\nvigil-token t\n'
    with pytest.raises(AgentError, match=r"certificate \(api\.json names none\) cannot be read"):
        parse_remote_output(address, no_cert)
