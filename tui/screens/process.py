"""One supervised process: its state and why, its restarts and their reasons (the
``process.*`` events), and the live tail of its captured output; start, stop, restart and
release it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Log, Static

from storage.records import Event, ProcessStatus
from tui.remote.client import AgentClient, AgentError
from tui.screens.base import TriageScreen
from tui.view.actions import OperatorAction, Verb
from tui.view.fmt import clean, format_age, format_bytes, format_percent, safe
from tui.view.hostview import HostView, ProcessUsage
from tui.view.rows import history_row, tail_update
from tui.widgets.tables import PROCESS_STATE_STYLES, KeyedTable

LOG_LINES = 200
"""Lines of output fetched each refresh (and kept on screen)."""


@dataclass(frozen=True, slots=True)
class ProcessData:
    """Everything the process view shows, fetched together."""

    now_ms: int
    process: ProcessStatus | None
    usage: ProcessUsage | None = None
    history: list[Event] = field(default_factory=list)
    log: list[str] | None = None
    log_error: str = ""


class HistoryTable(KeyedTable):
    """What happened to the process, newest first: starts, exits, restarts and why."""

    COLUMNS = (("time", "time"), ("kind", "event"), ("message", "why"))


def title_text(
    name: str, proc: ProcessStatus | None, usage: ProcessUsage | None, now_ms: int
) -> Text:
    """``process vllm · running for 1h · pid 4242 · restarts 1 · cpu 150% · rss 3GiB``."""
    out = Text("process ", style="dim")
    out.append_text(safe(name, style="bold", max_len=64))
    if proc is None:
        out.append("  no longer supervised by the agent", style="bold red")
        return out
    out.append(" · ", style="dim")
    out.append_text(safe(proc.state, style=PROCESS_STATE_STYLES.get(proc.state, ""), max_len=16))
    out.append(f" for {format_age(now_ms, proc.since_ms)}", style="dim")
    out.append(f" · pid {proc.pid}" if proc.pid is not None else " · no pid")
    out.append(" · restarts ")
    out.append(str(proc.restarts), style="yellow" if proc.restarts else "")
    if usage is not None and usage.cpu_percent is not None:
        out.append(f" · cpu {format_percent(usage.cpu_percent)}")
    if usage is not None and usage.rss_bytes is not None:
        out.append(f" · rss {format_bytes(usage.rss_bytes)}")
    return out


def facts_text(proc: ProcessStatus | None) -> Text:
    """What is supervised, why it is in its state, its last exit and restart reason."""
    if proc is None:
        return Text("")
    lines: list[Text] = []

    def line(label: str, value: object, style: str = "") -> None:
        row = Text(f"{label:<10}", style="bold")
        row.append_text(safe(value, style=style, max_len=300))
        lines.append(row)

    line("target", f"{proc.kind}: {proc.target or ' '.join(proc.argv)}")
    if proc.detail:
        line("why", proc.detail, "yellow")
    line("last exit", proc.last_exit or "-", "" if proc.last_exit else "dim")
    line("restarted", proc.last_reason or "-", "" if proc.last_reason else "dim")
    extras: list[str] = []
    if proc.depends_on:
        extras.append("depends on " + ", ".join(clean(d, 64) for d in proc.depends_on))
    if proc.adopted:
        extras.append("adopted from an earlier agent")
    if proc.incident is not None:
        extras.append(f"incident #{proc.incident} open")
    if extras:
        line("also", " · ".join(extras), "red" if proc.incident is not None else "")
    return Text("\n").join(lines)


class ProcessScreen(TriageScreen):
    """The view of one supervised process.

    Args:
        client: The agent's client.
        name: The process's name.
        refresh_s: Seconds between fetches (the log tail follows at the same pace).
    """

    DEFAULT_CSS = """
    ProcessScreen #facts {
        height: auto;
        max-height: 5;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ProcessScreen HistoryTable {
        height: 7;
        border: round $primary 50%;
        border-title-color: $text-muted;
    }
    ProcessScreen Log {
        overflow: auto auto;
        height: 1fr;
        min-height: 4;
        border: round $primary 50%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
    }
    ProcessScreen HistoryTable:focus, ProcessScreen Log:focus {
        border: round $accent;
    }
    """

    AUTO_FOCUS = "#history"
    """The list takes the keys (j/k) from the start."""

    BINDINGS = [
        Binding("s", "process('start')", "Start"),
        Binding("t", "process('stop')", "Stop"),
        Binding("R", "process('restart')", "Restart"),
        Binding("u", "process('release')", "Release"),
        Binding("e", "events", "Events"),
    ]
    OPERATE = frozenset({"process"})

    def __init__(self, client: AgentClient, name: str, refresh_s: float = 1.0) -> None:
        super().__init__(client, refresh_s)
        self.process_name = name
        self._log_lines: list[str] = []

    def compose(self) -> ComposeResult:
        """Title, problem line, facts, history, log, footer."""
        yield Static(Text(f"process {clean(self.process_name, 64)}"), classes="title", id="title")
        yield Static(classes="problem", id="problem")
        yield Static(Text("waiting for the agent…", style="dim"), id="facts")
        history = HistoryTable(id="history")
        history.border_title = "restarts and their reasons"
        yield history
        log = Log(max_lines=LOG_LINES * 5, id="log")
        log.border_title = "log"
        yield log
        yield Footer()

    async def gather(self) -> ProcessData:
        """Status (state, usage, the agent's clock), its events and its log tail."""
        c, name = self.client, self.process_name
        status, history = await asyncio.gather(
            c.status(), c.events(limit=100, kind="process.", subject=f"process:{name}")
        )
        proc = next((p for p in status.processes if p.name == name), None)
        usage = HostView.from_status(status).processes.get(name)
        log: list[str] | None = None
        log_error = ""
        if proc is not None:
            try:
                log = await c.process_logs(name, LOG_LINES)
            except AgentError as exc:
                # A unit or a matched process has no captured output: say so, keep the rest.
                log_error = exc.message
        return ProcessData(status.now_ms, proc, usage, history, log, log_error)

    def show(self, data: Any) -> None:
        """Fill every part from one fetch; append only the new log lines."""
        assert isinstance(data, ProcessData)
        title = title_text(self.process_name, data.process, data.usage, data.now_ms)
        self.query_one("#title", Static).update(title)
        self.query_one("#facts", Static).update(facts_text(data.process))
        self.query_one("#history", HistoryTable).sync_rows(
            [(f"{e.seq}:{e.ts_ms}", history_row(e)) for e in data.history]
        )
        log = self.query_one("#log", Log)
        if data.log is None:
            log.border_subtitle = Text(clean(data.log_error, 80) or "no output captured")
            return
        fetched = [clean(line, 2000) for line in data.log]
        reset, new = tail_update(self._log_lines, fetched)
        if reset:
            log.clear()
        if new:
            log.write_lines(new)
        self._log_lines = fetched
        log.border_subtitle = f"last {len(fetched)} lines" if fetched else "no output yet"

    def action_process(self, verb: Verb) -> None:
        """``s``/``t``/``R``/``u``: start, stop, restart or release (confirmed, audited)."""
        self.request_action(OperatorAction(verb, self.process_name))

    def action_events(self) -> None:
        """``e``: the whole audit trail of this process."""
        from tui.screens.events import EventsScreen

        self.app.push_screen(
            EventsScreen(self.client, self.refresh_s, subject=f"process:{self.process_name}")
        )
