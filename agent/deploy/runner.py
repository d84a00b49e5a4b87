"""One deployment's run through the state machine, from ``requested`` to a final state::

    requested ─(approval?)─▶ switching ─▶ starting ─▶ baking ─▶ promoting ─▶ promoted
        │ awaiting_approval ─▶ cancelled   │ start failed │ gate failed
        │                                  ▼              ▼
        └───────────────────────────▶ rolling_back ─▶ rolled_back | failed

Each state is stored *before* what it names is done (``switching`` before the link moves,
``starting`` before the restart, ``promoting`` before the version is marked known-good), with
the evidence so far in ``checks``, and each move is a ``deploy.<state>`` audit event. An agent
killed mid-deploy therefore finds where it was, and :meth:`Runner.resume` applies one rule:

- ``requested``: nothing changed yet, so the deploy simply runs;
- ``switching``, ``starting``, ``baking``: if the new version is what serves now (the link
  points at it and the process was started after the switch), the bake resumes from its stored
  start (or starts now, from ``starting``); otherwise it rolls back. ``switching`` with the link
  still on the old version and the process untouched changed nothing: ``cancelled``;
- ``promoting``: the promotion is finished; ``rolling_back``: the rollback is done again
  (switching the link is idempotent) unless it had completed.

Rolling back goes to the last known-good version whose files are still there, else to what the
link pointed at before the deploy; with neither, the deploy ends ``failed`` and the link stays
on the new version (it exists and serves). The link never points at a missing version.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.deploy.gate import BakeGate, Baseline, Canary, Outcome, Verdict
from agent.deploy.link import read_link
from agent.deploy.restart import settled
from agent.deploy.store import StorageUnavailable
from agent.deploy.strategy import Rollout, Strategy, same_path
from probes.base import now_ms
from storage import deployments as deps
from storage.deployments import Deployment
from storage.queries import recent_probe_runs
from storage.records import DeployState, Event, ProbeRun

if TYPE_CHECKING:
    from agent.deploy.support import DeploySupport

log = logging.getLogger("vigil.deploy")

__all__ = ["Runner"]

S = DeployState
EVIDENCE_CANARIES = 20
"""The bake's last canaries kept in a deploy's evidence (and its incident's)."""
TICK_S = 1.0
"""The bake is judged at least this often (incidents and drift change between probe runs)."""


class Runner:
    """Drives one deployment; the engine holds one per model in flight."""

    def __init__(self, engine: DeploySupport, dep: Deployment, strategy: Strategy, ro: Rollout):
        self.engine = engine
        self.dep = dep
        self.strategy = strategy
        self.ro = ro
        self.gate: BakeGate | None = None
        self.wake = asyncio.Event()
        self.abort_by: str | None = None
        """Set by an operator's rollback while the deploy is starting or baking."""
        strategy.attach(self)

    # --- storage and events ------------------------------------------------------------

    @property
    def checks(self) -> dict[str, Any]:
        """The evidence so far (stored in the deployment's ``checks``)."""
        return dict(self.dep.checks)

    @property
    def addresses(self) -> dict[str, str]:
        """The copies' addresses so far (blue-green; stored in the deployment's ``addresses``)."""
        return dict(self.dep.addresses)

    async def note(
        self,
        step: str,
        *,
        evidence: Mapping[str, Any] | None = None,
        addresses: Mapping[str, str] | None = None,
    ) -> None:
        """Store how far the strategy got inside the current state (before it acts on it)."""
        changes: dict[str, Any] = {"step": step}
        if evidence:
            changes["checks"] = {**self.checks, **evidence}
        if addresses:
            changes["addresses"] = {**self.dep.addresses, **addresses}
        new = dataclasses.replace(self.dep, **changes)
        try:
            self.dep = await self.engine.store.write(lambda c: deps.update_deployment(c, new))
        except StorageUnavailable as exc:
            log.error("deploy step not stored id=%d step=%s error=%s", new.id, step, exc)
            self.dep = new
        log.info("deploy id=%d model=%s step=%s", new.id, new.model, step)

    async def move(
        self, state: DeployState, message: str, *, step: str = "", **changes: Any
    ) -> None:
        """Store the deployment in ``state`` (then act), with an audit event."""
        extra = changes.pop("evidence", None)
        if extra:
            changes["checks"] = {**self.checks, **extra}
        before = self.dep.state
        new = self.dep.moved(state, now_ms(), step=step, **changes)
        try:
            self.dep = await self.engine.store.write(lambda c: deps.update_deployment(c, new))
        except StorageUnavailable as exc:
            # Carry on from memory: a rollback must never wait on a failing disk.
            log.error("deploy state not stored id=%d state=%s error=%s", new.id, state, exc)
            self.dep = new
        self.emit(f"deploy.{state}", message, before, extra or {})

    def emit(
        self, kind: str, message: str, before: DeployState | None, extra: Mapping[str, Any]
    ) -> None:
        """A ``deploy.*`` audit event about the model, with the deployment and ``extra``."""
        d = self.dep
        log.info("deploy id=%d model=%s state=%s %s", d.id, d.model, d.state, message)
        self.engine.host.emit(
            Event(
                ts_ms=d.state_since_ms,
                kind=kind,
                subject=f"model:{d.model}",
                message=f"deploy #{d.id}: {message}",
                data={
                    "deployment": d.id,
                    "state": str(d.state),
                    "from_state": None if before is None else str(before),
                    "strategy": str(d.strategy),
                    "from_version": d.from_version_id,
                    "to_version": d.to_version_id,
                    "requested_by": d.requested_by,
                    "evidence": dict(extra),
                },
            )
        )

    # --- the run -----------------------------------------------------------------------

    async def run(self) -> None:
        """From ``requested`` (approved, or needing no approval) to a final state."""
        try:
            await self._switch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave a deploy half done without a word
            log.exception("deploy crashed id=%d", self.dep.id)
            await self._roll_back(f"the deploy stopped on an internal error: {exc!r}", {})
        finally:
            self.engine.finished(self.dep)

    async def resume(self) -> None:
        """After an agent restart: continue or roll back by the rule in the module docstring."""
        try:
            await self._resume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("deploy resume crashed id=%d", self.dep.id)
            await self._roll_back(f"the deploy stopped on an internal error: {exc!r}", {})
        finally:
            self.engine.finished(self.dep)

    async def _resume(self) -> None:
        d, st = self.dep, self.dep.state
        self.emit("deploy.resumed", f"resuming in {st} after an agent restart", None, {})
        if st == S.REQUESTED:
            await self._switch()
            return
        if st == S.PROMOTING:
            await self._promote(Verdict(Outcome.PASS, ()))
            return
        await settled(self.engine.host.supervisor, self.ro.process, self._settle_s())
        target = Path(str(self.checks.get("target", "")))
        if st == S.ROLLING_BACK:
            back = Path(str(self.checks.get("rollback_target", "")))
            if self.strategy.serving(self.ro, back, self.checks.get("rollback_replaces")):
                await self._rolled_back_done("the rollback had completed before the restart")
            else:
                await self._roll_back(d.error or "rolling back", {}, again=True)
            return
        if st == S.SWITCHING:
            before = self.checks.get("previous_target")
            now = await asyncio.to_thread(read_link, self.ro.link)
            if (now is None and before is None) or (
                now is not None and before is not None and same_path(now, Path(before))
            ):
                # The link still names the old version: whatever runs serves that one.
                await self.strategy.abandon(self.ro)
                await self.move(S.CANCELLED, "the agent stopped before the switch; nothing changed")
                await self.engine.version_outcome(d.to_version_id, S.CANCELLED)
                return
        if self.strategy.serving(self.ro, target, self.checks.get("replaced")):
            started = self.checks.get("bake_started_ms")
            if st == S.BAKING and isinstance(started, int):
                await self._bake(started, resumed=True)
            else:
                ready = {"detail": "serving after an agent restart"}
                await self._baking_from(now_ms(), {"ready": ready})
            return
        await self._roll_back(
            f"the agent stopped while {st} and the new version is not serving now", {}
        )

    def _settle_s(self) -> float:
        mp = self.engine.host.supervisor.processes.get(self.ro.process)
        return (mp.config.startup_timeout_s if mp is not None else 0.0) + 5.0

    async def _switch(self) -> None:
        d = self.dep
        target = Path(str(self.checks["target"]))
        baseline = await self.engine.baseline(d, self.ro)
        await self.move(
            S.SWITCHING,
            f"switching {self.ro.link} to {target}",
            evidence={
                "baseline": baseline.to_json(),
                "replaced": self.strategy.incarnation(self.ro),
            },
        )
        try:
            self.strategy.prepare(self.ro)
            previous = await self.strategy.switch(self.ro, target)
        except Exception as exc:
            # Nothing switched: the old version still serves, untouched.
            await self.move(S.FAILED, f"could not switch: {exc}", error=f"could not switch: {exc}")
            await self.engine.version_outcome(d.to_version_id, S.FAILED)
            return
        await self.move(
            S.STARTING,
            self.strategy.started_message(self.ro, target),
            evidence={
                "switched_ms": now_ms(),
                "previous_target": None if previous is None else str(previous),
            },
        )
        ready = await self.strategy.confirm(self.ro)
        if self.abort_by is not None:
            await self._roll_back(f"rolled back by {self.abort_by} while starting", {}, page=False)
            return
        if not ready.ok:
            await self._roll_back(
                f"the new version did not start: {ready.detail}", {"start": ready.to_json()}
            )
            return
        await self._baking_from(ready.at_ms, {"ready": ready.to_json()})

    async def _baking_from(self, started_ms: int, evidence: dict[str, Any]) -> None:
        self.gate = self._gate(started_ms)  # before the write: no canary goes unseen
        await self.move(
            S.BAKING,
            f"baking for {self.dep.bake_s:g}s",
            evidence={**evidence, "bake_started_ms": started_ms},
        )
        await self._bake(started_ms)

    # --- the bake ----------------------------------------------------------------------

    def _gate(self, started_ms: int) -> BakeGate:
        m = self.ro.model
        return BakeGate(
            self.engine.deploy_config(m),
            Baseline.from_json(self.checks.get("baseline") or {}),
            started_ms=started_ms,
            bake_s=self.dep.bake_s,
            interval_s=m.interval_s,
            timeout_s=m.timeout_s,
        )

    async def _bake(self, started_ms: int, *, resumed: bool = False) -> None:
        m = self.ro.model
        gate = self.gate if self.gate is not None else self._gate(started_ms)
        self.gate = gate
        if resumed:
            runs = await self.engine.store.read(
                lambda c: recent_probe_runs(c, m.name, since_ms=started_ms, limit=1000)
            )
            seen = {c.ts_ms for c in gate.canaries}
            for run in runs:
                if run.ts_ms not in seen:
                    gate.observe(Canary.of(run, None))
            gate.canaries.sort(key=lambda c: c.ts_ms)
            # The canaries the agent missed while it was away are not held against the version.
            gate.deadline_ms = max(gate.deadline_ms, now_ms() + (gate.deadline_ms - gate.ends_ms))
        while True:
            if self.abort_by is not None:
                await self._roll_back(
                    f"rolled back by {self.abort_by} during the bake", {}, page=False
                )
                return
            verdict = gate.judge(
                now_ms(),
                self.engine.incidents_of(m.name, self.ro.process),
                self.engine.drift_of(m.name),
            )
            if verdict.outcome == Outcome.FAIL:
                await self._roll_back(
                    f"the canary gate failed: {verdict.reason}",
                    {"verdict": verdict.to_json(), "canaries": self._canaries()},
                )
                return
            if verdict.outcome == Outcome.PASS:
                await self._promote(verdict)
                return
            self.wake.clear()
            until = min(TICK_S, max(0.0, (gate.ends_ms - now_ms()) / 1000) or TICK_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), until)

    def observe(self, run: ProbeRun, answer: str | None) -> None:
        """A probe run of the model: a canary of the bake (if one runs), judged at once."""
        if self.gate is not None:
            self.gate.observe(Canary.of(run, answer))
            self.wake.set()

    def _canaries(self) -> list[dict[str, Any]]:
        got = self.gate.canaries if self.gate is not None else []
        return [c.to_json() for c in got[-EVIDENCE_CANARIES:]]

    def progress(self) -> dict[str, Any]:
        """The bake as it stands, for the API (``--wait`` prints it, the TUI shows it): with
        the gate's checks judged now (those judged only at the bake's end are absent before)."""
        g = self.gate
        if g is None or self.dep.state != S.BAKING:
            return {}
        m = self.ro.model
        verdict = g.judge(
            now_ms(),
            self.engine.incidents_of(m.name, self.ro.process),
            self.engine.drift_of(m.name),
        )
        return {
            "bake_ends_ms": g.ends_ms,
            "canaries": len(g.canaries),
            "good_in_a_row": g.good_in_a_row(),
            "needed": g.config.min_good_canaries,
            "failed": sum(1 for c in g.canaries if not c.ok),
            "checks": [c.to_json() for c in verdict.checks],
        }

    # --- promote or roll back -----------------------------------------------------------

    async def _promote(self, verdict: Verdict) -> None:
        d = self.dep
        evidence = (
            {"verdict": verdict.to_json(), "canaries": self._canaries()} if verdict.checks else {}
        )
        if d.state != S.PROMOTING:
            await self.move(S.PROMOTING, "the canary gate passed", evidence=evidence)
        cut = await self.strategy.cut_over(self.ro)
        if not cut.ok:
            await self._roll_back(
                f"the traffic switch failed: {cut.detail}", {"cut_over": cut.to_json()}
            )
            return
        await self.engine.promoted(d)
        done = await self.strategy.finish(self.ro)
        await self.move(
            S.PROMOTED,
            f"version {d.to_version_id} promoted: known-good",
            evidence={"finish": done, "promoted_ms": now_ms()},
        )

    async def _roll_back(
        self, reason: str, evidence: dict[str, Any], *, page: bool = True, again: bool = False
    ) -> None:
        """Roll back to the last known-good version (see the module docstring); ``page``
        opens a ``deploy_failed`` incident (not for an operator's own rollback); ``again``
        redoes a rollback a killed agent left unfinished."""
        d = self.dep
        back: Path | None = None
        if again:
            stored = self.checks.get("rollback_target")
            back = Path(str(stored)) if stored else None
        else:
            back_id, back = await self.engine.rollback_target(d, self.ro)
            where = None if back is None else str(back)
            incident = None
            if page:
                failure = {**evidence, "baseline": self.checks.get("baseline")}
                incident = self.engine.open_failed_incident(
                    d, reason, {**failure, "rollback_target": where}
                )
            await self.move(
                S.ROLLING_BACK,
                f"{reason}; rolling back to {back or 'nothing'}",
                error=reason,
                rollback_version_id=back_id,
                incident_id=incident,
                evidence={
                    **evidence,
                    "failed_ms": now_ms(),
                    "rollback_target": where,
                    "rollback_replaces": self.strategy.incarnation(self.ro),
                },
            )
        if back is None:
            await self.move(
                S.FAILED,
                "no known-good version to roll back to: the new version stays",
                error=f"{reason}; nothing to roll back to",
            )
            await self.engine.version_outcome(d.to_version_id, S.FAILED)
            return
        res = await self.strategy.rollback(self.ro, back)
        if not res.ok:
            await self.move(
                S.FAILED,
                f"the rollback did not come up: {res.detail}",
                error=f"{reason}; rollback failed: {res.detail}",
                evidence={"rollback": res.to_json()},
            )
            await self.engine.version_outcome(d.to_version_id, S.FAILED)
            return
        await self._rolled_back_done(f"{back} serves again ({res.detail})", res.to_json())

    async def _rolled_back_done(self, message: str, ready: Any = None) -> None:
        await self.move(
            S.ROLLED_BACK, message, evidence={"restored": ready, "restored_ms": now_ms()}
        )
        await self.engine.version_outcome(self.dep.to_version_id, S.ROLLED_BACK)
