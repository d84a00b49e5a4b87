"""The host's incidents, open, acknowledged or resolved; acknowledge and resolve them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static, Tab, Tabs

from storage.records import Incident
from tui.remote.client import AgentClient
from tui.screens.base import FilteredListScreen
from tui.view.actions import OperatorAction
from tui.view.fmt import clean, safe
from tui.view.rows import incident_detail, incident_row
from tui.widgets.filterbar import FilterInput
from tui.widgets.incidents import IncidentsTable

STATES = ("all", "open", "acknowledged", "resolved")


@dataclass(frozen=True, slots=True)
class IncidentsData:
    """The incidents in the chosen state, and the agent's clock and host name."""

    now_ms: int
    host: str
    incidents: list[Incident] = field(default_factory=list)


def incident_matches(inc: Incident, needle: str) -> bool:
    """Whether ``needle`` (case-folded) is in the incident's subject, kind, cause or people."""
    if not needle:
        return True
    hay = " ".join(
        (
            f"#{inc.id}",
            inc.subject,
            inc.kind,
            inc.severity,
            inc.cause,
            inc.acknowledged_by or "",
            inc.resolved_by or "",
        )
    )
    return needle in clean(hay, 2000).casefold()


class IncidentsScreen(FilteredListScreen):
    """Incidents, newest first, by state (tabs or ``1``-``4``), filtered with ``/``.

    Args:
        client: The agent's client.
        refresh_s: Seconds between fetches.
        state: The tab to start on (``open``...); None shows all.
    """

    DEFAULT_CSS = """
    IncidentsScreen Tabs {
        height: 2;
    }
    IncidentsScreen IncidentsTable {
        height: 1fr;
    }
    IncidentsScreen #detail {
        max-height: 5;
    }
    """

    AUTO_FOCUS = "#incidents-table"
    """The list takes the keys (j/k) from the start."""

    BINDINGS = [
        Binding("a", "incident('acknowledge')", "Acknowledge"),
        Binding("c", "incident('resolve')", "Resolve"),
        Binding("slash", "filter", "Filter"),
        Binding("1", "state('all')", "All", show=False),
        Binding("2", "state('open')", "Open", show=False),
        Binding("3", "state('acknowledged')", "Acknowledged", show=False),
        Binding("4", "state('resolved')", "Resolved", show=False),
    ]
    OPERATE = frozenset({"incident"})

    def __init__(
        self, client: AgentClient, refresh_s: float = 1.0, state: str | None = None
    ) -> None:
        super().__init__(client, refresh_s)
        self.state = state if state in STATES else "all"
        self._data: IncidentsData | None = None
        self._by_key: dict[str, Incident] = {}

    def compose(self) -> ComposeResult:
        """Title, problem line, state tabs, filter, table, detail, footer."""
        yield Static(Text("incidents"), classes="title", id="title")
        yield Static(classes="problem", id="problem")
        yield Tabs(*(Tab(s, id=s) for s in STATES), active=self.state, id="states")
        yield FilterInput("filter by subject, kind, cause, person…", id="filter")
        yield IncidentsTable(id="incidents-table")
        yield Static(Text("no incident selected", style="dim"), id="detail")
        yield Footer()

    async def gather(self) -> IncidentsData:
        """The agent's clock and host, and the incidents in the chosen state."""
        state = None if self.state == "all" else self.state
        status, incidents = await asyncio.gather(
            self.client.status(), self.client.incidents(state=state, limit=500)
        )
        return IncidentsData(status.now_ms, status.host, incidents)

    def show(self, data: Any) -> None:
        """Rows for the incidents that pass the filter; the detail of the one selected."""
        assert isinstance(data, IncidentsData)
        self._data = data
        title = Text("incidents", style="bold")
        title.append(" · ", style="dim")
        title.append_text(safe(data.host, max_len=64))
        title.append(f" · {self.state}", style="dim")
        self.query_one("#title", Static).update(title)
        needle = self.query_one("#filter", FilterInput).value.casefold()
        shown = [i for i in data.incidents if incident_matches(i, needle)]
        self._by_key = {str(i.id): i for i in shown}
        table = self.query_one("#incidents-table", IncidentsTable)
        table.sync_rows([(str(i.id), incident_row(i, data.now_ms)) for i in shown])
        if not shown:
            what = "no incidents" if self.state == "all" else f"no {self.state} incidents"
            table.border_subtitle = Text(f"{what} matching the filter" if needle else what)
        else:
            table.border_subtitle = ""
        self.show_detail()

    def selected(self) -> Incident | None:
        """The incident under the cursor."""
        key = self.query_one("#incidents-table", IncidentsTable).selected_key
        return None if key is None else self._by_key.get(key)

    def show_detail(self) -> None:
        """The whole story of the incident under the cursor."""
        inc = self.selected()
        detail = self.query_one("#detail", Static)
        if inc is None or self._data is None:
            detail.update(Text("no incident selected", style="dim"))
        else:
            detail.update(incident_detail(inc, self._data.now_ms))
        self.refresh_bindings()

    @on(DataTable.RowHighlighted)
    def row_highlighted(self) -> None:
        """Follow the cursor."""
        self.show_detail()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Acknowledge only open incidents, resolve only unresolved ones (dimmed otherwise)."""
        if super().check_action(action, parameters) is False:
            return False
        if action == "incident" and self.is_mounted:
            inc = self.selected()
            if inc is None:
                return None
            if parameters and parameters[0] == "acknowledge":
                return inc.state == "open" or None
            return inc.state != "resolved" or None
        return True

    def action_incident(self, verb: str) -> None:
        """``a``/``c``: acknowledge or resolve the incident under the cursor."""
        inc = self.selected()
        if inc is None:
            return
        self.request_action(
            OperatorAction("acknowledge" if verb == "acknowledge" else "resolve", str(inc.id))
        )

    def action_state(self, state: str) -> None:
        """``1``-``4``: all, open, acknowledged, resolved."""
        self.query_one("#states", Tabs).active = state

    @on(Tabs.TabActivated, "#states")
    def state_chosen(self, event: Tabs.TabActivated) -> None:
        """Fetch the incidents of the chosen state at once."""
        state = event.tab.id or "all"
        if state == self.state:
            return
        self.state = state
        self.query_one("#incidents-table", IncidentsTable).clear()
        self.start_fetch_now()

    def start_fetch_now(self) -> None:
        """Fetch even if a fetch is waiting: the state changed, its answer is stale."""
        self._fetch = self.fetch_data()
