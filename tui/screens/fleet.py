"""Many agents at once: one row per host, sortable and filterable; enter opens its host screen.

One worker polls the whole fleet: each agent once per ``refresh_s``, the polls spread evenly
over that time, none started for an agent whose last poll is still in flight (so a hung agent
holds up only its own row), each in its own task and bounded by the agent's timeouts. A
finished poll marks its row; the marks are coalesced into at most one table update every
``RENDER_EVERY_S``, which repaints only the rows that changed. A short tick
re-renders the rows that change without an answer (ages growing, polls turning slow). Nothing
here waits on the network, so keys are answered while agents time out.

``?`` lists the keys (the help of every view); ``:`` (or ``ctrl+p``) opens the command palette
on the fleet's hosts, by name or address: picking one opens it as ``enter`` on its row does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from functools import partial

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Matcher, Provider
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from tui.screens.help import HelpScreen, bindings_text
from tui.screens.host import HostScreen
from tui.screens.palette import highlighted
from tui.view.fleetcells import (
    SORTABLE_COLUMNS,
    STATE_LABELS,
    STATE_STYLES,
    alerting_text,
    row_cells,
)
from tui.view.fleetgroups import (
    FLEET_HELP,
    grouped_rows,
    label_keys,
    next_grouping,
    parse_filter,
)
from tui.view.fleetview import SORT_KEYS, FleetMember, matches, sort_members
from tui.view.fmt import clean
from tui.view.uistate import load_group_by, save_group_by
from tui.widgets.fleet_table import FleetTable

TICK_S = 0.25
"""How often the rows that change without new data (growing ages, polls turning slow) are
re-rendered; the others wait for their next answer."""
RENDER_EVERY_S = 0.2
"""Answers update the table at most this often (a key updates it at once). Textual repaints
the box around all changed lines, and with agents answering all the time nearly every
visible row changes each second: fewer, fuller updates cost less than many small ones."""
MIN_SPREAD_S = 0.005
"""Polls of a round start in groups at least this far apart (see ``poll_fleet``)."""


class FleetJumpProvider(Provider):
    """``:`` on the fleet screen: its hosts by name or address; picking one opens it.

    Names and addresses come from the fleet file and are data: hits are built from literal
    ``Content`` (a string prompt would be parsed as markup), and the help line, which the
    palette always parses as markup, holds only our own words.
    """

    def _fleet(self) -> FleetScreen | None:
        screen = self.screen
        return screen if isinstance(screen, FleetScreen) else None

    def hosts(self) -> Iterator[tuple[FleetMember, str, str]]:
        """(member, name, address) of every host, in the table's sort order (unfiltered)."""
        fleet = self._fleet()
        if fleet is None:
            return
        now = time.monotonic()
        for member in sort_members(fleet.members, fleet.sort_key, now, fleet.sort_reverse):
            yield member, clean(member.name, 64), clean(member.entry.url, 120)

    def _help(self, member: FleetMember) -> str:
        state = member.state(time.monotonic())
        return f"{STATE_LABELS.get(state, state)}: open its host screen"

    def _open(self, member: FleetMember) -> partial[None]:
        fleet = self._fleet()
        assert fleet is not None
        return partial(fleet.open_member, member.name)

    async def discover(self) -> Hits:
        """Every host, before anything is typed."""
        for member, name, address in self.hosts():
            prompt = Content.assemble((name, "bold"), "  ", (address, "dim"))
            yield DiscoveryHit(prompt, self._open(member), text=name, help=self._help(member))

    async def search(self, query: str) -> Hits:
        """Fuzzy matches of what was typed, on the name or else the address."""
        matcher = self.matcher(query)
        for member, name, address in self.hosts():
            score, prompt = _host_match(matcher, name, address)
            if score > 0:
                yield Hit(score, prompt, self._open(member), text=name, help=self._help(member))


def _host_match(matcher: Matcher, name: str, address: str) -> tuple[float, Content]:
    """The score of a host and its prompt with the matched letters styled: a match of the
    name wins; one of the address only counts for less."""
    by_name = matcher.match(name)
    by_address = matcher.match(address) * 0.8
    shown_name = highlighted(matcher, name) if by_name > 0 else Content(name)
    shown_address = (
        highlighted(matcher, address) if by_name == 0 and by_address > 0 else Content(address)
    )
    prompt = Content.assemble(
        shown_name.stylize_before("bold"), "  ", shown_address.stylize_before("dim")
    )
    return (by_name or by_address), prompt


class FleetScreen(Screen[None]):
    """The fleet table.

    Args:
        members: The agents; the app owns them and closes them on exit.
        refresh_s: Seconds between polls of each agent.
        auto_open: Open the host screen of the only agent as soon as it answers (``vigil tui
            --url ssh://...``, a fleet of one).
    """

    DEFAULT_CSS = """
    FleetScreen {
        layout: vertical;
    }
    FleetScreen #summary {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    FleetScreen FleetTable {
        border: round $primary 50%;
        border-title-color: $text-muted;
    }
    /* Always there (one line), so opening it does not move the table: no relayout. */
    FleetScreen #filter {
        margin: 0 1;
    }
    """

    BINDINGS = [
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
        # Not g: g and G are first and last row in every list.
        Binding("b", "cycle_group", "Group"),
        # Not in the footer (full at 80 columns); ? lists it.
        Binding("E", "env_drift", "Env drift", show=False),
        Binding("slash", "start_filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("r", "refresh_now", "Refresh"),
        Binding("question_mark", "help", "Help"),
        Binding("colon", "app.command_palette", "Jump to a host", show=False),
    ]
    COMMANDS = {FleetJumpProvider}

    sort_key: reactive[str] = reactive("name")
    """One of :data:`tui.view.fleetview.SORT_KEYS`."""
    sort_reverse: reactive[bool] = reactive(False)
    """Whether the order is reversed."""
    filter_text: reactive[str] = reactive("")
    """Rows shown must contain every word of it (name, URL, host, state, problem) and have
    every ``name=value`` label it names (value by prefix; :mod:`tui.view.fleetgroups`)."""
    group_by: reactive[str] = reactive("", init=False)
    """The label whose values group the rows under rollup rows; ``""``: no grouping."""

    def __init__(
        self,
        members: list[FleetMember],
        refresh_s: float = 1.0,
        auto_open: bool = False,
        remember_as: str | None = None,
    ) -> None:
        super().__init__()
        self.remember_as = remember_as
        """Under what name the grouping is remembered between runs (the fleet file's path);
        None: not remembered."""
        if remember_as is not None:
            self.set_reactive(FleetScreen.group_by, load_group_by(remember_as))
        self.members = members
        self.refresh_s = refresh_s
        self.auto_open = auto_open and len(members) == 1
        self.stale_after_s = max(2.0, 2 * refresh_s + 0.5)
        self.render_count = 0
        """Table updates so far (tests and the benchmark wait on it)."""
        self.rendered_at = 0.0
        """``time.monotonic()`` (the members' clock) at the end of the last table update."""
        self._by_name = {m.name: m for m in members}
        self._dirty: set[str] = set(self._by_name)
        self._changes: dict[str, int] = {}
        self._first_round: set[str] = set(self._by_name)
        self._froze = False
        self._render_pending = False
        self._summary = Text()
        self._wake = asyncio.Event()

    def compose(self) -> ComposeResult:
        """Summary line, table, the one-line filter input, footer."""
        yield Static(id="summary")
        table = FleetTable(id="fleet")
        table.border_title = "fleet"
        yield table
        yield Input(
            placeholder="/ filters: words in name, address, host, state, problem; label=value",
            id="filter",
            compact=True,
        )
        yield Footer()

    @property
    def table(self) -> FleetTable:
        """The fleet table."""
        return self.query_one(FleetTable)

    def on_mount(self) -> None:
        """Show the rows at once, start polling, and tick the ages."""
        self.render_rows()
        self.poll_fleet()
        self.set_interval(TICK_S, self.tick)

    def on_unmount(self) -> None:
        """Give the collector back what :meth:`agent_polled` froze."""
        if self._froze:
            gc.unfreeze()
            self._froze = False

    @work(exclusive=True, group="fleet-poll")
    async def poll_fleet(self) -> None:
        """Poll every agent each ``refresh_s``, forever; ``r`` polls every idle one at once.

        The polls of a round are spread evenly over ``refresh_s`` rather than started
        together: 200 answers arriving in the same instant would be handled in one long turn
        of the event loop, and a key pressed then would wait for all of them. Each poll is its
        own task, so a slow agent delays only its own row; cancelling this worker (the screen
        goes away) cancels them all.
        """
        tasks: set[asyncio.Task[None]] = set()

        def start(member: FleetMember) -> None:
            task = asyncio.create_task(self._poll_one(member))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            # The first round all at once: the table fills as fast as the agents answer.
            self._wake.set()
            index = 0
            next_at = time.monotonic()
            while True:
                now = time.monotonic()
                count = max(1, len(self.members))
                step = self.refresh_s / count
                if self._wake.is_set():
                    self._wake.clear()
                    for member in self.members:
                        if member.due(now):
                            start(member)
                    next_at = now + step
                # Each agent has its slot in the round; start those whose slot has come (a
                # loop that fell behind starts several, and skips, not repeats, a lost round).
                next_at = max(next_at, now - self.refresh_s)
                while next_at <= now:
                    member = self.members[index % count]
                    index += 1
                    next_at += step
                    if member.due(now) and (
                        member.finished_at is None or now - member.finished_at >= step
                    ):
                        start(member)
                delay = max(MIN_SPREAD_S, next_at - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll_one(self, member: FleetMember) -> None:
        await member.poll()
        # Noted directly (this task runs on the screen's loop), not posted as a message: 200
        # messages a second would keep the screen's queue from ever being empty, and Textual
        # repaints a screen once its queue is idle, so every key would wait for a gap.
        self.agent_polled(member)

    def agent_polled(self, member: FleetMember) -> None:
        """Note the row as changed if the poll changed it (a 304 does not; its cells are not
        built again); the table is updated at most every ``RENDER_EVERY_S`` (the order may
        change all the same: sorted by age)."""
        if self._changes.get(member.name) != member.changes:
            self._changes[member.name] = member.changes
            self._dirty.add(member.name)
        self._schedule_render()
        if self._first_round:
            self._first_round.discard(member.name)
            if not self._first_round:
                # The app's widgets and the first answers live as long as the app: move them
                # out of the collector's generations, so its full collections walk only what
                # came since (they walked ~100k objects at 200 agents, pausing 120 ms: a key
                # pressed then was painted that much later).
                gc.freeze()
                self._froze = True
        if self.auto_open and member.error is None and member.client is not None:
            self.auto_open = False
            self.app.push_screen(HostScreen(member.client, self.refresh_s))

    def tick(self) -> None:
        """Re-render the rows that can change without an answer: ages of stale data grow,
        and polls still waiting turn slow."""
        now = time.monotonic()
        horizon = self.stale_after_s - TICK_S - 0.1
        for member in self.members:
            age = member.data_age(now)
            if member.busy or member.error is not None or age is None or age >= horizon:
                self._dirty.add(member.name)
        self._schedule_render()

    def _schedule_render(self) -> None:
        if self._render_pending:
            return
        self._render_pending = True
        # Answers trickle in all the time: one table update for all that came meanwhile.
        wait = RENDER_EVERY_S - (time.monotonic() - self.rendered_at)
        if wait > 0:
            self.set_timer(wait, self._render_if_pending)
        else:
            self.call_later(self._render_if_pending)

    def _render_if_pending(self) -> None:
        if self._render_pending:
            self.render_rows()

    def render_rows(self) -> None:
        """Bring the table in step with the members, the sort and the filter."""
        self._render_pending = False
        if not self.is_mounted:
            return
        now = time.monotonic()
        wanted = parse_filter(self.filter_text)
        shown = [
            m for m in self.members if matches(m, wanted.words, now) and wanted.matches_labels(m)
        ]
        ordered = sort_members(shown, self.sort_key, now, self.sort_reverse)
        table = self.table
        cells = {
            m.name: row_cells(m, now, self.stale_after_s)
            for m in ordered
            if m.name in self._dirty or not table.has_row(m.name)
        }
        self._dirty.clear()
        keys = [m.name for m in ordered]
        if self.group_by:
            keys, headers = grouped_rows(ordered, self.group_by, now)
            cells.update(headers)
        table.sync(keys, cells)
        self._render_summary(now, len(ordered))
        self.render_count += 1
        self.rendered_at = time.monotonic()

    def _render_summary(self, now: float, shown: int) -> None:
        counts: dict[str, int] = {}
        for m in self.members:
            state = m.state(now)
            state = "unreachable" if state == "timeout" else state
            counts[state] = counts.get(state, 0) + 1
        out = Text(f"{len(self.members)} agents", style="bold")
        for state, style in STATE_STYLES.items():
            if counts.get(state):
                out.append("  ")
                out.append(f"{counts[state]} {STATE_LABELS.get(state, state)}", style=style)
        out.append_text(alerting_text(self.members))
        arrow = "↓" if self.sort_reverse else "↑"
        out.append(f"   sort: {self.sort_key} {arrow}", style="dim")
        if self.group_by:
            out.append(f"   group: {self.group_by}", style="dim")
        if self.filter_text.strip():
            out.append("   filter: ", style="dim")
            out.append(self.filter_text.strip(), style="bold")
            out.append(f" ({shown} shown)", style="dim")
        # Only when it changed, and without a layout pass: it is one line of fixed height.
        if out.plain != self._summary.plain or out.spans != self._summary.spans:
            self._summary = out
            self.query_one("#summary", Static).update(out, layout=False)

    def watch_sort_key(self) -> None:
        """Re-order at once."""
        self.render_rows()

    def watch_sort_reverse(self) -> None:
        """Re-order at once."""
        self.render_rows()

    def watch_filter_text(self) -> None:
        """Re-filter at once."""
        self.render_rows()

    def action_cycle_sort(self) -> None:
        """Sort by the next key of :data:`SORT_KEYS`."""
        self.sort_key = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]

    def watch_group_by(self, group_by: str) -> None:
        """Re-group at once, and remember the choice for the next run."""
        self.render_rows()
        if self.remember_as is not None:
            save_group_by(self.remember_as, group_by)

    def action_cycle_group(self) -> None:
        """Group by the next label seen in the fleet (none -> each label A-Z -> none)."""
        keys = label_keys(self.members)
        if not keys and not self.group_by:
            self.notify("No labels to group by: no agent or fleet entry has labels yet.")
            return
        self.group_by = next_grouping(self.group_by, keys)

    def action_env_drift(self) -> None:
        """``E``: the environment differences of the selected host's group."""
        from tui.screens.envdrift import EnvDriftScreen, group_of

        title, group = group_of(self.members, self.group_by, self.table.selected_key)
        self.app.push_screen(EnvDriftScreen(group, title))

    def action_reverse_sort(self) -> None:
        """Reverse the order."""
        self.sort_reverse = not self.sort_reverse

    def action_refresh_now(self) -> None:
        """Poll every idle agent now rather than at the next tick."""
        for member in self.members:
            member.retry_now()  # a manual refresh also skips an ssh back-off: the person asked
        self._wake.set()

    def action_help(self) -> None:
        """``?``: the fleet's keys and the conventions of all views, then filters and groups."""
        text = bindings_text(self)
        text.append_text(FLEET_HELP)
        self.app.push_screen(HelpScreen(text))

    def action_start_filter(self) -> None:
        """Focus the filter input."""
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        """Clear the filter; back to the table."""
        self.query_one("#filter", Input).value = ""
        self.filter_text = ""
        self.table.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        """Filter as the person types."""
        self.filter_text = event.value

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        """Keep the filter, back to the table."""
        self.table.focus()

    @on(FleetTable.HeaderSelected)
    def header_selected(self, event: FleetTable.HeaderSelected) -> None:
        """Sort by the clicked column; a second click reverses."""
        key = SORTABLE_COLUMNS.get(event.column)
        if key is None:
            return
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key = key

    @on(FleetTable.RowSelected)
    def row_selected(self, event: FleetTable.RowSelected) -> None:
        """Open the host screen of the agent under the cursor."""
        self.open_member(event.key)

    def open_member(self, name: str) -> None:
        """Open the host screen of the agent called ``name`` (``enter`` on its row, or picked
        in the palette); say why not when it is not connected."""
        member = self._by_name.get(name)
        if member is None:
            return
        client = member.client
        if client is None:
            reason = member.error.message if member.error else "still connecting"
            # markup=False: the name and the reason are data (fleet file, agent, network).
            self.notify(f"{member.name}: not connected: {reason}", severity="warning", markup=False)
            return
        self.app.push_screen(HostScreen(client, self.refresh_s))
