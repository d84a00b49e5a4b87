"""What every triage view shares: its agent's client, a periodic fetch that never piles up,
``esc`` to go back, and operator actions (confirm, act, notify, refresh).

A view's fetch is a worker that ends by posting a message (:class:`DataFetched` carrying what
the subclass gathered, or :class:`FetchFailed`); a failure keeps the last data on screen and
says so in the view's ``#problem`` line.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, Static
from textual.worker import Worker

from tui.remote.client import AgentClient, AgentError, operator_identity
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen, bindings_text
from tui.screens.palette import JumpProvider
from tui.view.actions import OperatorAction, carry_out
from tui.view.fmt import clean, format_duration
from tui.widgets.filterbar import FilterInput


class ActionFinished(Message):
    """The agent accepted an operator action; ``outcome`` says what happened."""

    def __init__(
        self, action: OperatorAction, outcome: str, deployment_id: int | None = None
    ) -> None:
        super().__init__()
        self.action = action
        self.outcome = outcome
        self.deployment_id = deployment_id
        """The deployment a deploy or rollback made (the deployments view selects it)."""


class ActionFailed(Message):
    """The agent refused an operator action, or was not reached."""

    def __init__(self, action: OperatorAction, error: AgentError) -> None:
        super().__init__()
        self.action = action
        self.error = error


class DataFetched(Message):
    """A view's periodic fetch came back; ``data`` is whatever that view gathered."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.data = data


class FetchFailed(Message):
    """A view's periodic fetch failed; the last data stays on screen."""

    def __init__(self, error: AgentError) -> None:
        super().__init__()
        self.error = error


class ActionScreen(Screen[None]):
    """A view of one agent that may act on it: ``esc`` goes back, operator actions are
    confirmed, performed in a worker and reported in a notification.

    Subclasses list in :attr:`OPERATE` the action names that need the ``operate`` scope:
    those are hidden while the token is known to be read-only.

    Args:
        client: The agent's client (owned by the app).
    """

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "help", "Help"),
        Binding("colon", "app.command_palette", "Jump", show=False),
    ]
    COMMANDS = {JumpProvider}

    OPERATE: ClassVar[frozenset[str]] = frozenset()
    """Action names (without ``action_``) that need the ``operate`` scope."""

    def __init__(self, client: AgentClient) -> None:
        super().__init__()
        self.client = client

    def start_fetch(self) -> None:
        """Fetch now (after an action, to show its effect); views that fetch override it."""

    # --- navigation --------------------------------------------------------------------

    def action_help(self) -> None:
        """``?``: the keys of this view and the conventions of all."""
        self.app.push_screen(HelpScreen(bindings_text(self, self.client.read_only)))

    def action_back(self) -> None:
        """Back to the view this one was opened from."""
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    # --- operator actions --------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide actions that need ``operate`` while the token is known to be read-only."""
        return not (action in self.OPERATE and self.client.read_only)

    def request_action(self, action: OperatorAction) -> None:
        """Ask for confirmation, then perform ``action``; refuse at once with a read-only token.

        The refusal covers ways in that bypass hidden bindings (the command palette).
        """
        if action.needs_operate and self.client.read_only:
            self.notify(
                f"{action.label()} refused: this token is read-only (the operate token is in "
                "the agent's data dir, file api-token)",
                title="read-only",
                severity="error",
                markup=False,
            )
            return
        operator = self.client.operator or operator_identity()
        detail = action.consequence()
        detail.append("\nRecorded in the audit trail as ")
        detail.append(clean(operator, 100), style="bold")
        detail.append(".")

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.run_operator_action(action)
            else:
                self.notify(f"{action.label()} cancelled", timeout=2, markup=False)

        self.app.push_screen(ConfirmScreen(action.question(), detail, action.label()), confirmed)

    @work(group="operator-action")
    async def run_operator_action(self, action: OperatorAction) -> None:
        """Perform the confirmed action; post how it went."""
        try:
            outcome = await carry_out(self.client, action)
        except AgentError as exc:
            self.post_message(ActionFailed(action, exc))
            return
        self.post_message(ActionFinished(action, outcome.text, outcome.deployment_id))

    @on(ActionFinished)
    def operator_action_finished(self, message: ActionFinished) -> None:
        """Say it worked, and fetch at once to show the effect."""
        # markup=False: outcomes and errors quote agent data (names, reasons).
        self.notify(message.outcome, title=message.action.label(), markup=False)
        self.start_fetch()

    @on(ActionFailed)
    def operator_action_failed(self, message: ActionFailed) -> None:
        """Say why not; a 403 means the token is read-only, so hide the actions from now on."""
        error = message.error
        why = clean(error.message, 300)
        if error.kind == "forbidden":
            why = f"refused: this token is read-only ({why})"
            self.refresh_bindings()
        self.notify(
            why,
            title=f"{message.action.label()} failed",
            severity="error",
            timeout=8,
            markup=False,
        )


class TriageScreen(ActionScreen):
    """Base of the views below the host screen: a periodic fetch and a problem line.

    Subclasses implement :meth:`gather` (the requests, run in a worker) and :meth:`show`
    (put the result on screen).

    Args:
        client: The agent's client (owned by the app).
        refresh_s: Seconds between fetches.
    """

    DEFAULT_CSS = """
    TriageScreen {
        layout: vertical;
    }
    TriageScreen .title {
        height: 1;
        padding: 0 1;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    TriageScreen .problem {
        display: none;
        height: auto;
        max-height: 2;
        padding: 0 1;
    }
    TriageScreen .problem.-shown {
        display: block;
    }
    """

    def __init__(self, client: AgentClient, refresh_s: float = 1.0) -> None:
        super().__init__(client)
        self.refresh_s = refresh_s
        self._fetch: Worker[None] | None = None
        self._last_ok: float | None = None
        self._timer: Timer

    # --- fetching ----------------------------------------------------------------------

    def on_mount(self) -> None:
        """Fetch now and every ``refresh_s``."""
        self.start_fetch()
        self._timer = self.set_interval(self.refresh_s, self.start_fetch)

    def on_screen_suspend(self) -> None:
        """Covered by another view or a dialog: stop asking the agent for what nobody sees."""
        self._timer.pause()

    def on_screen_resume(self) -> None:
        """Shown again: fetch at once, then on the timer."""
        self._timer.resume()
        self.start_fetch()

    def start_fetch(self) -> None:
        """Start a fetch unless one is still waiting (see ``HostScreen.start_fetch``)."""
        if self._fetch is not None and not self._fetch.is_finished:
            return
        self._fetch = self.fetch_data()

    @work(exclusive=True, group="fetch")
    async def fetch_data(self) -> None:
        """Run :meth:`gather`; post what came back."""
        try:
            data = await self.gather()
        except AgentError as exc:
            self.post_message(FetchFailed(exc))
            return
        self.post_message(DataFetched(data))

    async def gather(self) -> Any:
        """The view's requests; raise :class:`AgentError` on failure."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        """Put what :meth:`gather` returned on screen."""
        raise NotImplementedError

    @on(DataFetched)
    def data_fetched(self, message: DataFetched) -> None:
        """Show the data; clear any problem line."""
        self._last_ok = time.monotonic()
        self.set_problem(None)
        self.show(message.data)

    @on(FetchFailed)
    def fetch_failed(self, message: FetchFailed) -> None:
        """Keep the last data; say what is wrong and how old the data is."""
        self.set_problem(message.error)

    def set_problem(self, error: AgentError | None) -> None:
        """Show (or hide) the red line under the title."""
        for line in self.query(".problem").results(Static):
            if error is None:
                line.remove_class("-shown")
                continue
            text = Text(f"✖ {clean(error.message, 160)}", style="bold red")
            if self._last_ok is not None:
                age = max(1.0, float(int(time.monotonic() - self._last_ok)))
                text.append(f" — data from {format_duration(age)} ago", style="red")
            line.update(text)
            line.add_class("-shown")


class FilteredListScreen(TriageScreen):
    """A triage view of lists under a ``/`` filter line (a :class:`FilterInput` ``#filter``),
    with the row under the cursor in a ``#detail`` panel; ``.boxed`` tables get the views'
    rounded border.

    Typing in the filter shows the last data again, narrowed by :meth:`show` (which reads the
    filter); closing the line gives the keys back to the view's main list, its
    :attr:`AUTO_FOCUS`. Subclasses keep what they last showed in ``_data``.
    """

    DEFAULT_CSS = """
    FilteredListScreen .boxed {
        border: round $primary 50%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
    }
    FilteredListScreen .boxed:focus {
        border: round $accent;
    }
    FilteredListScreen #detail {
        height: auto;
        padding: 0 1;
        background: $panel;
    }
    """

    _data: Any
    """The data last shown (None before the first fetch)."""

    def action_filter(self) -> None:
        """``/``: open the filter line."""
        self.query_one("#filter", FilterInput).open()

    @on(Input.Changed, "#filter")
    def filter_changed(self) -> None:
        """Narrow the rows as the operator types."""
        if self._data is not None:
            self.show(self._data)

    @on(FilterInput.Closed)
    def filter_closed(self) -> None:
        """Back to the main list."""
        if self.AUTO_FOCUS:
            self.query_one(self.AUTO_FOCUS).focus()
