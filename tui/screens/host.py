"""One host, live: its resources, its probed models and its supervised processes.

A timer starts a status fetch every ``refresh_s``; the fetch runs in a worker that ends by
posting :class:`HostScreen.StatusFetched` or :class:`HostScreen.FetchFailed`, and the handlers
only set reactives, which the widgets are bound to. A failed fetch keeps the last data on
screen and says how old it is.
"""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker

from storage.records import AgentStatus, SeriesPoint
from tui.client import AgentClient, AgentError
from tui.widgets.header import CONNECTED, CONNECTING, ConnectionHeader
from tui.widgets.resources import ResourcesPanel
from tui.widgets.tables import ModelsTable, ProcessesTable

CPU_HISTORY_LEN = 60
"""How many total-CPU samples the sparkline keeps (a minute at the default refresh)."""


class HostScreen(Screen[None]):
    """The live view of the one agent the client points at.

    Args:
        client: The agent's client; the app owns and closes it.
        refresh_s: Seconds between status fetches.
    """

    DEFAULT_CSS = """
    HostScreen {
        layout: vertical;
    }
    HostScreen #resources {
        border: round $primary 50%;
        border-title-color: $text-muted;
        padding: 0 1;
    }
    HostScreen StatusTable {
        border: round $primary 50%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
    }
    HostScreen StatusTable:focus {
        border: round $accent;
    }
    /* Models usually outnumber supervised processes. */
    HostScreen #models {
        height: 3fr;
    }
    HostScreen #processes {
        height: 2fr;
        min-height: 5;
    }
    """

    BINDINGS = [Binding("r", "refresh_now", "Refresh")]

    class StatusFetched(Message):
        """The agent answered a status request."""

        def __init__(self, status: AgentStatus) -> None:
            super().__init__()
            self.status = status

    class FetchFailed(Message):
        """A status request failed; ``error`` says why, fit for people."""

        def __init__(self, error: AgentError) -> None:
            super().__init__()
            self.error = error

    class HistoryFetched(Message):
        """Recent total-CPU points arrived to pre-fill the sparkline."""

        def __init__(self, points: list[SeriesPoint]) -> None:
            super().__init__()
            self.points = points

    url: reactive[str] = reactive("")
    """The agent's URL."""
    status: reactive[AgentStatus | None] = reactive(None)
    """The last status received; kept while the agent is unreachable."""
    connection: reactive[str] = reactive(CONNECTING)
    """``connecting``, ``connected``, or the last failure's kind (``unreachable``...)."""
    problem: reactive[str] = reactive("")
    """The last failure's message, empty while connected."""
    last_ok_at: reactive[float | None] = reactive(None)
    """``time.monotonic()`` of the last good answer."""
    cpu_history: reactive[tuple[float, ...]] = reactive(tuple)
    """Recent total CPU percentages, oldest first, at most :data:`CPU_HISTORY_LEN`."""

    def __init__(self, client: AgentClient, refresh_s: float = 1.0) -> None:
        super().__init__()
        self.client = client
        self.refresh_s = refresh_s
        self._fetch: Worker[None] | None = None
        self.set_reactive(HostScreen.url, client.url)

    def compose(self) -> ComposeResult:
        """Header, resources, models, processes, footer; the widgets follow our reactives."""
        yield ConnectionHeader(id="header").data_bind(
            HostScreen.url,
            HostScreen.status,
            HostScreen.connection,
            HostScreen.problem,
            HostScreen.last_ok_at,
        )
        resources = ResourcesPanel(id="resources").data_bind(
            HostScreen.status,
            HostScreen.cpu_history,
        )
        resources.border_title = "resources"
        yield resources
        models = ModelsTable(id="models").data_bind(HostScreen.status)
        models.border_title = "models"
        yield models
        processes = ProcessesTable(id="processes").data_bind(HostScreen.status)
        processes.border_title = "processes"
        yield processes
        yield Footer()

    def on_mount(self) -> None:
        """Fetch now and then every ``refresh_s``; pre-fill the CPU sparkline."""
        self.start_fetch()
        self.set_interval(self.refresh_s, self.start_fetch)
        self.fetch_cpu_history()

    def action_refresh_now(self) -> None:
        """Fetch without waiting for the timer."""
        self.start_fetch()

    def start_fetch(self) -> None:
        """Start a status fetch unless one is still waiting for its answer.

        Skipping (rather than letting ``exclusive`` cancel the waiting one) matters when the
        agent hangs: a fetch cancelled every tick would never reach its timeout, so the screen
        would never learn that the agent is gone.
        """
        if self._fetch is not None and not self._fetch.is_finished:
            return
        self._fetch = self.fetch_status()

    @work(exclusive=True, group="status")
    async def fetch_status(self) -> None:
        """Ask the agent for its status; post what happened."""
        try:
            status = await self.client.status()
        except AgentError as exc:
            self.post_message(self.FetchFailed(exc))
            return
        self.post_message(self.StatusFetched(status))

    @work(exclusive=True, group="history")
    async def fetch_cpu_history(self) -> None:
        """Ask for the last minute of total CPU so the sparkline does not start empty."""
        window_s = max(1, round(CPU_HISTORY_LEN * self.refresh_s))
        try:
            points = await self.client.series(
                "host.cpu.percent",
                since=f"-{window_s}s",
                step=max(1, round(self.refresh_s * 1000)),
            )
        except AgentError as exc:
            # Only a nicety: the live values fill the sparkline anyway.
            self.log.warning(f"cpu history unavailable: {exc.message}")
            return
        self.post_message(self.HistoryFetched(points))

    @on(StatusFetched)
    def status_fetched(self, message: StatusFetched) -> None:
        """Show the new status and note the CPU value for the sparkline."""
        self.status = message.status
        self.connection = CONNECTED
        self.problem = ""
        self.last_ok_at = time.monotonic()
        cpu = message.status.resource("host.cpu.percent")
        if cpu is not None:
            self.cpu_history = (*self.cpu_history, cpu)[-CPU_HISTORY_LEN:]

    @on(FetchFailed)
    def fetch_failed(self, message: FetchFailed) -> None:
        """Keep the last data; say what is wrong."""
        self.connection = message.error.kind
        self.problem = message.error.message

    @on(HistoryFetched)
    def history_fetched(self, message: HistoryFetched) -> None:
        """Put the older points in front of the live ones already collected."""
        older = tuple(p.avg for p in message.points)
        self.cpu_history = (*older, *self.cpu_history)[-CPU_HISTORY_LEN:]
