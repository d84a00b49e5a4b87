"""One model: TTFT/ITL/e2e charts, the error breakdown, recent probe runs, its incidents and
deployments (artifact changes the probe saw), and what the probe learned about it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import ContentSwitcher, Footer, Static, Tab, Tabs

from storage.records import Event, Incident, ProbeRun
from tui.remote.apitypes import LATENCY_METRICS, LatencySummary, ModelDetail
from tui.remote.client import AgentClient
from tui.screens.base import TriageScreen
from tui.view.actions import OperatorAction
from tui.view.fmt import clean, format_age, safe
from tui.view.rows import deployment_row, incident_row, outcomes_text, run_row
from tui.widgets.charts import LatencyChart
from tui.widgets.incidents import IncidentsTable
from tui.widgets.tables import MODEL_STATE_STYLES, KeyedTable

TABS = ("runs", "incidents", "deployments", "info")
CHART_WINDOW = "-15m"
CHART_STEP_MS = 15_000
"""Fifteen minutes in 15-second buckets: 60 points, about a sparkline's width at 80 columns."""


@dataclass(frozen=True, slots=True)
class ModelData:
    """Everything the model view shows, fetched together."""

    now_ms: int
    detail: ModelDetail | None
    runs: list[ProbeRun] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    deployments: list[Event] = field(default_factory=list)
    charts: dict[str, list[float]] = field(default_factory=dict)


class RunsTable(KeyedTable):
    """The model's last probe runs, newest first."""

    COLUMNS = (
        ("age", "age"),
        ("result", "result"),
        ("status", "http"),
        ("e2e", "e2e ms"),
        ("ttft", "ttft ms"),
        ("itl", "itl ms"),
        ("error", "error"),
    )


class DeploymentsTable(KeyedTable):
    """Artifact changes the probe reported (``model.artifact`` events), newest first."""

    COLUMNS = (
        ("when", "when"),
        ("artifact", "artifact"),
        ("previous", "previous"),
        ("category", "first run"),
    )


def title_text(name: str, detail: ModelDetail | None, now_ms: int) -> Text:
    """``model llama · openai · up for 3m12s · http://...``."""
    out = Text("model ", style="dim")
    out.append_text(safe(name, style="bold", max_len=64))
    if detail is None:
        out.append("  no longer configured on the agent", style="bold red")
        return out
    status = detail.status
    out.append(" · ", style="dim")
    out.append_text(safe(status.protocol, max_len=16))
    out.append(" · ", style="dim")
    out.append_text(safe(status.state, style=MODEL_STATE_STYLES.get(status.state, ""), max_len=16))
    out.append(f" for {format_age(now_ms, status.since_ms)}", style="dim")
    for group, since in sorted(status.drift.items()):
        out.append(" · ", style="dim")
        out.append_text(safe(f"{group} drift", style="yellow", max_len=24))
        out.append(f" for {format_age(now_ms, since)}", style="dim")
    out.append(" · ", style="dim")
    out.append_text(safe(status.url, style="dim", max_len=80))
    return out


def incident_line(detail: ModelDetail | None) -> Text:
    """The open incident in one red line, or a dim "no open incident"."""
    if detail is None or detail.incident is None:
        return Text("no open incident", style="dim")
    inc = detail.incident
    out = Text(f"incident #{inc.id} ", style="bold red")
    out.append_text(safe(inc.state, style="red"))
    out.append(" · ")
    out.append_text(safe(inc.severity, max_len=12))
    out.append(" · ")
    out.append_text(safe(inc.cause, max_len=200))
    return out


class ModelScreen(TriageScreen):
    """The view of one model.

    Args:
        client: The agent's client.
        name: The model's name, as the agent knows it.
        refresh_s: Seconds between fetches.
    """

    DEFAULT_CSS = """
    ModelScreen #summary {
        height: 2;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ModelScreen #charts {
        height: 3;
        padding: 0 1;
    }
    ModelScreen Tabs {
        height: 2;
    }
    ModelScreen #panes {
        height: 1fr;
    }
    ModelScreen #panes > * {
        height: 1fr;
    }
    ModelScreen #info-text {
        padding: 0 1;
    }
    """

    AUTO_FOCUS = "#runs-table"
    """The list takes the keys (j/k) from the start."""

    BINDINGS = [
        Binding("p", "probe", "Probe now"),
        Binding("e", "events", "Events"),
        # Hidden from the footer (full at 80 columns); listed by ``?``.
        Binding("d", "deployments", "Deploys (approve, roll back)", show=False),
        Binding("1", "tab('runs')", "Runs", show=False),
        Binding("2", "tab('incidents')", "Incidents", show=False),
        Binding("3", "tab('deployments')", "Deployments", show=False),
        Binding("4", "tab('info')", "Info", show=False),
    ]
    OPERATE = frozenset({"probe"})

    def __init__(self, client: AgentClient, name: str, refresh_s: float = 1.0) -> None:
        super().__init__(client, refresh_s)
        self.model_name = name

    def compose(self) -> ComposeResult:
        """Title, problem line, summary, charts, tabs, footer."""
        yield Static(Text(f"model {clean(self.model_name, 64)}"), classes="title", id="title")
        yield Static(classes="problem", id="problem")
        yield Static(Text("waiting for the agent…", style="dim"), id="summary")
        with Vertical(id="charts"):
            for metric in LATENCY_METRICS:
                yield LatencyChart(metric, id=f"chart-{metric}")
        # Tabs over a switcher rather than TabbedContent: its panes mount after this screen,
        # and the fetch may answer first.
        yield Tabs(*(Tab(t, id=t) for t in TABS), id="tabs")
        with ContentSwitcher(initial="runs-table", id="panes"):
            yield RunsTable(id="runs-table")
            yield IncidentsTable(id="incidents-table")
            yield DeploymentsTable(id="deployments-table")
            with VerticalScroll(id="info-table"):
                yield Static(id="info-text")
        yield Footer()

    async def gather(self) -> ModelData:
        """Status (for the agent's clock), models, runs, incidents, deployments, charts."""
        c, name = self.client, self.model_name
        subject = f"model:{name}"
        records = asyncio.gather(
            c.status(),
            c.models(),
            c.probe_runs(name, limit=50),
            c.incidents(subject=subject, limit=50),
            c.events(limit=50, kind="model.artifact", subject=subject),
        )
        charts_fetched = asyncio.gather(
            *(
                c.series(f"probe.{m}", {"model": name}, since=CHART_WINDOW, step=CHART_STEP_MS)
                for m in LATENCY_METRICS
            )
        )
        (status, models, runs, incidents, deployments), series = await asyncio.gather(
            records, charts_fetched
        )
        detail = next((m for m in models if m.name == name), None)
        charts = {
            m: [p.avg for p in points] for m, points in zip(LATENCY_METRICS, series, strict=True)
        }
        return ModelData(status.now_ms, detail, runs, incidents, deployments, charts)

    def show(self, data: Any) -> None:
        """Fill every part from one fetch."""
        assert isinstance(data, ModelData)
        detail = data.detail
        self.query_one("#title", Static).update(title_text(self.model_name, detail, data.now_ms))
        summary = (
            outcomes_text(detail.outcomes_1h, detail.availability_1h)
            if detail is not None
            else Text("")
        )
        summary.append("\n")
        summary.append_text(incident_line(detail))
        self.query_one("#summary", Static).update(summary)
        for metric in LATENCY_METRICS:
            stats = detail.summary(metric) if detail is not None else LatencySummary()
            chart = self.query_one(f"#chart-{metric}", LatencyChart)
            chart.update(data.charts.get(metric, []), stats)
        self.query_one("#runs-table", RunsTable).sync_rows(
            [(f"{r.ts_ms}:{i}", run_row(r, data.now_ms)) for i, r in enumerate(data.runs)]
        )
        self.query_one("#incidents-table", IncidentsTable).sync_rows(
            [(str(i.id), incident_row(i, data.now_ms)) for i in data.incidents]
        )
        self.query_one("#deployments-table", DeploymentsTable).sync_rows(
            [(f"{e.seq}:{e.ts_ms}", deployment_row(e)) for e in data.deployments]
        )
        info = detail.info if detail is not None else {}
        text = (
            Text(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=True, default=str))
            if info
            else Text("the probe has reported nothing about this model", style="dim")
        )
        self.query_one("#info-text", Static).update(text)

    def action_probe(self) -> None:
        """``p``: probe the model now (confirmed, audited)."""
        self.request_action(OperatorAction("probe", self.model_name))

    def action_events(self) -> None:
        """``e``: the audit trail of this model."""
        from tui.screens.events import EventsScreen

        self.app.push_screen(
            EventsScreen(self.client, self.refresh_s, subject=f"model:{self.model_name}")
        )

    def action_deployments(self) -> None:
        """``d``: this model's deploys, their live progress and its versions."""
        from tui.screens.deploys import DeploymentsScreen

        self.app.push_screen(DeploymentsScreen(self.client, self.refresh_s, model=self.model_name))

    def action_tab(self, tab: str) -> None:
        """``1``-``4``: switch tabs."""
        self.query_one("#tabs", Tabs).active = tab

    @on(Tabs.TabActivated, "#tabs")
    def tab_activated(self, event: Tabs.TabActivated) -> None:
        """Show the tab's pane; its table takes the keys (j/k)."""
        pane = f"{event.tab.id}-table"
        self.query_one("#panes", ContentSwitcher).current = pane
        if event.tab.id != "info":
            self.query_one(f"#{pane}").focus()
