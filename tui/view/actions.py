"""What an operator can ask of an agent from the TUI, and how each is carried out.

Every action is confirmed first (:class:`tui.screens.confirm.ConfirmScreen`), sent with the
operator's ``user@host`` (the agent records it in its audit trail), and hidden when the token
is known to be read-only. This module holds no Textual: it describes an action, says what to
ask and performs it through the client, so it is tested without an app.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.text import Text

from tui.remote.client import AgentClient, AgentError
from tui.view.deployform import DeployDraft, deploy_consequence, deploy_summary
from tui.view.fmt import clean

Verb = Literal[
    "start",
    "stop",
    "restart",
    "release",
    "probe",
    "acknowledge",
    "resolve",
    "export",
    "silence",
    "expire",
    "approve",
    "rollback",
    "deploy",
]
PROCESS_VERBS: tuple[Verb, ...] = ("start", "stop", "restart", "release")

# What each verb does, said to the person about to confirm it.
_CONSEQUENCES: dict[Verb, str] = {
    "start": "The agent starts it and supervises it again.",
    "stop": "The agent stops it (stop signal, then SIGKILL) and will not restart it.",
    "restart": "The agent stops the whole process tree, then starts it again.",
    "release": "The agent lifts the quarantine and starts restarting it again.",
    "probe": "The agent sends a canary request now, besides its schedule.",
    "acknowledge": "The incident stays open, marked as taken by you.",
    "resolve": "The incident is closed by hand, even if its cause is still there.",
    "export": "The agent renders its host report of the last 7 days.",
    "silence": "Notifications of matching alerts are muted; they are still evaluated and recorded.",
    "expire": "The silence ends now: matching alerts notify again.",
    "approve": "The deploy starts now: switch, restart, bake through the canary gate, then "
    "promote or roll back. You are recorded as its approver.",
    "deploy": "The agent deploys the artifact through the canary gate.",
    "rollback": "A deploy starting or baking now is stopped and rolled back (one awaiting "
    "approval is withdrawn); otherwise the last known-good version other than the current one "
    "is deployed again, through the canary gate.",
}
_ROLLBACK_TO = (
    "That version is deployed again, through the canary gate; once promoted, the version "
    "rolled back from loses its known-good mark. Refused while another deploy is in flight."
)


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """One thing to ask of an agent.

    Attributes:
        verb: What to do.
        target: The process or model name, the incident id, or the host for an export.
        path: For an export, where the report is written.
    """

    verb: Verb
    target: str
    path: Path | None = None
    matchers: tuple[str, ...] = ()
    """For a silence: ``label="value"`` matchers."""
    duration: str = ""
    """For a silence: how long, e.g. ``2h``."""
    comment: str = ""
    """For a silence: why (the agent requires it)."""
    version: str = ""
    """For a rollback: the version to go back to (its hash, or a unique prefix of it); empty
    for the last known-good."""
    about: str = ""
    """Agent data that says what the target is (a deploy's model, version and requester),
    shown cleaned in the confirmation."""
    deploy: DeployDraft | None = None
    """For a deploy: what to deploy, how, and why (``target`` is its model)."""

    @property
    def needs_operate(self) -> bool:
        """Whether the token must have the ``operate`` scope (an export only reads)."""
        return self.verb != "export"

    @property
    def noun(self) -> str:
        """What the action is about: ``process``, ``model``, ``incident`` or ``host``."""
        if self.verb in PROCESS_VERBS:
            return "process"
        if self.verb == "probe":
            return "model"
        if self.verb in ("acknowledge", "resolve"):
            return "incident"
        if self.verb in ("silence", "expire"):
            return "silence"
        if self.verb == "approve":
            return "deployment"
        if self.verb in ("rollback", "deploy"):
            return "model"
        return "host"

    def question(self) -> Text:
        """``Restart process vllm?``, the target escaped (it is agent data)."""
        out = Text()
        if self.verb == "silence":
            out.append("Silence alert ")
            out.append(clean(self.target, 64), style="bold")
            out.append(f" for {clean(self.duration, 16)}?")
            return out
        if self.verb == "rollback":
            out.append("Roll back model ")
            out.append(clean(self.target, 64), style="bold")
            out.append(" to ")
            if self.version:
                out.append(f"version {clean(self.version, 200)[:12]}", style="bold")
            else:
                out.append("its last known-good version")
            out.append("?")
            return out
        if self.verb == "deploy":
            out.append("Deploy a new version of model ")
            out.append(clean(self.target, 64), style="bold")
            out.append("?")
            return out
        if self.verb == "export":
            out.append("Export the host report of ")
        elif self.verb == "probe":
            out.append("Probe model ")
        else:
            out.append(f"{self.verb.capitalize()} {self.noun} ")
        if self.noun in ("incident", "silence", "deployment"):
            out.append(f"#{clean(self.target, 20)}", style="bold")
        else:
            out.append(clean(self.target, 64), style="bold")
        out.append(" now?" if self.verb == "probe" else "?")
        return out

    def consequence(self) -> Text:
        """What will happen, and where an export goes."""
        out = Text()
        if self.deploy is not None:
            out.append_text(deploy_summary(self.deploy))
            out.append("\n")
            out.append(deploy_consequence(self.deploy))
            return out
        if self.about:
            out.append(clean(self.about, 300), style="bold")
            out.append("\n")
        to_version = self.verb == "rollback" and self.version
        out.append(_ROLLBACK_TO if to_version else _CONSEQUENCES[self.verb])
        if self.matchers:
            out.append("\nMatchers ")
            out.append(clean(" ".join(self.matchers), 300), style="bold")
        if self.path is not None:
            out.append("\nSaved to ")
            out.append(str(self.path), style="bold")
        return out

    def label(self) -> str:
        """The confirm button: ``Restart``, ``Probe now``, ``Export``."""
        if self.verb == "rollback":
            return "Roll back"
        if self.verb == "deploy":
            return "Deploy"
        return "Probe now" if self.verb == "probe" else self.verb.capitalize()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an accepted action did.

    Attributes:
        text: In words, for a notification.
        deployment_id: The deployment a deploy or rollback made (the view selects it).
    """

    text: str
    deployment_id: int | None = None


async def perform(client: AgentClient, action: OperatorAction) -> str:
    """Carry out ``action`` against the agent; what happened, in words (see :func:`carry_out`)."""
    return (await carry_out(client, action)).text


async def carry_out(client: AgentClient, action: OperatorAction) -> Outcome:
    """Carry out ``action`` against the agent.

    Returns:
        What happened, in words for a notification, and the deployment it made, if any.

    Raises:
        AgentError: the agent refused (read-only token, action does not apply) or was not
            reached; the message says which.
    """
    if action.verb in ("deploy", "rollback"):
        return await _deploy_or_rollback(client, action)
    return Outcome(await _perform(client, action))


async def _deploy_or_rollback(client: AgentClient, action: OperatorAction) -> Outcome:
    name = clean(action.target, 64)
    if action.verb == "rollback":
        dep = await client.rollback_model(action.target, action.version or None)
        what = f"rollback of {name}"
    else:
        draft = action.deploy
        if draft is None:
            raise AgentError("no deploy to send", "config")
        dep = await client.deploy_model(
            draft.model,
            draft.artifact.strip(),
            strategy=draft.strategy,
            bake=draft.bake.strip() or None,
            notes=draft.notes.strip() or None,
        )
        what = f"deploy of {name}"
    dep_id = dep.get("id")
    return Outcome(
        f"{what}: deployment #{clean(dep_id, 12)} {clean(dep.get('state'), 24)}",
        dep_id if isinstance(dep_id, int) and not isinstance(dep_id, bool) else None,
    )


async def _perform(client: AgentClient, action: OperatorAction) -> str:
    name = clean(action.target, 64)
    if action.verb in PROCESS_VERBS:
        before = await client.process_action(action.target, action.verb)
        return f"{action.verb} of {name} accepted (was {clean(before.state, 16)})"
    if action.verb == "probe":
        await client.probe_now(action.target)
        return f"probe of {name} requested"
    if action.verb in ("acknowledge", "resolve"):
        try:
            incident_id = int(action.target)
        except ValueError:
            raise AgentError(f"not an incident number: {name!r}", "config") from None
        if action.verb == "acknowledge":
            await client.acknowledge(incident_id)
            return f"incident #{incident_id} acknowledged"
        await client.resolve(incident_id)
        return f"incident #{incident_id} resolved"
    if action.verb == "silence":
        made = await client.create_silence(list(action.matchers), action.duration, action.comment)
        return f"silence #{clean(made.get('id'), 12)} created for {clean(action.duration, 16)}"
    if action.verb == "approve":
        dep = await client.approve_deployment(_number(action.target, "deployment"))
        return f"deployment #{clean(dep.get('id'), 12)} approved: {clean(dep.get('state'), 24)}"
    if action.verb == "expire":
        try:
            silence_id = int(action.target)
        except ValueError:
            raise AgentError(f"not a silence number: {name!r}", "config") from None
        await client.expire_silence(silence_id)
        return f"silence #{silence_id} expired"
    if action.path is None:
        raise AgentError("no path to save the report to", "config")
    body = await client.report("html")
    path = await asyncio.to_thread(write_new_file, action.path, body)
    return f"report saved to {path}"


def _number(value: str, what: str) -> int:
    """``value`` as the id of a ``what``, else an :class:`AgentError` naming it."""
    try:
        return int(value)
    except ValueError:
        raise AgentError(f"not a {what} number: {clean(value, 64)!r}", "config") from None


def report_path(directory: Path, host: str, now_s: float | None = None) -> Path:
    """Where an export of ``host``'s report goes: ``DIR/vigil-report-HOST-DATE-TIME.html``.

    The host name is agent data: anything but letters, digits, ``.``, ``_`` and ``-`` becomes
    ``_`` so that a host called ``../../etc/x`` cannot steer the file elsewhere.
    """
    safe_host = re.sub(r"[^A-Za-z0-9._-]", "_", clean(host, 64)).lstrip(".") or "host"
    stamp = time.strftime("%Y-%m-%d-%H%M%S", time.localtime(now_s))
    return directory / f"vigil-report-{safe_host}-{stamp}.html"


def write_new_file(path: Path, body: bytes) -> Path:
    """Write ``body`` to ``path``, or to ``path`` with ``-2``, ``-3``... if it exists: an export
    never overwrites an earlier one.

    Returns:
        The path written.

    Raises:
        AgentError: the file could not be written (kind ``config``), with the reason.
    """
    candidate = path
    for n in range(2, 100):
        try:
            with candidate.open("xb") as fh:
                fh.write(body)
            return candidate
        except FileExistsError:
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        except OSError as exc:
            raise AgentError(f"cannot write {candidate}: {exc.strerror or exc}", "config") from exc
    raise AgentError(f"cannot write {path}: too many reports of that name", "config")
