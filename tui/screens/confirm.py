"""The confirmation every operator action goes through."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Asks one yes/no question; dismisses with True only on a deliberate yes.

    ``y`` (or the action's button) confirms; ``n``, ``esc`` or the Cancel button cancel.
    Cancel has the focus, so an ``enter`` pressed out of habit does nothing harmful.

    Args:
        question: The question, agent-supplied parts already escaped (a ``Text``).
        detail: What will happen and who is recorded as acting.
        confirm_label: The confirm button's label, e.g. ``Restart``.
    """

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
        background: $background 60%;
    }
    ConfirmScreen #dialog {
        width: 64;
        max-width: 100%;
        height: auto;
        border: thick $warning 80%;
        background: $surface;
        padding: 1 2;
    }
    ConfirmScreen #question {
        text-style: bold;
        margin-bottom: 1;
    }
    ConfirmScreen #detail {
        color: $text-muted;
        margin-bottom: 1;
    }
    ConfirmScreen #buttons {
        height: auto;
        align-horizontal: right;
    }
    ConfirmScreen Button {
        margin-left: 2;
    }
    """

    BINDINGS = [
        Binding("y", "confirm", "Yes"),
        Binding("n", "cancel", "No"),
        Binding("escape", "cancel", "Cancel"),
    ]
    AUTO_FOCUS = "#no"

    def __init__(self, question: Text, detail: Text, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        """The question, what follows from it, and the two buttons."""
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            yield Static(self.detail, id="detail")
            with Horizontal(id="buttons"):
                yield Button(Text(f"{self.confirm_label} (y)"), id="yes", variant="warning")
                yield Button(Text("Cancel (n)"), id="no")

    def action_confirm(self) -> None:
        """Yes."""
        self.dismiss(True)

    def action_cancel(self) -> None:
        """No."""
        self.dismiss(False)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        """A click (or enter) on either button."""
        self.dismiss(event.button.id == "yes")
