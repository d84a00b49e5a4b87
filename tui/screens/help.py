"""``?``: the keys of the view underneath, and the conventions that hold everywhere."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import ActiveBinding, Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

CONVENTIONS: tuple[tuple[str, str], ...] = (
    ("j k ↑ ↓", "move in a list (g G: first, last)"),
    ("enter", "open the row under the cursor (or click it twice)"),
    ("esc", "back, or clear the filter"),
    ("/", "filter the list"),
    (": ctrl+p", "jump by name: a view, a model or a process; on the fleet, a host"),
    ("?", "this help"),
    ("q", "quit"),
)


_GENERIC_KEYS = frozenset({"tab", "shift+tab", "ctrl+c", "super+c"})
"""Textual's own keys on every screen (focus moves, copy): not this view's."""


def bindings_text(screen: Screen[Any], read_only: bool = False) -> Text:
    """The keys the screen answers to now, one per line, then the general conventions.

    Args:
        screen: The view whose keys are listed (its focused widget's keys included).
        read_only: Whether the token is read-only (actions are hidden; say why).
    """
    out = Text()
    out.append("This view\n", style="bold underline")
    # The view's and the app's keys; a widget's own (a table's pgup...) are conventions.
    chosen: dict[str, ActiveBinding] = {}
    for active in screen.active_bindings.values():
        binding = active.binding
        if (
            not binding.description
            or not isinstance(active.node, Screen | App)
            or binding.key in _GENERIC_KEYS
        ):
            continue
        earlier = chosen.get(binding.action)
        # One line per action, under its plainest key (q rather than ctrl+q).
        if earlier is None or ("+" in earlier.binding.key and "+" not in binding.key):
            chosen[binding.action] = active
    for active in chosen.values():
        shown = screen.app.get_key_display(active.binding)
        out.append(f"  {shown:<10}", style="bold")
        out.append(active.binding.description, style="" if active.enabled else "dim")
        out.append("\n")
    # The view's own keys that do nothing right now (a row action while the other table has
    # the focus, an action a read-only token may not take): listed, dimmed, so they are known.
    idle: dict[str, Binding] = {}
    for cls in type(screen).__mro__:
        if not cls.__module__.startswith("tui."):
            continue  # Textual's own (focus, copy) are not this view's
        for binding in cls.__dict__.get("BINDINGS", ()):
            if (
                isinstance(binding, Binding)
                and binding.description
                and binding.action not in chosen
                and binding.action not in idle
            ):
                idle[binding.action] = binding
    if idle:
        out.append("Not available here now\n", style="dim underline")
    for binding in idle.values():
        out.append(f"  {screen.app.get_key_display(binding):<10}", style="dim")
        out.append(f"{binding.description}\n", style="dim")
    if read_only:
        out.append("  This token is read-only: actions are hidden.\n", style="yellow")
    out.append("\nEverywhere\n", style="bold underline")
    for key, what in CONVENTIONS:
        out.append(f"  {key:<10}", style="bold")
        out.append(f"{what}\n")
    out.append("\nColours: ", style="dim")
    out.append("green", style="green")
    out.append(" up/running, ", style="dim")
    out.append("yellow", style="yellow")
    out.append(" degraded/waiting, ", style="dim")
    out.append("red", style="bold red")
    out.append(" down/failed.", style="dim")
    return out


class HelpScreen(ModalScreen[None]):
    """Lists keys; any of ``esc``, ``?``, ``q`` closes it."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        background: $background 60%;
    }
    HelpScreen #help {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $accent;
        border-title-color: $text;
        background: $surface;
        padding: 0 1;
    }
    HelpScreen #help-text {
        width: 100%;
    }
    """

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        """The text in a scrollable box (long at 80x24 with many keys)."""
        box = VerticalScroll(id="help")
        box.border_title = "keys"
        with box:
            yield Static(self.text, id="help-text")

    def action_close(self) -> None:
        """Back to the view."""
        self.dismiss(None)
