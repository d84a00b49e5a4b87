"""The deploy engine: takes deploy, approval, rollback and record requests, and runs them.

A request is checked before anything is stored or switched (the model can be deployed, its
process is in a state to be restarted, no other deploy of it is in flight, the artifact hashes
cleanly), then its version is registered with its lineage and the deployment stored; a
:class:`~agent.deploy.runner.Runner` takes it from there. One deploy per model is in flight at
a time: the engine keeps the model's runner from the moment a request is accepted, and the
database refuses a second row in flight as a backstop.

What a runner needs from the rest of the agent (baselines, the rollback target, incidents,
known-good marks) is :mod:`agent.deploy.support`'s, the engine's base, so the runner is only the
state machine. The queries the API serves are in :mod:`agent.deploy.queries`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import DeployConfig, ModelConfig
from agent.deploy.artifacts import ArtifactChanged, ArtifactDigest, ArtifactError, digest_artifact
from agent.deploy.bluegreen import BlueGreen
from agent.deploy.configdeploy import ConfigDeploys
from agent.deploy.copies import BlueGreenCopies
from agent.deploy.errors import DeployError
from agent.deploy.link import LinkError, read_link
from agent.deploy.rows import Lineage, insert_record, insert_request
from agent.deploy.runner import Runner
from agent.deploy.store import StorageUnavailable
from agent.deploy.strategy import STRATEGIES, Rollout, Strategy
from agent.deploy.support import DeployHost, DeploySupport, rollback_version
from probes.base import now_ms
from storage import deployments as deps
from storage.deployments import DeployInFlight, Deployment
from storage.records import DeployKind, DeployState, Event, ProbeRun
from storage.writer import Writer

log = logging.getLogger("vigil.deploy")

__all__ = ["DeployEngine", "DeployHost", "DeployRequest"]

S = DeployState
ANSWERS_KEPT = 5
"""A model's last ok canary answers kept in memory."""
_HASH = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """A deploy as asked: the model, the artifact, who (and what pipeline) asks, and why."""

    model: str
    artifact: Path
    operator: str
    """Who sent it (``X-Vigil-Operator``): the approver must differ from this one too."""
    actor: str | None = None
    """Who the lineage names (``--actor``); default the operator."""
    pipeline_id: str | None = None
    git_sha: str | None = None
    notes: str = ""
    bake_s: float | None = None
    rollback: bool = False
    """An operator's rollback to a known version (gated like a deploy, never held for
    approval)."""

    @property
    def requester(self) -> str:
        """The name the deployment is recorded as requested by."""
        return self.actor or self.operator


class DeployEngine(DeploySupport):
    """All deploys of one agent (see the module docstring)."""

    def __init__(self, host: DeployHost, writer: Writer, db_path: Path) -> None:
        super().__init__(host, writer, db_path)
        self.active: dict[str, Runner] = {}
        self.copies = BlueGreenCopies(host, self.store)
        """Where the blue-green models' copies are (the daemon fills its config from it)."""
        self._reserved: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.configs = ConfigDeploys(self)
        """Config deploys: changed process or canary tables of deployable models."""

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Resume (or roll back) what a previous agent left in flight: after the config is
        applied, so the processes are being adopted."""
        try:
            left = await self.store.read(deps.in_flight)
        except Exception as exc:  # no database yet, or unreadable: nothing to resume
            log.error("cannot read deployments in flight error=%r", str(exc))
            return
        for dep in left:
            try:
                runner = self._runner(dep)
            except DeployError as exc:
                log.error("cannot resume deploy id=%d error=%s", dep.id, exc)
                continue
            self.active[dep.model] = runner
            if dep.state == S.AWAITING_APPROVAL:
                self._spawn(self._expire(runner), f"deploy-expiry:{dep.id}")
            else:
                self._spawn(runner.resume(), f"deploy:{dep.id}")
        busy = {d.model for d in left}
        self._spawn(self.copies.reconcile(busy), "deploy-reconcile")

    async def stop(self) -> None:
        """Stop the runners (their state is stored: the next agent resumes them). With
        ``on_exit = "stop"`` the copies a deploy started stop too, as the supervised ones do
        (the next agent then rolls the deploy back)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.host.config.agent.on_exit == "stop":
            for runner in list(self.active.values()):
                await runner.strategy.shutdown(runner.ro)
        await self.copies.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def finished(self, dep: Deployment) -> None:
        """A deployment's run ended: a final one is no longer in flight; a version that was
        not promoted leaves no answers to compare the next deploy with."""
        runner = self.active.get(dep.model)
        if runner is not None and runner.dep.id == dep.id and dep.state.final:
            del self.active[dep.model]
        if dep.state != S.PROMOTED:
            self.answers.pop(dep.model, None)
        self.configs.finished(dep)

    # --- what probes tell ----------------------------------------------------------------

    def observe(self, model: str, run: ProbeRun, answer: str | None) -> None:
        """Every probe run of every model (the daemon calls this after recording it)."""
        if answer and run.ok:
            self.answers.setdefault(model, deque(maxlen=ANSWERS_KEPT)).append(answer)
        runner = self.active.get(model)
        if runner is not None:
            runner.observe(run, answer)

    # --- requests ----------------------------------------------------------------------

    def _rollout(self, m: ModelConfig, dep_id: int, by: str) -> tuple[Rollout, Strategy]:
        proc = m.deploy_process
        if proc is None:
            raise DeployError(
                f"model {m.name!r} has no supervised process: a deploy restarts the server "
                "that serves it (set process in its [[model]], naming a [[process]] with a "
                "command)"
            )
        dc = m.deploy
        if dc is None or dc.link is None:
            raise DeployError(
                f"model {m.name!r} has no [model.deploy] link: expected the path of the "
                "'current' symlink its process's command reads the model through"
            )
        strategy: Strategy = (
            BlueGreen(self.copies)
            if dc.blue_green
            else STRATEGIES[dc.strategy](self.host.supervisor)
        )
        return Rollout(dep_id, m, proc, dc.link, by), strategy

    def _runner(self, dep: Deployment) -> Runner:
        if dep.kind == DeployKind.CONFIG:
            return self.configs.runner(dep)
        ro, strategy = self._rollout(self.model(dep.model), dep.id, dep.requested_by)
        return Runner(self, dep, strategy, ro)

    def _check_free(self, model: str) -> None:
        runner = self.active.get(model)
        if runner is not None:
            raise DeployError(str(DeployInFlight(runner.dep)), 409)
        if model in self._reserved:
            raise DeployError(f"model {model!r} has a deploy being requested right now", 409)

    def _bake_s(self, m: ModelConfig, dc: DeployConfig, bake_s: float | None) -> float:
        if bake_s is None:
            return dc.bake_s
        least = dc.min_good_canaries * m.interval_s
        if bake_s < least:
            raise DeployError(
                f"bake: expected at least min_good_canaries x interval ({least:g}s) to see "
                f"that many canaries, got {bake_s:g}s"
            )
        return bake_s

    async def request(self, req: DeployRequest) -> Deployment:
        """Accept a deploy (or an operator's rollback): check, hash, register, store, run.

        Raises:
            DeployError: refused; nothing was stored or switched.
        """
        m = self.model(req.model)
        dc = self.deploy_config(m)
        ro, strategy = self._rollout(m, 0, req.requester)
        strategy.prepare(ro)
        self._check_free(m.name)
        bake_s = self._bake_s(m, dc, req.bake_s)
        self._reserved.add(m.name)
        try:
            await strategy.preflight(ro)
            digest = await self._digest(req.artifact)
            previous = await asyncio.to_thread(read_link, ro.link)
            dep = await self._store_request(req, m, dc, digest, previous, bake_s, ro.process)
        except LinkError as exc:
            raise DeployError(str(exc)) from None
        finally:
            self._reserved.discard(m.name)
        runner = self._runner(dep)
        self.active[m.name] = runner
        runner.emit(
            "deploy.requested",
            f"{digest.path} ({digest.hash}) by {dep.requested_by}",
            None,
            {
                "artifact": _digest_json(digest),
                "bake_s": bake_s,
                # A fleet rollout names itself here, so each host's audit trail shows it.
                **({"pipeline_id": dep.pipeline_id} if dep.pipeline_id else {}),
                **({"notes": dep.notes} if dep.notes else {}),
            },
        )
        if dep.state == S.AWAITING_APPROVAL:
            runner.emit(f"deploy.{dep.state}", "waiting for an operator's approval", None, {})
            self._spawn(self._expire(runner), f"deploy-expiry:{dep.id}")
        else:
            self._spawn(runner.run(), f"deploy:{dep.id}")
        return dep

    async def _digest(self, artifact: Path) -> ArtifactDigest:
        try:
            return await digest_artifact(artifact, cache=self.cache)
        except ArtifactChanged as exc:
            raise DeployError(
                f"{exc}; the artifact changed while it was hashed: deploy it once it is "
                "written completely"
            ) from None
        except ArtifactError as exc:
            raise DeployError(f"{exc}; expected a readable model file or directory") from None

    async def _store_request(
        self,
        req: DeployRequest,
        m: ModelConfig,
        dc: DeployConfig,
        digest: ArtifactDigest,
        previous: Path | None,
        bake_s: float,
        process: str,
    ) -> Deployment:
        now = now_ms()
        approval = dc.require_approval and not req.rollback
        who = Lineage(req.requester, req.operator, req.pipeline_id, req.git_sha, req.notes)
        link = dc.link if dc.link is not None else Path()

        def store(conn: Any) -> Deployment:
            return insert_request(
                conn,
                model=m.name,
                digest=digest,
                who=who,
                strategy=dc.strategy,
                process=process,
                link=link,
                previous=previous,
                bake_s=bake_s,
                approval=approval,
                rollback=req.rollback,
                now=now,
            )

        try:
            return await self.store.write(store)
        except DeployInFlight as exc:
            raise DeployError(str(exc), 409) from None
        except StorageUnavailable as exc:
            raise DeployError(f"{exc}; nothing was switched", 503) from None

    # --- approvals -----------------------------------------------------------------------

    async def approve(self, deployment_id: int, by: str) -> Deployment:
        """An operator approves a deploy waiting for it; it then runs.

        Raises:
            DeployError: unknown (404), not waiting (409), or the requester approving their
                own deploy where ``approver_must_differ`` (403).
        """
        dep = await self.get(deployment_id)
        if dep.state != S.AWAITING_APPROVAL:
            raise DeployError(f"deployment {dep.id} is {dep.state}, not awaiting approval", 409)
        dc = self.deploy_config(self.model(dep.model))
        asked = {dep.requested_by, str(dep.checks.get("operator") or "")}
        if dc.approver_must_differ and by in asked:
            raise DeployError(
                f"{by} requested deployment {dep.id}; approver_must_differ: another operator "
                "must approve it",
                403,
            )
        runner = self.active.get(dep.model)
        if runner is None or runner.dep.id != dep.id:
            runner = self._runner(dep)
            self.active[dep.model] = runner
        now = now_ms()
        moved = dep.moved(S.REQUESTED, now, approved_by=by, approved_ms=now)
        try:
            runner.dep = await self.store.write(
                lambda c: deps.update_deployment(c, moved, expect_state=S.AWAITING_APPROVAL)
            )
        except deps.DeployStateChanged as exc:
            raise DeployError(str(exc), 409) from None
        runner.emit("deploy.approved", f"approved by {by}", S.AWAITING_APPROVAL, {"by": by})
        self._spawn(runner.run(), f"deploy:{dep.id}")
        return runner.dep

    async def _expire(self, runner: Runner) -> None:
        """Cancel a deploy nobody approved within ``approval_timeout`` (nothing switched)."""
        dep = runner.dep
        dc = self.deploy_config(runner.ro.model)
        wait_s = (dep.requested_ms + dc.approval_timeout_s * 1000 - now_ms()) / 1000
        await asyncio.sleep(max(0.0, wait_s))
        if runner.dep.state != S.AWAITING_APPROVAL:
            return
        await self._cancel(runner, f"not approved within {dc.approval_timeout_s:g}s")

    async def _cancel(self, runner: Runner, why: str) -> None:
        moved = runner.dep.moved(S.CANCELLED, now_ms(), error=why)
        try:
            runner.dep = await self.store.write(
                lambda c: deps.update_deployment(c, moved, expect_state=S.AWAITING_APPROVAL)
            )
        except deps.DeployStateChanged:
            return  # approved meanwhile
        runner.emit("deploy.cancelled", why, S.AWAITING_APPROVAL, {})
        self.finished(runner.dep)

    # --- an operator's rollback ---------------------------------------------------------

    async def rollback(
        self, model: str, to: str | None, operator: str, **lineage: Any
    ) -> Deployment:
        """``vigil rollback``: stop a deploy that is starting or baking (rolling it back), or
        deploy a known version (``to``: an id or a hash prefix; default the last known-good
        version other than the current one), gated as any deploy.

        Raises:
            DeployError: nothing to roll back to, an unknown version, or a deploy in flight
                that cannot be stopped now.
        """
        m = self.model(model)
        runner = self.active.get(m.name)
        if runner is not None and to is None:
            if runner.dep.state in (S.STARTING, S.BAKING):
                runner.abort_by = operator
                runner.wake.set()
                return runner.dep
            if runner.dep.state == S.AWAITING_APPROVAL:
                await self._cancel(runner, f"withdrawn by {operator}")
                return runner.dep
        self._check_free(m.name)
        version = await self.store.read(lambda c: rollback_version(c, m.name, to))
        return await self.request(
            DeployRequest(
                model=m.name,
                artifact=Path(version.path),
                operator=operator,
                notes=lineage.pop("notes", None)
                or f"rollback to version {version.id} by {operator}",
                rollback=True,
                **lineage,
            )
        )

    # --- a deployment another tool made --------------------------------------------------

    async def record(
        self,
        model: str,
        operator: str,
        *,
        artifact: Path | None = None,
        version_hash: str | None = None,
        **lineage: Any,
    ) -> Deployment:
        """``vigil deploy record``: store a deployment made by another tool (strategy
        ``record``, promoted at once, no gate); its version becomes known-good.

        Raises:
            DeployError: an unknown model, a deploy in flight, a bad artifact or hash.
        """
        m = self.model(model)
        self._check_free(m.name)
        if (artifact is None) == (version_hash is None):
            raise DeployError("expected either an artifact path or a version hash")
        digest = await self._digest(artifact) if artifact is not None else None
        content = digest.hash if digest is not None else str(version_hash)
        if digest is None and not _HASH.fullmatch(content):
            raise DeployError(
                f"version hash: expected sha256:<64 hex digits>, got {content[:80]!r}"
            )
        who = Lineage(
            lineage.get("actor") or operator,
            operator,
            lineage.get("pipeline_id"),
            lineage.get("git_sha"),
            lineage.get("notes") or "",
        )
        now = now_ms()

        def store(conn: Any) -> Deployment:
            return insert_record(
                conn, model=m.name, content_hash=content, digest=digest, who=who, now=now
            )

        try:
            dep = await self.store.write(store)
        except DeployInFlight as exc:
            raise DeployError(str(exc), 409) from None
        except StorageUnavailable as exc:
            raise DeployError(str(exc), 503) from None
        self.host.emit(
            Event(
                ts_ms=now,
                kind="deploy.recorded",
                subject=f"model:{m.name}",
                message=f"deploy #{dep.id}: {content} recorded by {operator} "
                f"(deployed by {who.actor})",
                data={
                    "deployment": dep.id,
                    "to_version": dep.to_version_id,
                    "hash": content,
                    "requested_by": who.actor,
                    "operator": operator,
                },
            )
        )
        return dep


def _digest_json(d: ArtifactDigest) -> dict[str, Any]:
    return {
        "path": d.path,
        "hash": d.hash,
        "kind": str(d.kind),
        "size_bytes": d.size_bytes,
        "files": d.files,
        "created_ms": d.created_ms,
        "hashed_bytes": d.hashed_bytes,
    }
