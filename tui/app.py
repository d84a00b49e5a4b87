"""The Vigil TUI application: the App, its bindings, and the entry point the CLI calls."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from tui.client import AgentClient
from tui.screens.host import HostScreen


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


def run_tui(url: str, token: str, refresh_s: float = 1.0) -> None:
    """Run the TUI against one agent until the user quits.

    Args:
        url: The agent's base URL, e.g. ``http://127.0.0.1:9470``.
        token: A bearer token with at least the ``read`` scope.
        refresh_s: Seconds between status fetches.
    """
    VigilApp(AgentClient(url, token), refresh_s=refresh_s).run()
