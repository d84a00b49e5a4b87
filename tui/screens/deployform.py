"""The new-deploy dialog of the deployments view (issue 16): which model, the new version's
path on the agent's host, the strategy, an optional bake and notes.

It only fills in a :class:`~tui.view.deployform.DeployDraft`; the deployments view then asks
for confirmation with a summary (:class:`~tui.screens.confirm.ConfirmScreen`) and sends it, as
every action. Like the silence dialog of the alerts view, ``esc`` or Cancel does nothing, and
what can be checked here (a path given, a bake that parses) is checked before going on.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Select, Static

from tui.screens.dialog import FormDialog
from tui.view.deployform import (
    STRATEGIES,
    DeployChoice,
    DeployDraft,
    draft_problem,
)
from tui.view.fmt import clean, format_duration


class DeployScreen(FormDialog[DeployDraft]):
    """Asks what to deploy; dismisses with the draft, or None.

    Args:
        choices: The models that may be deployed (at least one).
        model: The one preselected (the model in view or under the cursor), if offered.
        host: The agent's host name (the artifact's path is on that host).
        left_out: Models not offered (no ``[model.deploy]``), named so their absence is
            explained.
    """

    DEFAULT_CSS = """
    DeployScreen #dialog {
        width: 72;
        padding: 0 2;
    }
    DeployScreen .field {
        height: 1;
        margin-bottom: 1;
    }
    DeployScreen .field > Static {
        width: 10;
        color: $text-muted;
    }
    DeployScreen .field Input, DeployScreen .field Select {
        width: 1fr;
        background: $boost;
    }
    DeployScreen .field Input:focus, DeployScreen .field Select:focus > SelectCurrent {
        background: $primary 30%;
    }
    """

    AUTO_FOCUS = "#artifact"

    def __init__(
        self,
        choices: Sequence[DeployChoice],
        model: str | None = None,
        host: str = "",
        left_out: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.choices = {c.model: c for c in choices}
        first = next(iter(self.choices))
        self.model = model if model in self.choices else first
        self.host = host
        self.left_out = tuple(left_out)

    def compose(self) -> ComposeResult:
        """Question, where the artifact is, the fields, the reason it cannot go on, buttons."""
        detail = Text("The artifact is a path on ")
        detail.append(clean(self.host, 32) or "the agent's host", style="bold")
        detail.append(", checked there.")
        if self.left_out:
            names = ", ".join(clean(m, 24) for m in self.left_out[:4])
            more = f" and {len(self.left_out) - 4} more" if len(self.left_out) > 4 else ""
            detail.append(f"\nNot offered (no [model.deploy]): {names}{more}.")
        options = [(Text(clean(m, 48)), m) for m in self.choices]
        strategies = [(Text(s), s) for s in STRATEGIES]
        with Vertical(id="dialog"):
            yield Static(Text("Deploy a new version"), id="question")
            yield Static(detail, id="detail")
            with Horizontal(classes="field"):
                yield Static("model")
                yield Select(options, value=self.model, allow_blank=False, compact=True, id="model")
            with Horizontal(classes="field"):
                yield Static("artifact")
                yield Input(placeholder="/path/of/the/new/version", compact=True, id="artifact")
            with Horizontal(classes="field"):
                yield Static("strategy")
                yield Select(
                    strategies,
                    value=self.choices[self.model].strategy,
                    allow_blank=False,
                    compact=True,
                    id="strategy",
                )
            with Horizontal(classes="field"):
                yield Static("bake")
                yield Input(placeholder=self._bake_hint(self.model), compact=True, id="bake")
            with Horizontal(classes="field"):
                yield Static("notes")
                yield Input(placeholder="why (optional)", compact=True, id="notes")
            yield Static("", id="why")
            with Horizontal(id="buttons"):
                yield Button(Text("Next"), id="yes", variant="warning")
                yield Button(Text("Cancel"), id="no")

    def _bake_hint(self, model: str) -> str:
        """The bake field's placeholder: the model's own bake, where the agent said it."""
        settings = self.choices[model].settings or {}
        own = settings.get("bake_s")
        if isinstance(own, int | float) and not isinstance(own, bool):
            return f"the model's: {format_duration(float(own))} (e.g. 10m)"
        return "the model's (e.g. 10m)"

    @on(Select.Changed, "#model")
    def model_changed(self, event: Select.Changed) -> None:
        """Another model: its strategy and bake."""
        if not isinstance(event.value, str) or event.value not in self.choices:
            return
        self.model = event.value
        self.query_one("#strategy", Select).value = self.choices[self.model].strategy
        self.query_one("#bake", Input).placeholder = self._bake_hint(self.model)

    def draft(self) -> DeployDraft:
        """What the fields say now."""
        strategy = self.query_one("#strategy", Select).value
        return DeployDraft(
            model=self.model,
            artifact=self.query_one("#artifact", Input).value.strip(),
            strategy=strategy if isinstance(strategy, str) else "",
            bake=self.query_one("#bake", Input).value.strip(),
            notes=self.query_one("#notes", Input).value.strip(),
            settings=self.choices[self.model].settings,
            host=self.host,
        )

    def submit(self) -> None:
        """Dismiss with the draft, unless something the agent would refuse is already seen."""
        draft = self.draft()
        problem = draft_problem(draft)
        if problem is not None:
            self.query_one("#why", Static).update(Text(problem, style="bold"))
            return
        self.dismiss(draft)
