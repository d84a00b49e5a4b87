"""A new deploy from the TUI (issue 16), without Textual: which models may be deployed, what
the operator asked for (a :class:`DeployDraft`), whether it is complete, and the summary the
confirmation shows before ``POST /api/v1/models/{name}/deploy``.

The artifact is a path on the agent's host, not on the operator's: the TUI cannot look at it,
so the agent checks it (exists, readable, not changing while hashed) and its refusal is shown as
it words it. What the TUI can check without asking (a path given at all, a bake that parses)
it checks here, with the agent's own wording, so a typo is caught before the confirmation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from storage.units import parse_duration
from tui.view.fmt import clean, format_duration

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "DeployChoice",
    "DeployDraft",
    "deploy_choices",
    "deploy_consequence",
    "deploy_summary",
    "draft_problem",
]

STRATEGIES = ("in-place", "blue-green")
"""What a deploy may ask for; the agent refuses one that is not the model's configured one."""
DEFAULT_STRATEGY = "in-place"
MAX_BAKE_S = 7 * 86400.0
"""The agent's limit on a deploy's bake (``agent/serve/deploy_api.py``)."""
MAX_NOTES = 2000
"""The agent keeps at most this many characters of notes and refuses more."""


@dataclass(frozen=True, slots=True)
class DeployChoice:
    """A model the new-deploy dialog offers.

    Attributes:
        model: Its name.
        settings: Its deploy settings as ``GET /api/v1/models/{name}/versions`` says them
            (``strategy``, ``bake_s``, ``require_approval``), or None from an agent that does
            not say (it is offered anyway, and refuses a model it cannot deploy).
    """

    model: str
    settings: Mapping[str, Any] | None = None

    @property
    def strategy(self) -> str:
        """The model's configured strategy, else in-place (preselected in the dialog)."""
        raw = (self.settings or {}).get("strategy")
        return str(raw) if raw in STRATEGIES else DEFAULT_STRATEGY


def deploy_choices(
    models: Sequence[str], versions: Mapping[str, Mapping[str, Any] | None]
) -> tuple[list[DeployChoice], list[str]]:
    """The models a deploy may be started for, and those left out.

    Args:
        models: The host's models, in its order.
        versions: Per model, its ``GET /api/v1/models/{name}/versions`` document (None when the
            agent answered 404: it does not know that model any more).

    Returns:
        ``(offered, left_out)``: a model whose document says ``"deploy": null`` has no
        ``[model.deploy]`` link and is left out; one whose document has no ``deploy`` key (an
        agent that predates it) is offered, and the agent decides.
    """
    offered: list[DeployChoice] = []
    left_out: list[str] = []
    for name in models:
        doc = versions.get(name)
        if doc is None:
            left_out.append(name)
        elif "deploy" not in doc:
            offered.append(DeployChoice(name))
        elif isinstance(doc["deploy"], Mapping):
            offered.append(DeployChoice(name, dict(doc["deploy"])))
        else:
            left_out.append(name)
    return offered, left_out


@dataclass(frozen=True, slots=True)
class DeployDraft:
    """A deploy as the operator filled it in.

    Attributes:
        model: The model to deploy.
        artifact: The new version's path on the agent's host.
        strategy: ``in-place`` or ``blue-green`` (the agent refuses one that is not the
            model's).
        bake: A duration such as ``10m``; empty for the model's own bake.
        notes: Free text kept with the version's lineage.
        settings: The model's deploy settings where the agent said them (for the summary).
        host: The agent's host name, where the artifact must be.
    """

    model: str
    artifact: str
    strategy: str = DEFAULT_STRATEGY
    bake: str = ""
    notes: str = ""
    settings: Mapping[str, Any] | None = None
    host: str = ""


def draft_problem(draft: DeployDraft) -> str | None:
    """What is wrong with ``draft`` before the agent is asked, in the agent's words; None when
    it may be sent."""
    if not draft.model:
        return "model: choose the model to deploy"
    if not draft.artifact.strip():
        return "artifact: expected the path of the new version on the agent's host"
    if draft.strategy not in STRATEGIES:
        return f"strategy: expected in-place or blue-green, got {draft.strategy!r}"
    if draft.bake.strip():
        try:
            seconds = parse_duration(draft.bake)
        except ValueError:
            return f"bake: expected a duration such as '10m' or '90s', got {draft.bake.strip()!r}"
        if not 0 < seconds <= MAX_BAKE_S:
            return f"bake: expected a duration above 0 and at most 7d, got {draft.bake.strip()!r}"
    if len(draft.notes) > MAX_NOTES:
        return f"notes: expected at most {MAX_NOTES} characters, got {len(draft.notes)}"
    return None


def _row(out: Text, label: str, value: str, style: str = "bold") -> None:
    out.append(f"{label:<9}", style="dim")
    out.append(value, style=style)
    out.append("\n")


def deploy_summary(draft: DeployDraft) -> Text:
    """What will be sent, one line each: artifact (on which host), strategy, bake, approval and
    notes. Every value is cleaned: the settings are agent data, the rest was typed."""
    out = Text()
    where = f"(on {clean(draft.host, 40)})" if draft.host else "(on the agent's host)"
    _row(out, "artifact", clean(draft.artifact.strip(), 200))
    out.append(f"{'':<9}{where}\n", style="dim")
    _row(out, "strategy", clean(draft.strategy, 20))
    settings = draft.settings or {}
    default = settings.get("bake_s")
    own = (
        f"the model's, {format_duration(float(default))}"
        if isinstance(default, int | float) and not isinstance(default, bool)
        else "the model's"
    )
    _row(out, "bake", clean(draft.bake.strip(), 20) if draft.bake.strip() else own)
    if settings.get("require_approval") is True:
        who = " (by someone else)" if settings.get("approver_must_differ") is not False else ""
        _row(out, "approval", f"required{who}: it waits until approved", "bold yellow")
    if draft.notes.strip():
        _row(out, "notes", clean(draft.notes.strip(), 120), "")
    out.rstrip()
    return out


def deploy_consequence(draft: DeployDraft) -> str:
    """What the agent does with it, by strategy."""
    switch = (
        "starts it beside the serving copy, gates it there, then moves the traffic"
        if draft.strategy == "blue-green"
        else "switches the model's link to it and restarts the server"
    )
    return (
        "The agent hashes the artifact and records it as a version (refused, with nothing "
        f"switched, if it is missing or unreadable), {switch}, bakes it through the canary "
        "gate, then promotes it or rolls back to the last known-good version."
    )
