"""One host, live: its resources, its probed models and its supervised processes.

A timer starts a status fetch every ``refresh_s``; the fetch runs in a worker that ends by
posting :class:`HostScreen.StatusFetched` or :class:`HostScreen.FetchFailed`, and the handlers
only set reactives, which the widgets are bound to. A failed fetch keeps the last data on
screen and says how old it is.

It is also where triage starts: ``enter`` on a model or a process opens its view, ``i`` and
``e`` open incidents and events, ``/`` filters both tables, and the process and probe actions
work on the row under the cursor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input
from textual.worker import Worker

from storage.records import AgentStatus, SeriesPoint
from tui.remote.client import AgentClient, AgentError
from tui.screens.base import ActionScreen
from tui.view.actions import OperatorAction, Verb, report_path
from tui.widgets.filterbar import FilterInput
from tui.widgets.header import CONNECTED, CONNECTING, ConnectionHeader
from tui.widgets.resources import ResourcesPanel
from tui.widgets.tables import ModelsTable, ProcessesTable, StatusTable, name_of

CPU_HISTORY_LEN = 60
"""How many total-CPU samples the sparkline keeps (a minute at the default refresh)."""


class HostScreen(ActionScreen):
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

    AUTO_FOCUS = "#models"

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "refresh_now", "Refresh", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("i", "incidents", "Incidents"),
        Binding("e", "events", "Events"),
        # Hidden from the footer (full at 80 columns); listed by ``?``.
        Binding("a", "alerts", "Alerts", show=False),
        Binding("d", "deployments", "Deployments", show=False),
        Binding("x", "export_report", "Report"),
        Binding("p", "probe", "Probe"),
        Binding("s", "process('start')", "Start"),
        Binding("t", "process('stop')", "Stop"),
        Binding("R", "process('restart')", "Restart"),
        Binding("u", "process('release')", "Release"),
    ]
    OPERATE = frozenset({"probe", "process"})

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
        super().__init__(client)
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
        yield FilterInput("filter models and processes by name…", id="filter")
        models = ModelsTable(id="models").data_bind(HostScreen.status)
        models.border_title = "models"
        yield models
        processes = ProcessesTable(id="processes").data_bind(HostScreen.status)
        processes.border_title = "processes"
        yield processes
        yield Footer()

    history_done = False
    """Whether the CPU history fetch has answered (tests wait on it for stable pictures)."""

    def on_mount(self) -> None:
        """Fetch now and then every ``refresh_s``; pre-fill the CPU sparkline; learn the
        token's scope so actions a read-only token may not take are hidden."""
        self.start_fetch()
        self._timer = self.set_interval(self.refresh_s, self.start_fetch)
        self.fetch_cpu_history()
        if self.client.scope is None:
            self.fetch_scope()

    def on_screen_suspend(self) -> None:
        """Another view is on top: stop fetching what nobody sees (the CPU sparkline pauses)."""
        self._timer.pause()

    def on_screen_resume(self) -> None:
        """Shown again: fetch at once, then on the timer."""
        self._timer.resume()
        self.start_fetch()

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
            self.history_done = True
            return
        self.post_message(self.HistoryFetched(points))

    @work(group="whoami")
    async def fetch_scope(self) -> None:
        """Ask the agent what the token may do; refresh the keys shown once known."""
        try:
            await self.client.whoami()
        except AgentError as exc:
            # Unknown scope: actions stay offered and the agent refuses them if it must.
            self.log.warning(f"token scope unknown: {exc.message}")
            return
        self.post_message(self.ScopeLearned())

    class ScopeLearned(Message):
        """The token's scope is now known (see ``AgentClient.scope``)."""

    @on(ScopeLearned)
    def scope_learned(self) -> None:
        """Show or hide the actions on whichever view is on top."""
        self.app.screen.refresh_bindings()
        self.refresh_bindings()

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
        self.history_done = True

    # --- triage: navigation, filter and actions on the row under the cursor --------------

    def _selected(self, table_id: str) -> str | None:
        """The name in the row under the cursor of ``#models`` or ``#processes``."""
        table = self.query_one(f"#{table_id}", StatusTable)
        key = table.selected_key
        return None if key is None else name_of(key)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Row actions show only while their table has the focus; ``esc`` only with a filter
        or a view to go back to; operate actions hide with a read-only token."""
        if super().check_action(action, parameters) is False:
            return False
        if not self.is_mounted:
            return True
        focused = self.focused.id if self.focused is not None else None
        if action == "probe":
            return focused == "models"
        if action == "process":
            return focused == "processes"
        if action == "back":
            filtering = bool(self.query_one("#filter", FilterInput).value)
            return filtering or len(self.app.screen_stack) > 1
        return True

    def on_descendant_focus(self) -> None:
        """The row actions in the footer follow the focused table."""
        self.refresh_bindings()

    def action_back(self) -> None:
        """Clear the filter first; then back to the screen below (a fleet), if any."""
        line = self.query_one("#filter", FilterInput)
        if line.value or line.has_class("-open"):
            line.action_clear_filter()
            return
        super().action_back()

    def action_filter(self) -> None:
        """``/``: open the filter line."""
        self.query_one("#filter", FilterInput).open()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        """Narrow both tables as the operator types."""
        for table in self.query(StatusTable):
            table.filter_text = event.value
        self.refresh_bindings()

    @on(FilterInput.Closed)
    def filter_closed(self) -> None:
        """Back to the models table (or processes, when no model matches)."""
        models = self.query_one("#models", StatusTable)
        target = models if models.row_count else self.query_one("#processes", StatusTable)
        target.focus()

    @on(DataTable.RowSelected)
    def row_selected(self, event: DataTable.RowSelected) -> None:
        """``enter`` (or a click on the selected row) opens the model's or process's view."""
        key = event.row_key.value
        if key is None:
            return
        if event.data_table.id == "models":
            self.open_model(name_of(key))
        elif event.data_table.id == "processes":
            self.open_process(name_of(key))

    def go_home(self) -> None:
        """Close the views above this one."""
        while self.app.screen is not self and self in self.app.screen_stack:
            self.app.pop_screen()

    def go(self, screen: Screen[None]) -> None:
        """Show ``screen`` right above this one (k9s replaces the view rather than stacking)."""
        self.go_home()
        self.app.push_screen(screen)

    def open_model(self, name: str) -> None:
        """The model's view: latency charts, errors, runs, incidents, deployments."""
        from tui.screens.model import ModelScreen

        self.go(ModelScreen(self.client, name, self.refresh_s))

    def open_process(self, name: str) -> None:
        """The process's view: state, restarts and why, the live log tail."""
        from tui.screens.process import ProcessScreen

        self.go(ProcessScreen(self.client, name, self.refresh_s))

    def open_incidents(self, state: str | None = None) -> None:
        """The incidents of this host."""
        from tui.screens.incidents import IncidentsScreen

        self.go(IncidentsScreen(self.client, self.refresh_s, state=state))

    def open_events(self, kind: str = "", subject: str = "") -> None:
        """The audit trail, optionally filtered."""
        from tui.screens.events import EventsScreen

        self.go(EventsScreen(self.client, self.refresh_s, kind=kind, subject=subject))

    def open_alerts(self) -> None:
        """The alerts of this host, its silences and delivery health."""
        from tui.screens.alerts import AlertsScreen

        self.go(AlertsScreen(self.client, self.refresh_s))

    def open_deployments(self, model: str | None = None) -> None:
        """The deployments of this host (or of one model), their progress and versions."""
        from tui.screens.deploys import DeploymentsScreen

        self.go(DeploymentsScreen(self.client, self.refresh_s, model=model))

    def action_deployments(self) -> None:
        """``d``."""
        self.open_deployments()

    def action_alerts(self) -> None:
        """``a``."""
        self.open_alerts()

    def action_incidents(self) -> None:
        """``i``."""
        self.open_incidents()

    def action_events(self) -> None:
        """``e``."""
        self.open_events()

    def action_probe(self) -> None:
        """``p``: probe the model under the cursor now."""
        name = self._selected("models")
        if name is not None:
            self.request_action(OperatorAction("probe", name))

    def action_process(self, verb: Verb) -> None:
        """``s``/``t``/``R``/``u``: start, stop, restart or release the process under the
        cursor."""
        name = self._selected("processes")
        if name is not None:
            self.request_action(OperatorAction(verb, name))

    def action_export_report(self) -> None:
        """``x``: save the agent's HTML report to the home directory."""
        host = self.status.host if self.status is not None else "host"
        self.request_action(OperatorAction("export", host, path=report_path(Path.home(), host)))


if TYPE_CHECKING:
    from tui.screens.nav import HostNavigator

    # mypy checks here that the host screen is what the jump palette looks for.
    _NAVIGATOR: type[HostNavigator] = HostScreen
