"""The fleet table: one row per agent (cells from :mod:`tui.view.fleetcells`) under a header.

Why not a ``DataTable``: it invalidates every cached cell render on any cell update, so with
hundreds of agents answering every second each frame re-rendered every visible cell (over
100 ms a frame). This widget uses Textual's line API instead: a row is rendered to a
:class:`~textual.strip.Strip` once per change of its cells and cached; a frame only restyles
(cursor) and crops the visible rows' cached strips, and a new sort order is a list reorder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.view.fleetcells import COLUMNS

MAX_WIDTHS = {"name": 32, "status": 14, "problem": 80}
"""Columns cut to this many cells (the rest: as wide as their widest cell)."""
MIN_WIDTHS = {
    "status": 11,
    "models": 5,
    "ttft": 8,
    "gpu": 6,
    "gpumem": 13,
    "incidents": 3,
    "cpu": 6,
    "spark": 16,
    "age": 5,
}
"""Room for the usual values (``100.0%``, ``80.0/160.0GiB``), so columns do not jitter, and
every cached row is not rendered again, each time a value gains a digit."""


def _same(a: Text, b: Text) -> bool:
    # Text.__eq__ ignores the base style, and a state change is often only a colour change.
    return a.plain == b.plain and a.style == b.style and a.spans == b.spans


class FleetTable(ScrollView, can_focus=True):
    """One row per agent, keyed by the agent's fleet name, under a fixed header line.

    ``up``/``down`` (``k``/``j``), ``pageup``/``pagedown``, ``home``/``end`` (``g``/``G``) move
    the cursor, ``enter`` (or a
    click on the cursor row) posts :class:`RowSelected`, a click on a header posts
    :class:`HeaderSelected`.
    """

    DEFAULT_CSS = """
    FleetTable {
        height: 1fr;
    }
    FleetTable > .fleet-table--header {
        background: $panel;
        color: $text-muted;
        text-style: bold;
    }
    /* No :focus variants: a style that follows focus repaints all of the table whenever the
       filter line takes or gives back the focus. */
    FleetTable > .fleet-table--cursor {
        background: $accent 40%;
    }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"fleet-table--header", "fleet-table--cursor"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Open", show=False),
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "cursor(-1000000)", "First", show=False),
        Binding("end,G", "cursor(1000000)", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
    ]

    class RowSelected(Message):
        """``enter`` on a row: ``key`` is the agent's fleet name."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    class HeaderSelected(Message):
        """A click on a column header: ``column`` is its key (see :data:`COLUMNS`)."""

        def __init__(self, column: str) -> None:
            super().__init__()
            self.column = column

    cursor_row: reactive[int] = reactive(0)
    """The index (in display order) of the highlighted row."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._order: list[str] = []
        self._shown: set[str] = set()
        self._cells: dict[str, list[Text]] = {}
        # Rendered cells, then rows: only what changed is rendered again (a poll usually
        # changes two cells of a row: CPU and its sparkline).
        self._segments: dict[str, list[list[Segment] | None]] = {}
        self._strips: dict[str, Strip] = {}
        self._widths = [0] * len(COLUMNS)
        self._header: Strip | None = None

    # --- data -----------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        """Rows shown."""
        return len(self._order)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._order:
            return None
        return self._order[min(self.cursor_row, len(self._order) - 1)]

    def keys(self) -> list[str]:
        """Row keys in display order."""
        return list(self._order)

    def has_row(self, key: str) -> bool:
        """Whether a row with this key is shown."""
        return key in self._shown

    def get_row(self, key: str) -> list[Text]:
        """The cells of a row (KeyError when it is not shown)."""
        if key not in self._shown:
            raise KeyError(key)
        return self._cells[key]

    def sync(self, order: Sequence[str], cells: dict[str, list[Text]]) -> None:
        """Show exactly the rows ``order`` names, in that order; the cursor stays on its row.

        Only what changed is repainted: the lines of changed rows while the order holds, the
        whole table when rows come, go or move.

        Args:
            order: Row keys in display order (unique).
            cells: New cells for some rows (rows not in it keep theirs; a row shown for the
                first time must be in it).
        """
        selected = self.selected_key
        wanted = set(order)
        # Rows a filter hides keep their renders: clearing the filter shows them at once.
        everything = wanted != self._shown
        self._shown = wanted
        changed: list[str] = []
        for key, row in cells.items():
            if key not in wanted:
                continue
            old = self._cells.get(key)
            if old is None:
                self._segments[key] = [None] * len(row)
            else:
                stale = [
                    i for i, (a, b) in enumerate(zip(old, row, strict=True)) if not _same(a, b)
                ]
                if not stale:
                    continue
                segments = self._segments[key]
                for i in stale:
                    segments[i] = None
            self._cells[key] = row
            self._strips.pop(key, None)
            changed.append(key)
        order = list(order)
        if order != self._order:
            self._order = order
            everything = True
        if not everything and not changed:
            return
        if self._measure(self._cells[key] for key in changed):
            everything = True
        if selected in wanted:
            self.cursor_row = order.index(selected)
        else:
            self.cursor_row = min(self.cursor_row, max(0, len(order) - 1))
        if everything:
            self.refresh()
            return
        top = int(self.scroll_y)
        bottom = top + self.scrollable_content_region.height
        position = {key: i for i, key in enumerate(self._order)} if changed else {}
        for key in changed:
            index = position[key]
            if top <= index < bottom:
                # Line index + 1 (under the header), in the scroll view's virtual lines.
                self.refresh_line(index + 1)

    def _measure(self, rows: Iterable[list[Text]]) -> bool:
        """Widen columns for ``rows`` (the new or changed ones): columns only grow, as a
        narrower one would move every column right of it. True when the columns or the row
        count changed (everything must be repainted)."""
        widths = [
            max(cell_len(label), MIN_WIDTHS.get(key, 0), old)
            for (key, label), old in zip(COLUMNS, self._widths, strict=True)
        ]
        for row in rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], cell.cell_len)
        widths = [
            min(w, MAX_WIDTHS.get(key, w)) for w, (key, _l) in zip(widths, COLUMNS, strict=True)
        ]
        size = Size(sum(widths) + 2 * len(widths), len(self._order) + 1)
        if widths == self._widths and size == self.virtual_size:
            return False
        if widths != self._widths:
            self._widths = widths
            self._forget_renders()
        self.virtual_size = size
        return True

    # --- rendering ------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        """Styles changed (theme, focus, hover): only the header uses ours; rows are
        rendered without them (their background is applied per frame), so keep their
        renders: this is called on every focus change."""
        super().notify_style_update()
        self._header = None

    def _forget_renders(self) -> None:
        self._strips.clear()
        self._header = None
        for segments in self._segments.values():
            segments[:] = [None] * len(segments)

    def _cell(self, cell: Text, width: int) -> list[Segment]:
        """One cell cut or padded to ``width``, with a space either side."""
        piece = cell.copy()
        piece.truncate(width, overflow="ellipsis")
        pad = " " * (width - piece.cell_len)
        if cell.justify == "right":
            piece = Text.assemble(" ", pad, piece, " ", no_wrap=True, end="")
        else:
            piece = Text.assemble(" ", piece, pad, " ", no_wrap=True, end="")
        return list(piece.render(self.app.console))

    def _row(self, key: str) -> Strip:
        cells = self._cells[key]
        rendered = self._segments[key]
        line: list[Segment] = []
        for i, (cell, width) in enumerate(zip(cells, self._widths, strict=True)):
            segments = rendered[i]
            if segments is None:
                segments = rendered[i] = self._cell(cell, width)
            line.extend(segments)
        return Strip(line, sum(self._widths) + 2 * len(self._widths))

    def render_line(self, y: int) -> Strip:
        """Line 0 is the header; the others are rows from the scroll position down."""
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            if self._header is None:
                style = self.get_component_rich_style("fleet-table--header")
                line = [
                    segment
                    for (_key, label), width in zip(COLUMNS, self._widths, strict=True)
                    for segment in self._cell(Text(label), width)
                ]
                self._header = Strip(line).apply_style(base + style)
            return self._header.crop_extend(scroll_x, scroll_x + width, base)
        index = scroll_y + y - 1
        if index >= len(self._order):
            return Strip.blank(width, base)
        key = self._order[index]
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._row(key)
        style = base
        if index == self.cursor_row:
            style = base + self.get_component_rich_style("fleet-table--cursor")
        return strip.apply_style(style).crop_extend(scroll_x, scroll_x + width, style)

    # --- the cursor -----------------------------------------------------------------------

    def watch_cursor_row(self, old: int, new: int) -> None:
        """Repaint the two rows and keep the cursor in view."""
        self._scroll_cursor_into_view()
        self.refresh_line(old + 1)
        self.refresh_line(new + 1)

    def _scroll_cursor_into_view(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    def move_cursor(self, row: int) -> None:
        """Put the cursor on a row (clamped to the rows shown)."""
        self.cursor_row = max(0, min(row, len(self._order) - 1))

    def action_cursor(self, delta: int) -> None:
        """Move the cursor ``delta`` rows."""
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        """Move the cursor a screenful."""
        page = max(1, self.scrollable_content_region.height - 2)
        self.move_cursor(self.cursor_row + direction * page)

    def action_select(self) -> None:
        """Open the row under the cursor."""
        key = self.selected_key
        if key is not None:
            self.post_message(self.RowSelected(key))

    def on_click(self, event: events.Click) -> None:
        """A header sorts; a row gets the cursor; the cursor's row opens."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = offset.x + int(self.scroll_x)
            for (key, _label), width in zip(COLUMNS, self._widths, strict=True):
                if x < width + 2:
                    self.post_message(self.HeaderSelected(key))
                    return
                x -= width + 2
            return
        index = int(self.scroll_y) + offset.y - 1
        if 0 <= index < len(self._order):
            if index == self.cursor_row:
                self.action_select()
            else:
                self.move_cursor(index)
