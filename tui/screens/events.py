"""The audit trail: events newest first, filtered by kind (a prefix) and subject (exact) on
the agent, and searched (``/``) over kind, subject, message and data here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Input, Label, Static

from storage.records import Event
from tui.remote.client import AgentClient
from tui.screens.base import TriageScreen
from tui.view.fmt import clean
from tui.view.rows import event_detail, event_matches, event_row
from tui.widgets.tables import KeyedTable

EVENT_LIMIT = 500
"""Events fetched per refresh (the API allows 1000)."""


@dataclass(frozen=True, slots=True)
class EventsData:
    """The events that passed the agent-side filters, newest first."""

    kind: str
    subject: str
    events: list[Event] = field(default_factory=list)


class EventsTable(KeyedTable):
    """Audit events, newest first."""

    COLUMNS = (("time", "time"), ("kind", "kind"), ("subject", "subject"), ("message", "message"))


class EventsScreen(TriageScreen):
    """The audit trail of the agent.

    Args:
        client: The agent's client.
        refresh_s: Seconds between fetches.
        kind: Start filtered to kinds with this prefix (``process.``).
        subject: Start filtered to this exact subject (``model:iris``).
    """

    DEFAULT_CSS = """
    EventsScreen #filters {
        height: 1;
        background: $panel;
    }
    EventsScreen #filters Label {
        padding: 0 1;
        color: $text-muted;
    }
    EventsScreen #filters Input {
        width: 1fr;
        height: 1;
        border: none;
        padding: 0;
        background: $boost;
    }
    EventsScreen #filters Input:focus {
        border: none;
        background: $accent 30%;
    }
    /* An empty filter's hint must not read as a filter in force: dim italic words that say
       "no filter" (a filter in force shows in the title too). */
    EventsScreen #filters Input > .input--placeholder {
        color: $text-disabled;
        text-style: italic;
    }
    EventsScreen EventsTable {
        height: 1fr;
    }
    EventsScreen #detail {
        height: auto;
        max-height: 4;
        padding: 0 1;
        background: $panel;
    }
    """

    AUTO_FOCUS = "#events-table"
    """The list takes the keys (j/k) from the start."""

    BINDINGS = [
        Binding("slash", "focus_filter('search')", "Search"),
        Binding("f", "focus_filter('kind')", "Kind"),
        Binding("b", "focus_filter('subject')", "Subject"),
    ]

    def __init__(
        self, client: AgentClient, refresh_s: float = 1.0, kind: str = "", subject: str = ""
    ) -> None:
        super().__init__(client, refresh_s)
        self.kind = kind
        self.subject = subject
        self._data: EventsData | None = None
        self._by_key: dict[str, Event] = {}

    def compose(self) -> ComposeResult:
        """Title, problem line, the three filters, table, detail, footer."""
        yield Static(Text("events"), classes="title", id="title")
        yield Static(classes="problem", id="problem")
        with Horizontal(id="filters"):
            # Placeholders say what an empty field means, never an example value: a hint such
            # as "model:iris" looked like a subject filter in force. Examples are tooltips.
            yield Label("kind")
            yield Input(
                self.kind,
                placeholder="all · f",
                tooltip="f: a kind prefix, e.g. process. or model.state",
                id="kind",
            )
            yield Label("subject")
            yield Input(
                self.subject,
                placeholder="all · b",
                tooltip="b: an exact subject, e.g. model:iris or process:vllm",
                id="subject",
            )
            yield Label("search")
            yield Input(placeholder="none · /", tooltip="/: any text, searched here", id="search")
        yield EventsTable(id="events-table")
        yield Static(Text("no event selected", style="dim"), id="detail")
        yield Footer()

    async def gather(self) -> EventsData:
        """The newest events that match kind and subject (the agent filters those)."""
        kind, subject = self.kind, self.subject
        events = await self.client.events(
            limit=EVENT_LIMIT, kind=kind or None, subject=subject or None
        )
        return EventsData(kind, subject, events)

    def show(self, data: Any) -> None:
        """The events that match the search; the detail of the one under the cursor."""
        assert isinstance(data, EventsData)
        if (data.kind, data.subject) != (self.kind, self.subject):
            return  # an answer to filters changed since: the next fetch brings the right one
        self._data = data
        needle = self.query_one("#search", Input).value.casefold()
        shown = [e for e in data.events if event_matches(e, needle)]
        keys = [f"{e.seq}:{e.ts_ms}:{i}" for i, e in enumerate(shown)]
        self._by_key = dict(zip(keys, shown, strict=True))
        table = self.query_one("#events-table", EventsTable)
        table.sync_rows([(k, event_row(e)) for k, e in zip(keys, shown, strict=True)])
        title = Text("events", style="bold")
        title.append(f" · {len(shown)} of the last {len(data.events)}", style="dim")
        filters = [f for f in (data.kind and f"kind {data.kind}*", data.subject) if f]
        if filters:
            title.append(" · ", style="dim")
            title.append(clean(" · ".join(filters), 80))
        self.query_one("#title", Static).update(title)
        self.show_detail()

    def show_detail(self) -> None:
        """The data of the event under the cursor."""
        key = self.query_one("#events-table", EventsTable).selected_key
        event = None if key is None else self._by_key.get(key)
        detail = self.query_one("#detail", Static)
        detail.update(event_detail(event) if event else Text("no event matches", style="dim"))

    @on(DataTable.RowHighlighted)
    def row_highlighted(self) -> None:
        """Follow the cursor."""
        self.show_detail()

    def action_focus_filter(self, which: str) -> None:
        """``/``, ``f``, ``b``: type a search, a kind prefix or a subject."""
        self.query_one(f"#{which}", Input).focus()

    @on(Input.Changed, "#search")
    def search_changed(self) -> None:
        """Search as the operator types (over what was fetched)."""
        if self._data is not None:
            self.show(self._data)

    @on(Input.Submitted)
    def filter_submitted(self, event: Input.Submitted) -> None:
        """``enter`` in kind or subject asks the agent again; then back to the table."""
        if event.input.id in ("kind", "subject"):
            self.kind = self.query_one("#kind", Input).value.strip()
            self.subject = self.query_one("#subject", Input).value.strip()
            self.query_one("#events-table", EventsTable).clear()
            self._fetch = self.fetch_data()
        self.query_one("#events-table").focus()

    def action_back(self) -> None:
        """``esc`` in a filter: clear the search / leave the field; else back."""
        focused = self.focused
        if isinstance(focused, Input):
            if focused.id == "search":
                focused.value = ""
            self.query_one("#events-table").focus()
            return
        super().action_back()
