"""TLS end to end (issue 17): a real ``vigil agent run`` serving HTTPS on 127.0.0.1 with a
throwaway certificate; ``vigil status`` with the CA (``--ca``, ``$VIGIL_CA``, the local agent's
own certificate through api.json) and refused without it; the TUI's fleet client with the fleet
file's ``ca``; the certificate renewed on disk and served to the next connection, and a broken
renewal refused with the running certificate kept."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.helpers import RunningAgent, child_env, running_agent, vigil_cmd, wait_for, write_config
from tests.tls_support import Pair, peer_sha256, write_atomic, write_ca, write_pair
from tui.fleet import load_fleet
from tui.view.fleetview import FleetMember

pytestmark = pytest.mark.integration


def vigil(*args: str, ca_env: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = child_env()
    env.pop("VIGIL_CA", None)
    env.pop("VIGIL_TOKEN", None)
    if ca_env is not None:
        env["VIGIL_CA"] = str(ca_env)
    return subprocess.run(
        vigil_cmd(*args), capture_output=True, text=True, env=env, timeout=60, check=False
    )


def events(agent: RunningAgent, ca_file: Path, kind: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(
        f"{agent.url}/api/v1/events?kind={kind}", headers={"Authorization": f"Bearer {agent.token}"}
    )
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        return list(json.loads(resp.read())["events"])


def port_of(agent: RunningAgent) -> int:
    return int(agent.url.rsplit(":", 1)[1])


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_agent_config(tmp_path: Path, pair: Pair) -> Path:
    return write_config(tmp_path, f'[agent.tls]\ncert = "{pair.cert}"\nkey = "{pair.key}"\n')


def test_status_and_the_tui_verify_the_agent(ca: trustme.CA, tmp_path: Path) -> None:
    pair = write_pair(ca, tmp_path / "tls")
    ca_file = write_ca(ca, tmp_path / "ca.pem")
    cfg = tls_agent_config(tmp_path, pair)
    with running_agent(cfg) as agent:
        assert agent.url.startswith("https://127.0.0.1:")
        info = json.loads((agent.data_dir / "api.json").read_text())
        assert info["tls_cert"] == str(pair.cert)
        assert peer_sha256("127.0.0.1", port_of(agent), ca_file) == pair.sha256
        token = str(agent.data_dir / "api-token")

        out = vigil("status", "--url", agent.url, "--token-file", token, "--ca", str(ca_file))
        assert out.returncode == 0, out.stderr
        assert "host test-host" in out.stdout
        out = vigil("status", "--url", agent.url, "--token-file", token, ca_env=ca_file)
        assert out.returncode == 0, out.stderr
        # The local agent, found through api.json: trusted by the certificate it names.
        out = vigil("status", "--config", str(cfg))
        assert out.returncode == 0, out.stderr

        out = vigil("status", "--url", agent.url, "--token-file", token)
        assert out.returncode == 1
        netloc = agent.url.removeprefix("https://")
        assert out.stderr.strip() == (
            f"vigil: cannot connect to {agent.url}: the TLS certificate of {netloc} is not "
            "trusted: unable to get local issuer certificate (pass --ca FILE or set VIGIL_CA "
            "to the CA that issued it)"
        )
        out = vigil("status", "--url", f"http://{netloc}", "--token-file", token)
        assert out.returncode == 1
        assert "closed the connection without answering (does it serve HTTPS?" in out.stderr
        out = vigil("status", "--url", agent.url, "--token-file", token, "--ca", token)
        assert out.returncode == 2
        assert "holding no PEM certificate" in out.stderr

        # The TUI's fleet client: with the fleet file's ca, and without.
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(
            f'[defaults]\ntoken_file = "{token}"\n\n'
            f'[[agent]]\nname = "trusted"\nurl = "{agent.url}"\nca = "ca.pem"\n\n'
            f'[[agent]]\nname = "untrusted"\nurl = "{agent.url}"\n',
            encoding="utf-8",
        )

        async def poll_all() -> list[FleetMember]:
            members = [FleetMember(entry) for entry in load_fleet(fleet)]
            try:
                for member in members:
                    await member.poll()
            finally:
                for member in members:
                    await member.aclose()
            return members

        trusted, untrusted = asyncio.run(poll_all())
        assert trusted.error is None and trusted.summary is not None
        assert untrusted.summary is None and untrusted.error is not None
        assert untrusted.error.message.startswith(
            f"the TLS certificate of {netloc} is not trusted: unable to get local issuer"
        )
        assert "set ca to the CA that issued it" in untrusted.error.message


def test_a_renewed_certificate_is_served_and_a_broken_one_refused(
    ca: trustme.CA, tmp_path: Path
) -> None:
    pair = write_pair(ca, tmp_path / "tls")
    ca_file = write_ca(ca, tmp_path / "ca.pem")
    with running_agent(tls_agent_config(tmp_path, pair)) as agent:
        port = port_of(agent)
        assert peer_sha256("127.0.0.1", port, ca_file) == pair.sha256

        renewed = write_pair(ca, tmp_path / "tls")  # the same paths, replaced by rename
        wait_for(
            lambda: peer_sha256("127.0.0.1", port, ca_file) == renewed.sha256,
            timeout=20,
            what="the renewed certificate on a new connection",
        )
        reloaded = wait_for(lambda: events(agent, ca_file, "api.tls_reloaded"), what="the event")
        assert reloaded[0]["data"]["sha256"] == renewed.sha256
        assert reloaded[0]["data"]["previous_sha256"] == pair.sha256

        # A broken renewal: a key that belongs to another certificate.
        stranger = write_pair(ca, tmp_path / "stranger")
        write_atomic(renewed.key, stranger.key.read_bytes(), 0o600)
        refused = wait_for(
            lambda: events(agent, ca_file, "api.tls_reload_refused"), what="the refusal"
        )
        assert refused[0]["data"]["field"] == "agent.tls.key"
        assert "is not the key of the certificate" in refused[0]["data"]["reason"]
        assert peer_sha256("127.0.0.1", port, ca_file) == renewed.sha256
        assert "api certificate reload refused" in agent.log()
        assert os.stat(renewed.key).st_mode & 0o777 == 0o600


def test_check_config_refuses_a_plain_listen_beyond_loopback(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.toml"
    cfg.write_text('[agent]\nlisten = "0.0.0.0:8470"\n', encoding="utf-8")
    out = vigil("agent", "check-config", "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.startswith(
        f"vigil: config refused: {cfg}:2: agent.listen: '0.0.0.0:8470' is reachable from other "
        "hosts"
    )
    cfg.write_text(
        '[agent]\nlisten = "0.0.0.0:8470"\nallow_insecure_listen = true\n', encoding="utf-8"
    )
    out = vigil("agent", "check-config", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
