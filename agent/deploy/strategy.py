"""How a deploy reaches the model's traffic: the :class:`Strategy` steps, and ``in-place``.

The state machine (:mod:`agent.deploy.runner`) is the same for every strategy; a strategy only
says how to do each step for one :class:`Rollout`:

- :meth:`Strategy.prepare` checks, before anything changes, that the step can be done (the link
  is a symlink, the process is one the agent starts and is in a state to be restarted);
- :meth:`Strategy.switch` points the model at a version (in-place: the symlink) and
  :meth:`Strategy.confirm` waits until that version serves (in-place: a planned restart and the
  startup gate);
- :meth:`Strategy.preflight` checks, before anything is stored, what needs I/O (blue-green: the
  front proxy's own check, the spare port free);
- :meth:`Strategy.cut_over` moves the traffic to the version the gate passed, before it is
  promoted (in-place: it already has it; blue-green: the proxy switch), and may fail, which
  rolls the deploy back;
- :meth:`Strategy.finish` ends a promotion (blue-green: drain and stop the old copy);
- :meth:`Strategy.rollback` points the model back at a version and waits until it serves;
- :meth:`Strategy.serving` tells a resuming agent whether a version is the one serving now
  (switched to, and served by another incarnation than the one before the switch, which
  :meth:`Strategy.incarnation` names); :meth:`Strategy.abandon` undoes what a deploy killed
  before its switch had started (blue-green: a new copy already launched).

A strategy stores how far it got inside a state through its :class:`Journal` (the runner), so
a resuming agent knows. ``in-place`` is here; ``blue-green`` (start the new copy beside the old
one, gate it there, switch the front proxy, drain) is :mod:`agent.deploy.bluegreen`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from agent.config import ModelConfig
from agent.deploy.errors import DeployError
from agent.deploy.link import LinkError, read_link, switch_link
from agent.deploy.restart import StartResult, process_identity, restart_and_wait, same_process
from agent.supervise.supervisor import Supervisor
from probes.base import now_ms
from storage.records import ProcessState

__all__ = [
    "REFUSED_PROCESS_STATES",
    "STRATEGIES",
    "InPlace",
    "Journal",
    "Rollout",
    "Strategy",
    "same_path",
]

REFUSED_PROCESS_STATES = {
    ProcessState.QUARANTINED: "release it first (vigil process release {name}), or fix what "
    "crashes it",
    ProcessState.STOPPED: "an operator stopped it; start it first (vigil process start {name})",
    ProcessState.BLOCKED: "it waits for a dependency that is not running",
    ProcessState.STOPPING: "it is being stopped",
}
"""Process states a deploy is refused in, with what to do about it."""


@dataclass(frozen=True, slots=True)
class Rollout:
    """One deployment as a strategy sees it."""

    deployment_id: int
    model: ModelConfig
    process: str
    link: Path
    by: str
    """Who the restart is recorded as asked by (the requester)."""

    @property
    def reason(self) -> str:
        """What the planned restart says: ``deploy #12 by alice``."""
        return f"deploy #{self.deployment_id} by {self.by}"


class Journal(Protocol):
    """Where a strategy keeps how far it got (the deploy's runner, over its stored row)."""

    @property
    def checks(self) -> dict[str, Any]:
        """The deployment's evidence so far."""
        ...

    @property
    def addresses(self) -> dict[str, str]:
        """The deployment's copies' addresses so far."""
        ...

    async def note(
        self,
        step: str,
        *,
        evidence: Mapping[str, Any] | None = None,
        addresses: Mapping[str, str] | None = None,
    ) -> None:
        """Store ``step`` inside the current state, with evidence and addresses, before the
        strategy acts on it."""
        ...


class Strategy(ABC):
    """The steps of one way to deploy (see the module docstring)."""

    name: ClassVar[str]
    journal: Journal | None = None

    def attach(self, journal: Journal) -> None:
        """The runner this strategy's steps are stored through."""
        self.journal = journal

    def started_message(self, ro: Rollout, target: Path) -> str:
        """What the ``starting`` event says the switch did."""
        return f"{ro.link} -> {target}; restarting {ro.process} ({ro.reason})"

    async def preflight(self, ro: Rollout) -> None:  # noqa: B027 - optional step
        """Refuse (:class:`DeployError`) what needs I/O to see; changes nothing."""

    async def cut_over(self, ro: Rollout) -> StartResult:
        """Move the traffic to the version the gate passed (in-place: it has it already)."""
        return StartResult(True, now_ms(), "serving since its restart")

    async def shutdown(self, ro: Rollout) -> None:  # noqa: B027 - optional step
        """The agent stops with ``on_exit = "stop"``: stop what the deploy started that the
        supervisor does not (in-place: nothing)."""

    async def abandon(self, ro: Rollout) -> None:  # noqa: B027 - optional step
        """Undo what a deploy stopped before its switch had started left (in-place: nothing:
        the link still names the old version and nothing was restarted)."""

    @abstractmethod
    def prepare(self, ro: Rollout) -> None:
        """Refuse (:class:`DeployError`) what cannot be deployed now; changes nothing."""

    @abstractmethod
    async def switch(self, ro: Rollout, target: Path) -> Path | None:
        """Point the model at ``target``; returns what it pointed at before."""

    @abstractmethod
    async def confirm(self, ro: Rollout) -> StartResult:
        """Wait until the switched-to version serves (or did not come up)."""

    async def finish(self, ro: Rollout) -> dict[str, object]:
        """End a promotion; returns evidence (in-place: nothing left to do)."""
        return {}

    async def rollback(self, ro: Rollout, target: Path) -> StartResult:
        """Point the model back at ``target`` and wait until it serves."""
        try:
            await self.switch(ro, target)
        except (LinkError, DeployError) as exc:
            return StartResult(False, now_ms(), f"cannot switch back to {target}: {exc}")
        return await self.confirm(ro)

    @abstractmethod
    def serving(self, ro: Rollout, target: Path, replaced: Mapping[str, Any] | None) -> bool:
        """Whether ``target`` is what serves now, by another incarnation than ``replaced``
        (the one running before the switch: it may have loaded the old version)."""

    @abstractmethod
    def incarnation(self, ro: Rollout) -> dict[str, Any] | None:
        """What serves now, as :meth:`serving` compares it (in-place: the process)."""


class InPlace(Strategy):
    """Switch the ``current`` symlink, restart the process (planned), wait for its gate."""

    name = "in-place"

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def prepare(self, ro: Rollout) -> None:
        mp = self.supervisor.processes.get(ro.process)
        if mp is None:
            raise DeployError(
                f"process {ro.process!r} of model {ro.model.name!r} is not running "
                "under this agent",
                409,
            )
        if mp.config.kind != "command":
            raise DeployError(
                f"process {ro.process!r} is a {mp.config.kind} target; an in-place deploy "
                "restarts a process the agent starts itself (a command)",
                400,
            )
        todo = REFUSED_PROCESS_STATES.get(mp.state)
        if todo is not None:
            raise DeployError(
                f"process {ro.process!r} is {mp.state}: {todo.format(name=ro.process)}", 409
            )
        try:
            read_link(ro.link)
        except LinkError as exc:
            raise DeployError(str(exc), 400) from None

    async def switch(self, ro: Rollout, target: Path) -> Path | None:
        return await asyncio.to_thread(switch_link, ro.link, target)

    async def confirm(self, ro: Rollout) -> StartResult:
        return await restart_and_wait(self.supervisor, ro.process, ro.by, ro.reason)

    def serving(self, ro: Rollout, target: Path, replaced: Mapping[str, Any] | None) -> bool:
        try:
            now = read_link(ro.link)
        except LinkError:
            return False
        mp = self.supervisor.processes.get(ro.process)
        if now is None or mp is None or mp.state != ProcessState.RUNNING:
            return False
        running = process_identity(mp)
        return same_path(now, target) and not same_process(running, replaced)

    def incarnation(self, ro: Rollout) -> dict[str, Any] | None:
        mp = self.supervisor.processes.get(ro.process)
        return None if mp is None else process_identity(mp)


def same_path(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (resolved; a missing one compares as written)."""
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


STRATEGIES: dict[str, type[InPlace]] = {InPlace.name: InPlace}
"""Strategies by ``[model.deploy] strategy``."""
