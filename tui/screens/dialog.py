"""What the views' form dialogs share (the alerts view's silence, the deployments view's new
deploy): a box over the dimmed view, a question, a muted detail, a red line saying why the
form cannot go on yet, and the buttons.

``esc`` or Cancel dismisses with None and does nothing; ``enter`` in a field or the ``yes``
button calls :meth:`FormDialog.submit`, which dismisses with the form's result only when what
can be checked here passes (else it says why in ``#why``). A subclass composes the fields
inside ``#dialog`` and writes :meth:`~FormDialog.submit`.
"""

from __future__ import annotations

from typing import TypeVar

from textual import on
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Button, Input

ResultT = TypeVar("ResultT")


class FormDialog(ModalScreen[ResultT | None]):
    """A form in a dialog box; dismisses with the subclass's result, or None when cancelled."""

    DEFAULT_CSS = """
    FormDialog {
        align: center middle;
        background: $background 60%;
    }
    FormDialog #dialog {
        max-width: 100%;
        height: auto;
        border: thick $warning 80%;
        background: $surface;
    }
    FormDialog #question {
        text-style: bold;
    }
    FormDialog #detail {
        color: $text-muted;
        margin-bottom: 1;
    }
    FormDialog #why {
        color: $error;
        height: auto;
    }
    FormDialog #buttons {
        height: auto;
        align-horizontal: right;
    }
    FormDialog Button {
        margin-left: 2;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def submit(self) -> None:
        """Dismiss with the result, or say in ``#why`` what is missing."""
        raise NotImplementedError

    @on(Input.Submitted)
    def entered(self) -> None:
        """``enter`` in a field goes on."""
        self.submit()

    def action_cancel(self) -> None:
        """No."""
        self.dismiss(None)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        """The ``yes`` button goes on; the other cancels."""
        if event.button.id == "yes":
            self.submit()
        else:
            self.dismiss(None)
