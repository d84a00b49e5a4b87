"""The fleet through a real sshd (Debian's openssh-server) on loopback, with throwaway keys.

The TUI side never uses the agent's TCP port: it reads api.json and the token over ssh, then
talks HTTP over a unix socket that ``ssh -L`` forwards; sshd's own log shows the forward
reaching the agent's port.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RunningAgent, running_agent, write_config
from tests.sshd import HOST_ALIAS, Sshd, running_sshd, sshd_missing
from tests.tui.test_fleet_screen import fleet, rows, state, wait_for
from tui.app import FleetApp
from tui.fleet import FleetEntry, load_fleet
from tui.remote import transport
from tui.screens.fleet import FleetScreen
from tui.screens.host import HostScreen
from tui.view.fleetview import FleetMember

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sshd_missing() is not None, reason=sshd_missing() or ""),
]


@pytest.fixture(scope="module")
def sshd_and_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sshd, RunningAgent]]:
    """One sshd and one agent for the module: each takes seconds to start on a busy machine."""
    tmp = tmp_path_factory.mktemp("ssh")
    with running_sshd(tmp) as sshd, running_agent(write_config(tmp)) as agent:
        yield sshd, agent


async def test_fleet_reaches_an_agent_through_the_users_ssh(
    tmp_path: Path, sshd_and_agent: tuple[Sshd, RunningAgent]
) -> None:
    sshd, agent = sshd_and_agent
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(
        f"""
[defaults]
# Users rely on their ~/.ssh/config; the test brings its own.
ssh_options = ["-F", "{sshd.client_config}"]

[[agent]]
name = "over-ssh"
url = "ssh://{HOST_ALIAS}"
data_dir = "{agent.data_dir}"

[[agent]]
name = "no-agent-there"
url = "ssh://{HOST_ALIAS}{tmp_path}/nothing"
"""
    )
    members = [FleetMember(e) for e in load_fleet(fleet_file)]
    over_ssh, no_agent = members
    app = FleetApp(members, refresh_s=0.25)
    async with app.run_test(size=(160, 24)) as pilot:
        await wait_for(pilot, lambda: state(app, "over-ssh") == "ok", timeout_s=30)
        await wait_for(pilot, lambda: state(app, "no-agent-there") == "not found", timeout_s=30)
        assert "no api.json in" in rows(app)["no-agent-there"][11]

        tunnel = over_ssh.tunnel
        assert tunnel is not None and over_ssh.client is not None
        # The token came through ssh (the operate one: api-token is readable).
        assert over_ssh.client._token == agent.token
        assert over_ssh.client.unix_socket == tunnel.socket_path
        port = agent.url.rsplit(":", 1)[1]
        assert f"target 127.0.0.1 port {port}" in sshd.log()
        assert os.stat(str(tunnel.socket_path)).st_mode & 0o077 == 0

        # The forward dies: the row says so, then the next poll sets it up again.
        assert tunnel._proc is not None
        first_pid = tunnel._proc.pid
        os.kill(first_pid, signal.SIGKILL)
        await wait_for(
            pilot,
            lambda: tunnel._proc is not None and tunnel._proc.pid != first_pid and tunnel.is_up,
            timeout_s=30,
        )
        await wait_for(pilot, lambda: state(app, "over-ssh") == "ok", timeout_s=30)

        fleet(app).table.move_cursor(row=fleet(app).table.keys().index("over-ssh"))
        await pilot.press("enter")
        assert isinstance(app.screen, HostScreen)
        await wait_for(pilot, lambda: app.screen.status is not None)  # type: ignore[attr-defined]
        assert app.screen.status.host == "test-host"  # type: ignore[attr-defined]
        await pilot.press("escape")
        assert isinstance(fleet(app), FleetScreen)
        socket_dir = os.path.dirname(str(tunnel.socket_path))
    # Quitting stops every ssh child and removes the socket's directory.
    assert not transport._LIVE
    assert not os.path.exists(socket_dir)


async def test_url_ssh_opens_the_host_screen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sshd_and_agent: tuple[Sshd, RunningAgent]
) -> None:
    """``vigil tui --url ssh://...``: a fleet of one that opens its host screen once up;
    ``$VIGIL_SSH_COMMAND`` carries the ssh options, as ``GIT_SSH_COMMAND`` does for git."""
    sshd, agent = sshd_and_agent
    monkeypatch.setenv(transport.SSH_COMMAND_ENV, f"ssh -F '{sshd.client_config}'")
    # The data dir in the address's path; the read token from a file of ours.
    token_file = tmp_path / "read-token"
    token_file.write_text((agent.data_dir / "api-token.read").read_text())
    entry = FleetEntry(
        name=HOST_ALIAS,
        url=f"ssh://{sshd.user}@{HOST_ALIAS}{agent.data_dir}",
        token=token_file.read_text().strip(),
    )
    app = FleetApp([FleetMember(entry)], refresh_s=0.25, auto_open=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen), timeout_s=30)
        await wait_for(pilot, lambda: app.screen.status is not None)  # type: ignore[attr-defined]
        assert app.screen.status.host == "test-host"  # type: ignore[attr-defined]
        assert app.members[0].client is not None
        assert app.members[0].client._token == token_file.read_text().strip()
        await pilot.press("q")
    assert not transport._LIVE
