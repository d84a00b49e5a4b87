"""An agent serving HTTPS reached through a real sshd (issue 17): the fleet's ssh transport
reads the agent's certificate with api.json and trusts exactly it, speaking TLS over the
forwarded unix socket."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from storage.tlstrust import client_context
from tests.helpers import running_agent, write_config
from tests.sshd import HOST_ALIAS, running_sshd, sshd_missing
from tests.tls_support import write_pair
from tui.fleet import load_fleet
from tui.remote.client import AgentClient, AgentError
from tui.view.fleetview import FleetMember

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sshd_missing() is not None, reason=sshd_missing() or ""),
]


async def test_an_https_agent_over_ssh_is_verified_by_its_own_certificate(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    pair = write_pair(ca, tmp_path / "tls")
    cfg = write_config(tmp_path, f'[agent.tls]\ncert = "{pair.cert}"\nkey = "{pair.key}"\n')
    with running_sshd(tmp_path) as sshd, running_agent(cfg) as agent:
        assert agent.url.startswith("https://")
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(
            f'[defaults]\nssh_options = ["-F", "{sshd.client_config}"]\n\n'
            f'[[agent]]\nname = "tls-over-ssh"\nurl = "ssh://{HOST_ALIAS}"\n'
            f'data_dir = "{agent.data_dir}"\n',
            encoding="utf-8",
        )
        (member,) = [FleetMember(entry) for entry in load_fleet(fleet)]
        try:
            await member.poll()
            assert member.error is None, member.error
            assert member.summary is not None
            client = member.client
            assert client is not None and client.ssl_context is not None
            assert not client.ssl_context.check_hostname  # pinned: the certificate itself
            assert (await client.status()).host == "test-host"
            port = agent.url.rsplit(":", 1)[1]
            assert f"target 127.0.0.1 port {port}" in sshd.log()

            # Through the same forward, a pin on another certificate (same CA) is refused.
            tunnel = member.tunnel
            assert tunnel is not None and tunnel.socket_path is not None
            stranger = write_pair(ca, tmp_path / "stranger")
            other = AgentClient(
                agent.url,
                agent.token,
                unix_socket=str(tunnel.socket_path),
                ssl_context=client_context(pinned_pem=stranger.cert.read_text()),
            )
            try:
                with pytest.raises(
                    AgentError,
                    match=r"is not trusted: (certificate verify failed|unable to get local issuer)",
                ):
                    await other.status()
            finally:
                await other.aclose()
        finally:
            await member.aclose()
