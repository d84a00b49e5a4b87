"""Config deploys: a changed ``[[process]]`` or ``[model.canary]`` of a deployable model, gated
like an artifact deploy (kind ``config``, strategy ``in-place``).

A reload is sorted by :func:`agent.deploy.configplan.plan`; the agent applies the rest at once
and hands the changes to :meth:`ConfigDeploys.start`, which stores a deployment per change
(with the diff of its tables, secrets redacted: :mod:`agent.deploy.configdiff`) and runs it
(:class:`~agent.deploy.configrunner.ConfigRunner`):

    requested ▶ switching (the new table is applied: the process is replaced, a planned restart
    whose reason names the deploy) ▶ starting (its startup gate) ▶ baking (the canary gate) ▶
    promoted, or rolling_back (the previous table, kept in memory, is applied again) ▶
    rolled_back

A rolled-back change leaves the file holding a table that does not run: a
``config.rolled_back`` event and log line say so, and ``GET /api/v1/config`` (and ``vigil
status``) show "config rolled back, file differs" until the file is changed: back to what runs
(forgotten), or to a new table (deployed). A reload that still finds the rolled-back table
deploys nothing. A change of a model with a deploy in flight (artifact or config) is **held**:
the running table stays, and the engine asks for a reload when that deploy ends, which deploys
it then; an artifact deploy requested while a config deploy is in flight is refused, naming
it, like any second deploy.

After an agent restart the previous table is gone (it was only ever in memory: an environment
may hold secrets, which the database must not). A config deploy the agent finds in flight then
resumes its bake when the file's table is the one it deployed (else it is cancelled: the file
changed meanwhile); if the bake fails then, or it was rolling back, it ends ``failed`` with
the file's config running and a ``deploy_failed`` incident saying so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from agent.config import Config, DeployConfig, ModelConfig, ProcessConfig
from agent.deploy.configplan import (
    ConfigChange,
    ConfigPlan,
    Held,
    canary_key,
    plan,
    process_key,
)
from agent.deploy.configrunner import ConfigRunner
from agent.deploy.restart import FAILED_START, StartResult, process_identity
from agent.deploy.runner import Runner
from agent.deploy.store import DeployStore
from agent.deploy.strategy import InPlace, Rollout
from agent.deploy.support import DeployHost
from agent.supervise.core import ProcessCore
from probes.base import now_ms
from storage import deployments as deps
from storage.deployments import DeployInFlight, Deployment
from storage.records import DeployKind, DeployState, DeployStrategy, Event, ProcessState

log = logging.getLogger("vigil.deploy")

__all__ = ["ConfigDeploys", "Rejected"]

S = DeployState
MARGIN_S = 5.0


class Engine(Protocol):
    """What config deploys use of the engine (:class:`agent.deploy.engine.DeployEngine`)."""

    host: DeployHost
    store: DeployStore
    active: dict[str, Runner]
    _reserved: set[str]

    def model(self, name: str) -> ModelConfig:
        """The configured model (DeployError 404 if unknown)."""

    def deploy_config(self, m: ModelConfig) -> DeployConfig:
        """The model's ``[model.deploy]``, or its defaults."""

    def _spawn(self, coro: Any, name: str) -> None:
        """Run a task the engine keeps (and stops with the agent)."""


class ReloadingHost(Protocol):
    """What config deploys need of the agent beyond a deploy's (``agent.runtime.daemon``)."""

    config: Config

    async def apply(self, config: Config, *, seed_drift: bool = False, reason: str = "") -> None:
        """Make ``config`` the running one."""

    def request_reload(self, trigger: str = "signal") -> None:
        """Re-read the config file soon."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """A table a config deploy rolled back, which the file still holds."""

    deployment_id: int
    model: str
    what: str
    table: Any
    at_ms: int
    reason: str


class ConfigDeploys:
    """The config deploys of one engine (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rejected: dict[str, Rejected] = {}
        self.held: dict[str, Held] = {}
        self._lock = asyncio.Lock()

    @property
    def host(self) -> ReloadingHost:
        """The agent (which applies configs and re-reads its file)."""
        return self.engine.host  # type: ignore[return-value]  # the daemon is both

    # --- a reload ------------------------------------------------------------------------

    def busy(self, model: str) -> int | None:
        """The id of the model's deploy in flight (-1 while one is being requested)."""
        runner = self.engine.active.get(model)
        if runner is not None:
            return runner.dep.id
        return -1 if model in self.engine._reserved else None

    def plan(self, running: Config, new: Config, trigger: str) -> ConfigPlan:
        """Sort a reload; hold what must wait, forget what the file agrees with again."""
        tables = {k: r.table for k, r in self.rejected.items()}
        p = plan(running, new, self.busy, tables)
        for key in p.agreed:
            gone = self.rejected.pop(key, None)
            if gone is not None:
                log.info(
                    "config agrees with the file again key=%s deployment=%d",
                    key,
                    gone.deployment_id,
                )
        for h in p.held:
            self.held[h.model] = h
            self._event(
                h.model,
                "deploy.config_held",
                f"config change of {h.what} ({trigger}) held: deploy #{h.deployment_id} is in "
                "flight; it is deployed when that one ends",
                {"deployment": h.deployment_id, "trigger": trigger},
            )
        return p

    def agreed(self) -> None:
        """The file says exactly what runs: no change is rolled back or held any more."""
        for key, r in self.rejected.items():
            log.info("config agrees with the file again key=%s deployment=%d", key, r.deployment_id)
        self.rejected.clear()
        self.held.clear()

    async def start(self, p: ConfigPlan, trigger: str) -> None:
        """Store and run the plan's changes (after the rest of the reload was applied)."""
        for change in p.changes:
            self.held.pop(change.model, None)
            for key in (process_key(change.process or ""), canary_key(change.model)):
                self.rejected.pop(key, None)
            try:
                dep = await self._store(change, trigger)
            except DeployInFlight as exc:
                self.held[change.model] = Held(change.model, exc.deployment.id, change.what)
                continue
            except Exception as exc:  # storage failing: apply as before config deploys
                log.error(
                    "config deploy not stored; applied ungated model=%s error=%r",
                    change.model,
                    str(exc),
                )
                await self.switch(change, forward=True, reason="config change (not recorded)")
                continue
            runner = self.runner(dep, change)
            self.engine.active[change.model] = runner
            runner.emit(
                "deploy.requested",
                f"config change of {change.what} ({trigger})",
                None,
                {"diff": change.diff, "trigger": trigger},
            )
            self.engine._spawn(runner.run(), f"deploy:{dep.id}")
            # The next reload must find the new table running, not deploy it a second time.
            await runner.applied.wait()

    async def _store(self, change: ConfigChange, trigger: str) -> Deployment:
        m = self.engine.model(change.model)
        dc = self.engine.deploy_config(m)
        now = now_ms()
        by = f"config reload ({trigger})"
        row = Deployment(
            id=0,
            model=change.model,
            kind=DeployKind.CONFIG,
            strategy=DeployStrategy.IN_PLACE,
            state=S.REQUESTED,
            requested_by=by,
            requested_ms=now,
            state_since_ms=now,
            process=change.process or m.deploy_process,
            bake_s=dc.bake_s,
            config_diff=change.diff,
            notes=f"config change of {change.what}",
            checks={
                "operation": "config",
                "operator": by,
                "trigger": trigger,
                "config_path": str(self.host.config.path or ""),
                "process_changed": change.process_changed,
                "canary_changed": change.canary_changed,
                "old_hash": change.old_hash,
                "new_hash": change.new_hash,
                "target": "",
            },
        )
        return await self.engine.store.write(lambda c: deps.insert_deployment(c, row))

    def runner(self, dep: Deployment, change: ConfigChange | None = None) -> ConfigRunner:
        """The runner of a config deployment (``change`` None: resumed, tables unknown)."""
        m = self.engine.model(dep.model)
        process = dep.process or m.deploy_process or ""
        link = m.deploy.link if m.deploy is not None and m.deploy.link else Path()
        ro = Rollout(dep.id, m, process, link, dep.requested_by)
        strategy = InPlace(self.engine.host.supervisor)
        return ConfigRunner(self.engine, dep, strategy, ro, change, self)  # type: ignore[arg-type]

    def finished(self, dep: Deployment) -> None:
        """A deploy of the model ended: a change held for it is deployed now (by a reload)."""
        if dep.state.final and self.held.pop(dep.model, None) is not None:
            self.host.request_reload("held config change")

    # --- applying a table ------------------------------------------------------------------

    def _with(self, config: Config, change: ConfigChange, forward: bool) -> Config:
        proc = change.new_process if forward else change.old_process
        canary = change.new_canary if forward else change.old_canary
        processes = tuple(
            proc if proc is not None and p.name == proc.name else p for p in config.processes
        )
        models = tuple(
            dataclasses.replace(m, canary=canary)
            if canary is not None and m.name == change.model
            else m
            for m in config.models
        )
        return dataclasses.replace(config, processes=processes, models=models)

    async def switch(
        self,
        change: ConfigChange,
        *,
        forward: bool,
        reason: str,
        applied: asyncio.Event | None = None,
    ) -> StartResult:
        """Apply the change's new (``forward``) or old tables over what runs (then set
        ``applied``), and wait for the replaced process's startup gate (at once when only the
        canary changed)."""
        sup = self.engine.host.supervisor
        name = change.process if change.process_changed else None
        old = sup.processes.get(name) if name else None
        changes: asyncio.Queue[tuple[ProcessState, int | None, str | None, int]] = asyncio.Queue()

        def listen(p: ProcessCore) -> None:
            if p.config.name == name and p is not old:
                changes.put_nowait((p.state, p.pid, p.detail or p.last_exit, p.since_ms))

        sup.state_listeners.append(listen)
        try:
            async with self._lock:
                try:
                    await self.host.apply(
                        self._with(self.host.config, change, forward), reason=reason
                    )
                finally:
                    if applied is not None:
                        applied.set()
            if name is None:
                return StartResult(True, now_ms(), "the canary runs")
            cfg: ProcessConfig | None = change.new_process if forward else change.old_process
            if cfg is None:
                cfg = sup.processes[name].config
            budget = cfg.stop_timeout_s + cfg.startup_timeout_s + MARGIN_S
            return await _ready(sup.processes, name, changes, budget)
        finally:
            sup.state_listeners.remove(listen)

    def reject(self, dep: Deployment, change: ConfigChange, reason: str) -> None:
        """The change was rolled back: remember its tables until the file changes them."""
        at = now_ms()
        if change.process_changed:
            self.rejected[process_key(change.process or "")] = Rejected(
                dep.id, dep.model, f"process {change.process}", change.new_process, at, reason
            )
        if change.canary_changed:
            self.rejected[canary_key(change.model)] = Rejected(
                dep.id,
                dep.model,
                f"the canary of model {change.model}",
                change.new_canary,
                at,
                reason,
            )
        path = self.host.config.path
        message = (
            f"config deploy #{dep.id} of {change.what} rolled back: the previous config runs, "
            f"and the file {path} differs from it until it is changed"
        )
        log.warning(
            "config rolled back, file differs deployment=%d model=%s what=%s path=%s",
            dep.id,
            dep.model,
            change.what,
            path,
        )
        self._event(
            dep.model,
            "config.rolled_back",
            message,
            {"deployment": dep.id, "path": str(path), "reason": reason, "diff": change.diff},
        )

    def _event(self, model: str, kind: str, message: str, data: Mapping[str, Any]) -> None:
        self.engine.host.emit(
            Event(
                ts_ms=now_ms(),
                kind=kind,
                subject=f"model:{model}",
                message=message,
                data=dict(data),
            )
        )

    def state(self) -> dict[str, Any]:
        """``GET /api/v1/config``: whether the file says what runs, and if not, why."""
        path = self.host.config.path
        rolled = [
            {
                "key": key,
                "model": r.model,
                "what": r.what,
                "deployment": r.deployment_id,
                "at_ms": r.at_ms,
                "reason": r.reason,
            }
            for key, r in sorted(self.rejected.items())
        ]
        held = [
            {"model": h.model, "what": h.what, "waits_for": h.deployment_id}
            for h in sorted(self.held.values(), key=lambda h: h.model)
        ]
        return {
            "path": None if path is None else str(path),
            "file_differs": bool(rolled or held),
            "rolled_back": rolled,
            "held": held,
        }


async def _ready(
    processes: Mapping[str, ProcessCore],
    name: str,
    changes: asyncio.Queue[tuple[ProcessState, int | None, str | None, int]],
    budget_s: float,
) -> StartResult:
    """Wait until the replacement of process ``name`` runs (its startup gate opened), or
    fails to come up, or ``budget_s`` passes."""
    deadline = time.monotonic() + budget_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return StartResult(False, now_ms(), f"not ready within {budget_s:g}s")
        try:
            state, pid, detail, since = await asyncio.wait_for(changes.get(), left)
        except TimeoutError:
            continue
        if state == ProcessState.RUNNING and pid is not None:
            mp = processes.get(name)
            who = process_identity(mp) if mp is not None else None
            return StartResult(True, since, f"pid {pid} is running", who)
        if state in FAILED_START:
            return StartResult(False, since, f"{state}: {detail or 'no detail'}")
