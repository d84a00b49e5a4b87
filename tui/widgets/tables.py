"""The models and processes tables of the host screen.

Every cell is a ``rich.text.Text`` built by :func:`tui.view.fmt.safe`: DataTable parses plain
``str`` cells as markup, and names and errors come from the agent.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding
from textual.reactive import reactive
from textual.widgets import DataTable

from storage.records import AgentStatus, ModelState, ModelStatus, ProcessState, ProcessStatus
from tui.view.fmt import clean, format_bytes, format_duration, format_ms, format_percent, safe
from tui.view.hostview import HostView, ProcessUsage

MODEL_STATE_STYLES: dict[str, str] = {
    ModelState.UP: "green",
    ModelState.DEGRADED: "yellow",
    ModelState.DOWN: "bold red",
    ModelState.UNKNOWN: "dim",
    ModelState.STARTING: "cyan",
    ModelState.STOPPED: "dim",
}
PROCESS_STATE_STYLES: dict[str, str] = {
    ProcessState.RUNNING: "green",
    ProcessState.STARTING: "yellow",
    ProcessState.BACKOFF: "yellow",
    ProcessState.EXITED: "red",
    ProcessState.FAILED: "bold red",
    ProcessState.STOPPED: "dim",
}

Row = tuple[str, list[Text]]

# Cells are cut so a table rarely needs a horizontal scrollbar at 80 columns; a long probe
# error belongs in a detail view, not in a cell that pushes every other column away.
NAME_LEN = 32
DETAIL_LEN = 60


def _since(now_ms: int, since_ms: int) -> Text:
    # The agent's clock on both sides, so a laptop's clock skew cannot make "since" lie.
    # Whole seconds: sub-second precision is noise at a one-second refresh.
    seconds = max(0, now_ms - since_ms) // 1000
    return Text(format_duration(seconds) if seconds else "0s", style="dim")


def model_row(model: ModelStatus, now_ms: int) -> list[Text]:
    """The cells of one model: name, protocol, state, since, last e2e ms, last result."""
    run = model.last_run
    if run is None:
        last = Text("no probe yet", style="dim")
        e2e = Text("-", style="dim", justify="right")
    else:
        e2e = Text(format_ms(run.e2e_ms), justify="right")
        style = "" if run.ok else "red"
        detail = f"{run.category}: {run.error}" if run.error else run.category
        if run.status is not None and not run.ok:
            detail = f"{detail} (HTTP {run.status})"
        last = safe(detail, style=style, max_len=DETAIL_LEN)
    return [
        safe(model.name, style="bold", max_len=NAME_LEN),
        safe(model.protocol, max_len=16),
        safe(model.state, style=MODEL_STATE_STYLES.get(model.state, ""), max_len=16),
        _since(now_ms, model.since_ms),
        e2e,
        last,
    ]


def process_row(proc: ProcessStatus, usage: ProcessUsage | None, now_ms: int) -> list[Text]:
    """The cells of one process: name, state (and for how long), pid, restarts, cpu, rss,
    last exit."""
    state = safe(proc.state, style=PROCESS_STATE_STYLES.get(proc.state, ""), max_len=16)
    state.append(" ").append_text(_since(now_ms, proc.since_ms))
    usage = usage or ProcessUsage()
    restarts_style = "yellow" if proc.restarts else "dim"
    return [
        safe(proc.name, style="bold", max_len=NAME_LEN),
        state,
        Text("-" if proc.pid is None else str(proc.pid), justify="right"),
        Text(str(proc.restarts), style=restarts_style, justify="right"),
        Text(format_percent(usage.cpu_percent), justify="right"),
        Text("-" if usage.rss_bytes is None else format_bytes(usage.rss_bytes), justify="right"),
        safe(proc.last_exit or "-", style="" if proc.last_exit else "dim", max_len=DETAIL_LEN),
    ]


class KeyedTable(DataTable[Text]):
    """A row-cursor DataTable of keyed rows, kept in step without losing the cursor.

    ``j``/``k`` move like ``down``/``up`` and ``g``/``G`` jump to the ends (k9s, vi).
    """

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    COLUMNS: tuple[tuple[str, str], ...] = ()
    """(key, label) of each column."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Add the columns, then let subclasses show what arrived first."""
        for key, label in self.COLUMNS:
            self.add_column(Text(label, style="bold"), key=key)
        self.columns_added()

    def columns_added(self) -> None:
        """Called once the columns exist; subclasses fill in rows that arrived earlier."""

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None in an empty table."""
        if self.row_count and 0 <= self.cursor_row < self.row_count:
            return self.ordered_rows[self.cursor_row].key.value
        return None

    def sync_rows(self, rows: Sequence[Row]) -> None:
        """Update cells in place when the same rows are present, else rebuild in order.

        Args:
            rows: (key, cells) in display order; keys must be unique.
        """
        keys = [key for key, _cells in rows]
        current = [row.key.value for row in self.ordered_rows]
        if keys == current:
            for key, cells in rows:
                for (column_key, _label), cell in zip(self.COLUMNS, cells, strict=True):
                    if self.get_cell(key, column_key) != cell:
                        self.update_cell(key, column_key, cell, update_width=True)
            return
        # Rows came or went: rebuild, keeping the cursor on the same key when it survives.
        selected = self.selected_key
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if selected in keys:
            self.move_cursor(row=keys.index(selected), animate=False)


class StatusTable(KeyedTable):
    """A table whose rows come from the agent's status, narrowed by a filter text."""

    DEFAULT_CSS = """
    StatusTable {
        height: 1fr;
        min-height: 4;
    }
    """

    EMPTY = "nothing here"
    """Shown in the border subtitle when there are no rows."""

    status: reactive[AgentStatus | None] = reactive(None)
    """The status whose rows are shown."""
    filter_text: reactive[str] = reactive("")
    """Only rows whose name contains this (any case) are shown; empty shows all."""

    def columns_added(self) -> None:
        """Show any rows that arrived before the columns."""
        self.watch_status(self.status)

    def rows_for(self, status: AgentStatus) -> list[Row]:
        """The rows to show, each with a unique key; subclasses say which."""
        raise NotImplementedError

    def watch_status(self, status: AgentStatus | None) -> None:
        """Bring the rows in step with the new status."""
        if status is None or not self.is_mounted or not self.columns:
            return
        rows = self.rows_for(status)
        needle = self.filter_text.casefold()
        if needle:
            rows = [r for r in rows if needle in clean(name_of(r[0])).casefold()]
        self.sync_rows(rows)
        if not needle:
            self.border_subtitle = "" if self.row_count else self.EMPTY
        else:
            # A Text: a str subtitle would be parsed as markup, and the filter is typed text.
            shown = clean(self.filter_text, 30)
            self.border_subtitle = Text(
                f"filter: {shown}" if self.row_count else f"nothing matches {shown!r}"
            )

    def watch_filter_text(self, _text: str) -> None:
        """Re-filter the rows at once."""
        self.watch_status(self.status)


def name_of(key: str) -> str:
    """The model or process name a row key stands for (see :func:`_unique`)."""
    return key.split("\x00", 1)[0]


def _unique(keys: Sequence[str]) -> list[str]:
    """Keys as given, with a suffix on repeats: two models may share a name by mistake."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for key in keys:
        n = seen.get(key, 0)
        seen[key] = n + 1
        out.append(key if n == 0 else f"{key}\x00{n}")
    return out


class ModelsTable(StatusTable):
    """The probed models: state coloured (up green, degraded yellow, down red, unknown dim)."""

    COLUMNS = (
        ("name", "model"),
        ("protocol", "protocol"),
        ("state", "state"),
        ("since", "since"),
        ("e2e", "e2e ms"),
        ("last", "last probe"),
    )
    EMPTY = "no models configured"

    def rows_for(self, status: AgentStatus) -> list[Row]:
        """One row per model, in the agent's order."""
        keys = _unique([m.name for m in status.models])
        return [
            (key, model_row(m, status.now_ms)) for key, m in zip(keys, status.models, strict=True)
        ]


class ProcessesTable(StatusTable):
    """The supervised processes with their resource use."""

    COLUMNS = (
        ("name", "process"),
        ("state", "state"),
        ("pid", "pid"),
        ("restarts", "restarts"),
        ("cpu", "cpu"),
        ("rss", "rss"),
        ("last_exit", "last exit"),
    )
    EMPTY = "no supervised processes"

    def rows_for(self, status: AgentStatus) -> list[Row]:
        """One row per process, in the agent's order."""
        usage = HostView.from_status(status).processes
        keys = _unique([p.name for p in status.processes])
        return [
            (key, process_row(p, usage.get(p.name), status.now_ms))
            for key, p in zip(keys, status.processes, strict=True)
        ]
