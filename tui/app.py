"""The Vigil TUI application: the App, its bindings, and the entry point the CLI calls."""

from __future__ import annotations

import asyncio
import ssl
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from tui.fleet import FleetEntry, FleetError, load_fleet
from tui.remote.client import AgentClient
from tui.remote.ssh import SshAddress
from tui.screens.fleet import FleetScreen
from tui.screens.host import HostScreen
from tui.view.fleetview import FleetMember

__all__ = ["FleetApp", "FleetError", "VigilApp", "run_fleet_tui", "run_ssh_tui", "run_tui"]


def vigil_version() -> str:
    """The installed Vigil version, or ``dev`` when running from a source tree."""
    try:
        return version("vigil")
    except PackageNotFoundError:
        return "dev"


class VigilApp(App[None]):
    """Watches one agent, starting on its host screen.

    Args:
        client: How to reach the agent. The app owns it and closes it on exit.
        refresh_s: Seconds between status fetches.
    """

    CSS_PATH = "app.tcss"
    TITLE = "Vigil"
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(self, client: AgentClient, refresh_s: float = 1.0) -> None:
        super().__init__()
        self.client = client
        self.refresh_s = refresh_s
        self.sub_title = f"tui {vigil_version()}"

    def get_default_screen(self) -> Screen[None]:
        """The host screen is the base of the stack."""
        return HostScreen(self.client, self.refresh_s)

    async def on_unmount(self) -> None:
        """Close the HTTP session while the loop that owns it still runs."""
        await self.client.aclose()


def run_tui(
    url: str, token: str, refresh_s: float = 1.0, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Run the TUI against one agent until the user quits.

    Args:
        url: The agent's base URL, e.g. ``http://127.0.0.1:9470``.
        token: A bearer token with at least the ``read`` scope.
        refresh_s: Seconds between status fetches.
        ssl_context: Verifies an ``https://`` agent (None: the system's CAs).
    """
    VigilApp(AgentClient(url, token, ssl_context=ssl_context), refresh_s=refresh_s).run()


class FleetApp(App[None]):
    """Watches many agents, starting on the fleet table; ``enter`` opens a host screen and
    ``escape`` comes back.

    Args:
        members: The agents. The app owns them: it closes their clients and ssh forwards on
            exit.
        refresh_s: Seconds between polls of each agent.
        auto_open: With a single agent, open its host screen as soon as it answers.
        remember_as: The name the fleet view's grouping is remembered under between runs
            (the fleet file's path; None: not remembered).
    """

    CSS_PATH = "app.tcss"
    TITLE = "Vigil"
    BINDINGS = [Binding("q", "quit", "Quit"), Binding("escape", "back", "Fleet")]

    def __init__(
        self,
        members: list[FleetMember],
        refresh_s: float = 1.0,
        auto_open: bool = False,
        remember_as: str | None = None,
    ) -> None:
        super().__init__()
        self.members = members
        self.refresh_s = refresh_s
        self.auto_open = auto_open
        self.remember_as = remember_as
        self.sub_title = f"tui {vigil_version()} - fleet of {len(members)}"

    def get_default_screen(self) -> Screen[None]:
        """The fleet screen is the base of the stack."""
        return FleetScreen(
            self.members, self.refresh_s, auto_open=self.auto_open, remember_as=self.remember_as
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``escape`` means back only above the fleet screen."""
        if action == "back":
            return len(self.screen_stack) > 1
        return True

    async def action_back(self) -> None:
        """Back to the screen below (the fleet, from a host)."""
        if len(self.screen_stack) > 1:
            await self.pop_screen()

    async def on_unmount(self) -> None:
        """Close every client and stop every ssh forward while the loop still runs."""
        await asyncio.gather(*(m.aclose() for m in self.members), return_exceptions=True)


def run_fleet_tui(fleet_file: Path, refresh_s: float = 1.0) -> None:
    """Run the fleet TUI on the agents of a fleet file until the user quits.

    Raises:
        FleetError: the file is unusable (before anything is shown).
    """
    members = [FleetMember(entry) for entry in load_fleet(fleet_file)]
    FleetApp(members, refresh_s=refresh_s, remember_as=str(fleet_file.resolve())).run()


def run_ssh_tui(url: str, token: str | None = None, refresh_s: float = 1.0) -> None:
    """Run the TUI on one agent reached through ssh (``ssh://[user@]host[:port][/data/dir]``).

    The host screen opens once the forward is up; until then (or when ssh fails) a fleet of
    one shows what is happening.

    Raises:
        FleetError: ``url`` is not a valid ssh address.
    """
    try:
        address = SshAddress.parse(url)
    except ValueError as exc:
        raise FleetError(f"--url: {exc}") from None
    entry = FleetEntry(name=address.destination, url=url, token=token)
    FleetApp([FleetMember(entry)], refresh_s=refresh_s, auto_open=True).run()
