"""What a deploy's run needs from the rest of the agent, in one place: the model's config,
the previous version's baseline, the open incidents and drift that the gate reads, where a
failed deploy rolls back to, the ``deploy_failed`` incident, and the known-good marks.

:class:`DeploySupport` is the base of :class:`~agent.deploy.engine.DeployEngine`; a
:class:`~agent.deploy.runner.Runner` (the state machine) asks it and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent.config import Config, DeployConfig, ModelConfig
from agent.deploy.errors import DeployError
from agent.deploy.gate import Baseline
from agent.deploy.hashcache import WriterHashCache
from agent.deploy.store import DeployStore
from agent.deploy.strategy import Rollout, same_path
from agent.health.incidents import IncidentBook
from agent.health.monitor import ModelMonitor
from agent.supervise.supervisor import Supervisor
from probes.base import now_ms
from storage import deployments as deps
from storage import versions as vers
from storage.deployments import Deployment
from storage.queries import recent_probe_runs
from storage.records import DeployState, DeployStrategy, Event, Incident, ProbeRun
from storage.versions import Version
from storage.writer import Writer

log = logging.getLogger("vigil.deploy")

__all__ = ["FAILED_KIND", "DeployHost", "DeploySupport", "current_version", "rollback_version"]

S = DeployState
FAILED_KIND = "deploy_failed"
BASELINE_MIN_RUNS = 3
"""The previous version's ok runs a baseline wants (the least ``baseline_runs``): it is
probed now for those it lacks."""


class DeployHost(Protocol):
    """What the engine needs from the agent (:class:`agent.runtime.daemon.Agent`)."""

    config: Config
    supervisor: Supervisor
    incidents: IncidentBook
    monitors: dict[str, ModelMonitor]

    def emit(self, event: Event) -> None:
        """Record an audit event."""

    async def probe_models(self, names: list[str]) -> None:
        """Probe these models now."""


class DeploySupport:
    """The agent as a deploy's run sees it (see the module docstring)."""

    def __init__(self, host: DeployHost, writer: Writer, db_path: Path) -> None:
        self.host = host
        self.store = DeployStore(writer, db_path)
        self.cache = WriterHashCache(writer)
        self.answers: dict[str, deque[str]] = {}
        """Each model's last ok canary answers: the golden baseline of its next deploy."""

    def deploy_config(self, m: ModelConfig) -> DeployConfig:
        """The model's ``[model.deploy]``, or its defaults."""
        return m.deploy if m.deploy is not None else DeployConfig()

    def model(self, name: str) -> ModelConfig:
        """The configured model ``name``; an unknown one is refused (404)."""
        for m in self.host.config.models:
            if m.name == name:
                return m
        known = ", ".join(sorted(m.name for m in self.host.config.models)) or "none"
        raise DeployError(f"no model named {name!r}; known: {known}", 404)

    async def get(self, deployment_id: int) -> Deployment:
        """One deployment (404 if unknown)."""
        dep = await self.store.read(lambda c: deps.get_deployment(c, deployment_id))
        if dep is None:
            raise DeployError(f"no deployment with id {deployment_id}", 404)
        return dep

    def finished(self, dep: Deployment) -> None:
        """A deployment's run ended: in a final state, or stopped with the agent."""

    async def baseline(self, dep: Deployment, ro: Rollout) -> Baseline:
        """The previous version as it serves now: its stored ok runs since it was deployed
        and its canary answers, the model probed now while either is short.

        A version deployed a moment ago (a rollback, then the next deploy at once) has run
        few probes of its own: without at least :data:`BASELINE_MIN_RUNS` of them the gate
        would have no latency to compare with and would promote a slower version unjudged."""
        m = ro.model
        dc = self.deploy_config(m)
        mon = self.host.monitors.get(m.name)
        want_runs = min(BASELINE_MIN_RUNS, dc.baseline_runs)
        runs = await self._baseline_runs(m.name, dc.baseline_runs)
        for _ in range(max(2, want_runs)):
            short = len(runs) < want_runs or (dc.golden and len(self.answers.get(m.name, ())) < 2)
            if not short or mon is None or mon.state != "up":
                break
            await self.host.probe_models([m.name])
            runs = await self._baseline_runs(m.name, dc.baseline_runs)
        return Baseline.build(runs, self.answers.get(m.name, ()))

    async def _baseline_runs(self, model: str, limit: int) -> list[ProbeRun]:
        """The model's stored ok runs since its last deploy ended (the serving version's)."""

        def read(conn: Any) -> list[ProbeRun]:
            last = deps.list_deployments(
                conn, model=model, states=(S.PROMOTED, S.ROLLED_BACK), limit=1
            )
            since = last[0].finished_ms if last else None
            return recent_probe_runs(conn, model, limit=limit, since_ms=since, categories=("ok",))

        # On the writer's thread, after what it has queued: a probe run is recorded in the
        # writer's batch, committed up to a second later, so a read on another connection
        # misses the runs just asked for (issue 16's flake: a baseline of 0 runs).
        return await self.store.write(read)

    def incidents_of(self, model: str, process: str) -> list[Incident]:
        """The open incidents about the model and its process."""
        subjects = {f"model:{model}", f"process:{process}"}
        return [i for i in self.host.incidents.open_incidents() if i.subject in subjects]

    def drift_of(self, model: str) -> dict[str, int]:
        """The model's active drift: group -> since (epoch ms)."""
        mon = self.host.monitors.get(model)
        return mon.drift.active() if mon is not None else {}

    async def rollback_target(self, dep: Deployment, ro: Rollout) -> tuple[int | None, Path | None]:
        """Where a failed deploy goes back to: the last known-good version (other than the
        new one) whose files are still there, else what the link pointed at before."""
        target = Path(str(dep.checks.get("target", "")))
        before = dep.checks.get("previous_target")
        if dep.strategy == DeployStrategy.BLUE_GREEN and before:
            # The old copy still runs the version it ran: rolling back keeps it serving.
            return dep.from_version_id, Path(str(before))
        listed = await self.store.read(lambda c: vers.list_versions(c, model=dep.model, limit=200))
        good = sorted((v for v in listed if v.known_good), key=lambda v: -(v.known_good_ms or 0))
        candidates: list[tuple[int | None, Path]] = [
            (v.id, Path(v.path)) for v in good if v.id != dep.to_version_id and v.path
        ]
        if before:
            candidates.append((dep.from_version_id, Path(str(before))))

        def first_there() -> tuple[int | None, Path | None]:
            for vid, path in candidates:
                if not same_path(path, target) and path.exists():
                    return vid, path
            return None, None

        return await asyncio.to_thread(first_there)

    def open_failed_incident(self, dep: Deployment, reason: str, evidence: dict[str, Any]) -> int:
        """A critical ``deploy_failed`` incident about the model (a built-in alert rule pages
        for it). It stays open until an operator resolves it or a later deploy of the model is
        promoted; an older one still open is resolved as superseded."""
        book, subject = self.host.incidents, f"model:{dep.model}"
        book.resolve(subject, kinds=(FAILED_KIND,), by=f"superseded by deploy #{dep.id}")
        inc = book.open(
            subject,
            FAILED_KIND,
            severity="critical",
            cause=f"deploy #{dep.id} ({dep.checks.get('hash', '?')}) failed: {reason}",
            evidence={
                "deployment": dep.id,
                "version": dep.to_version_id,
                "target": dep.checks.get("target"),
                "requested_by": dep.requested_by,
                **evidence,
            },
        )
        return inc.id

    async def promoted(self, dep: Deployment) -> None:
        """The version is known-good; an operator's rollback takes it away from the version
        rolled back from; the model's open ``deploy_failed`` incident is over."""
        at = now_ms()
        rollback = dep.checks.get("operation") == "rollback"

        def mark(conn: Any) -> None:
            if dep.to_version_id is not None:
                vers.mark_known_good(conn, dep.to_version_id, at)
            if rollback and dep.from_version_id not in (None, dep.to_version_id):
                vers.revoke_known_good(conn, dep.from_version_id)

        await self._best_effort(mark)
        self.host.incidents.resolve(
            f"model:{dep.model}", kinds=(FAILED_KIND,), by=f"deploy #{dep.id} promoted"
        )

    async def version_outcome(self, version_id: int | None, state: DeployState) -> None:
        """Record how the version's latest deploy ended."""
        if version_id is not None:
            await self._best_effort(lambda c: vers.set_outcome(c, version_id, state))

    async def _best_effort(self, fn: Callable[[Any], object]) -> None:
        try:
            await self.store.write(fn)
        except Exception as exc:  # the deploy goes on; the row catches up never, but says so
            log.error("deploy record not updated error=%r", str(exc))


def current_version(conn: Any, model: str, link_target: Path | None) -> Version | None:
    """The version serving now: the one at the link's target, else the last deployed."""
    if link_target is not None:
        for v in vers.list_versions(conn, model=model, limit=500):
            if same_path(Path(v.path), link_target):
                return v
    vid = deps.current_version_id(conn, model)
    return None if vid is None else vers.get_version(conn, vid)


def rollback_version(conn: Any, model: str, to: str | None) -> Version:
    """The version ``vigil rollback`` deploys (see :meth:`DeployEngine.rollback`)."""
    known = vers.list_versions(conn, model=model, limit=500)
    if to is not None:
        found = [v for v in known if str(v.id) == to or v.hash.partition(":")[2].startswith(to)]
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise DeployError(
                f"{what} version of {model!r} matches {to!r}; expected a version id or a "
                "hash prefix (vigil deploy versions lists them)",
                404 if not found else 400,
            )
        return found[0]
    current = deps.current_version_id(conn, model)
    good = vers.last_known_good(conn, model, exclude_id=current)
    if good is None:
        raise DeployError(
            f"model {model!r} has no known-good version other than the current one to roll "
            "back to; name one with --to",
            409,
        )
    return good
