"""The ``/`` filter line of a list view, as k9s has it: hidden until ``/``, narrows the list
as you type, ``enter`` keeps the filter and goes back to the list, ``esc`` clears it."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class FilterInput(Input):
    """A one-line filter. The screen reacts to ``Input.Changed`` and to :class:`Closed`."""

    DEFAULT_CSS = """
    FilterInput {
        display: none;
        height: 1;
        border: none;
        padding: 0 1;
        background: $panel;
    }
    FilterInput:focus {
        border: none;
        background: $panel;
    }
    FilterInput.-open {
        display: block;
    }
    """

    BINDINGS = [Binding("escape", "clear_filter", "Clear filter", show=False)]

    class Closed(Message):
        """The operator left the filter line (``enter`` keeps the filter, ``esc`` clears it)."""

        def __init__(self, filter_input: FilterInput) -> None:
            super().__init__()
            self.filter_input = filter_input

        @property
        def control(self) -> FilterInput:
            """The filter line that closed."""
            return self.filter_input

    def __init__(self, placeholder: str = "filter…", *, id: str | None = None) -> None:
        super().__init__(placeholder=placeholder, id=id)

    def open(self) -> None:
        """Show the line and put the cursor in it."""
        self.add_class("-open")
        self.focus()

    def action_clear_filter(self) -> None:
        """Clear and hide the line; ``Input.Changed`` tells the screen the filter is gone."""
        self.value = ""
        self.remove_class("-open")
        self.post_message(self.Closed(self))

    async def action_submit(self) -> None:
        """Keep the filter, hide the line when it is empty, and hand focus back."""
        await super().action_submit()
        if not self.value:
            self.remove_class("-open")
        self.post_message(self.Closed(self))
