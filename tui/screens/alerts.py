"""The host's alerts (firing, silenced, pending, resolved recently), its silences and whether
notifications reach people; silence an alert's labels or expire a silence (issue 15)."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Footer, Input, Static

from tui.remote.client import AgentClient, operator_identity
from tui.screens.base import FilteredListScreen
from tui.screens.dialog import FormDialog
from tui.view.actions import OperatorAction
from tui.view.alerts import (
    AlertsData,
    alert_detail,
    alert_key,
    alert_matches,
    alert_row,
    counts_text,
    delivery_line,
    live_silences,
    silence_key,
    silence_matchers,
    silence_row,
    sort_alerts,
)
from tui.view.fmt import clean, safe
from tui.widgets.filterbar import FilterInput
from tui.widgets.tables import KeyedTable

DEFAULT_SILENCE = "2h"


class AlertsTable(KeyedTable):
    """Alerts, firing first."""

    COLUMNS = (
        ("state", "state"),
        ("severity", "sev"),
        ("rule", "rule"),
        ("subject", "subject"),
        ("age", "age"),
        ("summary", "summary"),
        ("labels", "labels"),
    )


class SilencesTable(KeyedTable):
    """Silences still in force (active or starting later)."""

    COLUMNS = (
        ("id", "id"),
        ("state", "state"),
        ("left", "left"),
        ("matchers", "matchers"),
        ("author", "author"),
        ("comment", "comment"),
    )


class SilenceScreen(FormDialog[OperatorAction]):
    """Asks how long to silence an alert and why; dismisses with the action, or None.

    A :class:`~tui.screens.dialog.FormDialog`: ``esc`` or Cancel does nothing; the comment is
    required (the agent refuses a silence without one).
    """

    DEFAULT_CSS = """
    SilenceScreen #dialog {
        width: 70;
        padding: 1 2;
    }
    """

    AUTO_FOCUS = "#comment"

    def __init__(self, action: OperatorAction, operator: str) -> None:
        super().__init__()
        self.action = action
        self.operator = operator

    def compose(self) -> ComposeResult:
        """Question, matchers and audit note, duration and comment, buttons."""
        detail = self.action.consequence()
        detail.append("\nRecorded in the audit trail as ")
        detail.append(clean(self.operator, 100), style="bold")
        detail.append(".")
        question = Text("Silence alert ")
        question.append(clean(self.action.target, 64), style="bold")
        question.append("?")
        with Vertical(id="dialog"):
            yield Static(question, id="question")
            yield Static(detail, id="detail")
            yield Input(self.action.duration or DEFAULT_SILENCE, placeholder="2h", id="duration")
            yield Input(placeholder="comment: why (required)", id="comment")
            yield Static("", id="why")
            with Horizontal(id="buttons"):
                yield Button(Text("Silence"), id="yes", variant="warning")
                yield Button(Text("Cancel"), id="no")

    def submit(self) -> None:
        """Dismiss with the action, unless the comment or duration is missing."""
        duration = self.query_one("#duration", Input).value.strip()
        comment = self.query_one("#comment", Input).value.strip()
        if not duration or not comment:
            self.query_one("#why", Static).update(
                Text("a duration and a comment are required", style="bold")
            )
            return
        a = self.action
        self.dismiss(
            OperatorAction(
                "silence", a.target, matchers=a.matchers, duration=duration, comment=comment
            )
        )


class AlertsScreen(FilteredListScreen):
    """Alerts firing first, the silences in force and a delivery-health line.

    Args:
        client: The agent's client.
        refresh_s: Seconds between fetches.
    """

    DEFAULT_CSS = """
    AlertsScreen #delivery {
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    AlertsScreen AlertsTable {
        height: 2fr;
    }
    AlertsScreen SilencesTable {
        height: 1fr;
        min-height: 4;
    }
    AlertsScreen #detail {
        max-height: 4;
    }
    """

    AUTO_FOCUS = "#alerts-table"

    BINDINGS = [
        Binding("S", "silence", "Silence"),
        Binding("X", "expire", "Expire silence"),
        Binding("slash", "filter", "Filter"),
    ]
    OPERATE = frozenset({"silence", "expire"})

    def __init__(self, client: AgentClient, refresh_s: float = 1.0) -> None:
        super().__init__(client, refresh_s)
        self._data: AlertsData | None = None
        self._alerts: dict[str, dict[str, Any]] = {}
        self._silences: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        """Title, problem line, delivery line, filter, alerts, detail, silences, footer."""
        yield Static(Text("alerts"), classes="title", id="title")
        yield Static(classes="problem", id="problem")
        yield Static(Text("delivery: …", style="dim"), id="delivery")
        yield FilterInput("filter by rule, subject, summary, label…", id="filter")
        alerts = AlertsTable(id="alerts-table")
        alerts.add_class("boxed")
        alerts.border_title = "alerts"
        yield alerts
        yield Static(Text("no alert selected", style="dim"), id="detail")
        silences = SilencesTable(id="silences-table")
        silences.add_class("boxed")
        silences.border_title = "silences"
        yield silences
        yield Footer()

    async def gather(self) -> AlertsData:
        """The agent's clock and host, its alerts, silences and channel health."""
        status, alerts, silences, deliveries = await asyncio.gather(
            self.client.status(),
            self.client.alerts(),
            self.client.silences(),
            self.client.deliveries(limit=1),
        )
        return AlertsData(
            status.now_ms, status.host, alerts, silences, deliveries.get("channels", [])
        )

    def show(self, data: Any) -> None:
        """Rows for the alerts that pass the filter and for the silences in force."""
        assert isinstance(data, AlertsData)
        self._data = data
        title = Text("alerts", style="bold")
        title.append(" · ", style="dim")
        title.append_text(safe(data.host, max_len=48))
        title.append(" · ", style="dim")
        title.append_text(counts_text(data.alerts))
        self.query_one("#title", Static).update(title)
        self.query_one("#delivery", Static).update(delivery_line(data.channels))
        needle = self.query_one("#filter", FilterInput).value.casefold()
        shown = [a for a in sort_alerts(data.alerts) if alert_matches(a, needle)]
        self._alerts = {alert_key(a): dict(a) for a in shown}
        table = self.query_one("#alerts-table", AlertsTable)
        table.sync_rows([(alert_key(a), alert_row(a, data.now_ms)) for a in shown])
        if not shown:
            table.border_subtitle = Text(
                "no alerts matching the filter" if needle else "no alerts: all quiet"
            )
        else:
            table.border_subtitle = ""
        live = live_silences(data.silences)
        self._silences = {silence_key(s): dict(s) for s in live}
        silences = self.query_one("#silences-table", SilencesTable)
        silences.sync_rows([(silence_key(s), silence_row(s, data.now_ms)) for s in live])
        silences.border_subtitle = "" if live else Text("no silences in force")
        self.show_detail()

    def selected_alert(self) -> dict[str, Any] | None:
        """The alert under the cursor."""
        key = self.query_one("#alerts-table", AlertsTable).selected_key
        return None if key is None else self._alerts.get(key)

    def selected_silence_id(self) -> str | None:
        """The silence to expire: the one under the cursor when the silences table has the
        focus, else the one muting the alert under the cursor."""
        if self.focused is not None and self.focused.id == "silences-table":
            key = self.query_one("#silences-table", SilencesTable).selected_key
            silence = None if key is None else self._silences.get(key)
            return None if silence is None else str(silence.get("id"))
        alert = self.selected_alert()
        if alert is None or not alert.get("silenced_by"):
            return None
        return str(alert["silenced_by"])

    def show_detail(self) -> None:
        """The whole story of the alert under the cursor."""
        alert = self.selected_alert()
        detail = self.query_one("#detail", Static)
        if alert is None or self._data is None:
            detail.update(Text("no alert selected", style="dim"))
        else:
            detail.update(alert_detail(alert, self._data.now_ms))
        self.refresh_bindings()

    @on(DataTable.RowHighlighted)
    def row_highlighted(self) -> None:
        """Follow the cursor."""
        self.show_detail()

    def on_descendant_focus(self) -> None:
        """Which silence ``X`` expires follows the focused table."""
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Silence only an unresolved alert with labels; expire only with a silence chosen
        (dimmed otherwise)."""
        if super().check_action(action, parameters) is False:
            return False
        if not self.is_mounted:
            return True
        if action == "silence":
            alert = self.selected_alert()
            ok = alert is not None and alert.get("state") != "resolved"
            return (ok and bool(silence_matchers(alert or {}))) or None
        if action == "expire":
            return self.selected_silence_id() is not None or None
        return True

    def action_silence(self) -> None:
        """``S``: silence the labels of the alert under the cursor (asks duration and why)."""
        alert = self.selected_alert()
        if alert is None:
            return
        matchers = tuple(silence_matchers(alert))
        if not matchers:
            return
        target = f"{clean(alert.get('rule'), 40)} on {clean(alert.get('subject'), 40)}"
        draft = OperatorAction("silence", target, matchers=matchers, duration=DEFAULT_SILENCE)
        if self.client.read_only:
            self.request_action(draft)  # refuses with the read-only message
            return

        def chosen(action: OperatorAction | None) -> None:
            if action is None:
                self.notify("Silence cancelled", timeout=2, markup=False)
                return
            self.run_operator_action(action)

        operator = self.client.operator or operator_identity()
        self.app.push_screen(SilenceScreen(draft, operator), chosen)

    def action_expire(self) -> None:
        """``X``: expire the chosen silence (confirmed)."""
        silence_id = self.selected_silence_id()
        if silence_id is not None:
            self.request_action(OperatorAction("expire", silence_id))
