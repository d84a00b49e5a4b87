"""One config deployment through the deploy state machine (:class:`ConfigRunner`).

The runner of :mod:`agent.deploy.runner` with the steps of a config deploy: taking the
baseline (none when the canary changed: the previous one asked something else), applying the
new tables through :class:`Tables` (the process is replaced, a planned restart named
``config deploy #ID``) and waiting for its startup gate, the bake, and rolling back by applying
the previous tables again. After an agent restart the previous tables are unknown (they were
only ever in memory), so a resumed deploy that fails ends ``failed`` with the file's config
running; see :mod:`agent.deploy.configdeploy` for the whole story.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from agent.deploy.configplan import ConfigChange, tables_hash
from agent.deploy.gate import Baseline, Outcome, Verdict
from agent.deploy.restart import StartResult, restart_and_wait
from agent.deploy.runner import Runner
from agent.deploy.strategy import InPlace, Rollout
from agent.deploy.support import DeploySupport
from probes.base import now_ms
from storage.deployments import Deployment
from storage.records import DeployState

__all__ = ["ConfigRunner", "Tables"]

S = DeployState


class Tables(Protocol):
    """How a config deploy applies tables (:class:`agent.deploy.configdeploy.ConfigDeploys`)."""

    async def switch(
        self,
        change: ConfigChange,
        *,
        forward: bool,
        reason: str,
        applied: asyncio.Event | None = None,
    ) -> StartResult:
        """Apply the new (``forward``) or old tables and wait for the process's gate."""

    def reject(self, dep: Deployment, change: ConfigChange, reason: str) -> None:
        """Remember tables rolled back while the file still holds them."""


class ConfigRunner(Runner):
    """One config deployment through the state machine (see the module docstring)."""

    def __init__(
        self,
        engine: DeploySupport,
        dep: Deployment,
        strategy: InPlace,
        ro: Rollout,
        change: ConfigChange | None,
        configs: Tables,
    ) -> None:
        super().__init__(engine, dep, strategy, ro)
        self.change = change
        self.configs = configs
        self.applied = asyncio.Event()
        """Set once the new table is applied (or the deploy ended before it was)."""

    @property
    def reason(self) -> str:
        """What the planned restart says: ``config deploy #12``."""
        return f"config deploy #{self.dep.id}"

    async def _switch(self) -> None:
        try:
            await self._apply_and_bake()
        finally:
            self.applied.set()

    async def _apply_and_bake(self) -> None:
        change = self.change
        assert change is not None  # a resumed deploy never switches
        if change.canary_changed:
            # The previous canary's answers and latencies measured another request.
            baseline = Baseline()
        else:
            baseline = await self.engine.baseline(self.dep, self.ro)
        await self.move(
            S.SWITCHING,
            f"applying the new config of {change.what}",
            evidence={
                "baseline": baseline.to_json(),
                "replaced": self.strategy.incarnation(self.ro),
            },
        )
        restart = f"; restarting {change.process} ({self.reason})" if change.process_changed else ""
        ready = await self.configs.switch(
            change, forward=True, reason=self.reason, applied=self.applied
        )
        await self.move(
            S.STARTING,
            f"new config of {change.what} applied{restart}",
            evidence={"switched_ms": now_ms()},
        )
        if self.abort_by is not None:
            await self._roll_back(f"rolled back by {self.abort_by} while starting", {}, page=False)
            return
        if not ready.ok:
            await self._roll_back(
                f"the new config did not start: {ready.detail}", {"start": ready.to_json()}
            )
            return
        await self._baking_from(ready.at_ms, {"ready": ready.to_json()})

    async def _roll_back(
        self, reason: str, evidence: dict[str, Any], *, page: bool = True, again: bool = False
    ) -> None:
        d, change = self.dep, self.change
        incident = None
        if page:
            failure = {
                **evidence,
                "baseline": self.checks.get("baseline"),
                "config_diff": d.config_diff,
            }
            incident = self.engine.open_failed_incident(
                d, reason, {**failure, "rollback_target": "the previous config"}
            )
        if change is None:
            await self.move(
                S.FAILED,
                "the previous config is not known after an agent restart: the file's config stays",
                error=f"{reason}; the previous config was lost with the agent's restart",
                incident_id=incident,
                evidence={**evidence, "failed_ms": now_ms()},
            )
            return
        await self.move(
            S.ROLLING_BACK,
            f"{reason}; re-applying the previous config of {change.what}",
            error=reason,
            incident_id=incident,
            evidence={**evidence, "failed_ms": now_ms(), "rollback_target": "the previous config"},
        )
        res = await self.configs.switch(change, forward=False, reason=f"{self.reason} rolled back")
        if not res.ok:
            await self.move(
                S.FAILED,
                f"the previous config did not come up: {res.detail}",
                error=f"{reason}; rollback failed: {res.detail}",
                evidence={"rollback": res.to_json()},
            )
            return
        self.configs.reject(d, change, reason)
        await self.move(
            S.ROLLED_BACK,
            f"the previous config of {change.what} runs again ({res.detail}); the file differs",
            evidence={"restored": res.to_json(), "restored_ms": now_ms(), "file_differs": True},
        )

    async def _resume(self) -> None:
        d, st = self.dep, self.dep.state
        self.emit("deploy.resumed", f"resuming in {st} after an agent restart", None, {})
        if st == S.PROMOTING:
            await self._promote(Verdict(Outcome.PASS, ()))
            return
        if st == S.ROLLING_BACK:
            await self._roll_back(d.error or "rolling back", {}, page=False)
            return
        m = self.engine.model(d.model)
        procs = {p.name: p for p in self.engine.host.config.processes}
        proc = procs.get(self.ro.process) if self.checks.get("process_changed") else None
        canary = m.canary if self.checks.get("canary_changed") else None
        if tables_hash(proc, m.name, canary) != self.checks.get("new_hash"):
            await self.move(
                S.CANCELLED, "the config file changed while the agent was away: superseded"
            )
            return
        started = self.checks.get("bake_started_ms")
        if st == S.BAKING and isinstance(started, int):
            await self._bake(started, resumed=True)
            return
        if proc is not None:
            # Stopped before or during the restart: the process may still run the old table.
            ready = await restart_and_wait(
                self.engine.host.supervisor, proc.name, d.requested_by, f"{self.reason} resumed"
            )
            if not ready.ok:
                await self._roll_back(
                    f"the new config did not start: {ready.detail}", {"start": ready.to_json()}
                )
                return
            await self._baking_from(ready.at_ms, {"ready": ready.to_json()})
            return
        await self._baking_from(
            now_ms(), {"ready": {"detail": "the canary runs after an agent restart"}}
        )
