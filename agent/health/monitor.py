"""Per-model probing and state: runs a model's probe, turns results into state and series.

State rules (docs/kpi.md, the KPI glossary, defines the times):

- an ``ok`` run makes the model ``up``;
- ``slow`` or ``wrong_output`` make it ``degraded`` (it answers, but not as it should);
- a hard failure (refused, timeout, HTTP or protocol error, stalled generation) makes it
  ``degraded`` at first and ``down`` after ``down_after_failures`` in a row, so one lost packet
  pages nobody while a dead server is called dead within two intervals;
- while the model's server is in a **planned** start or stop (the agent starting, an
  operator's start/restart/stop, a config change), the model is ``starting`` (or ``stopped``):
  hard failures are recorded as planned runs, open nothing and count against nothing. A start
  that misses its startup gate turns into an unplanned outage from the gate's deadline. A
  planned window never hides an outage already in progress.

Every change is stamped when it was observed: a run's ``end_ms`` (the answer arrived, the
refusal came back, the timeout expired), not when its request was sent.

Incidents: ``down`` opens a critical ``model_down`` incident; ``degraded`` for longer than
``incident_after_degraded`` opens a warning ``model_degraded`` one; ``up`` resolves both. An
incident's fault began at the start of the first failed request of the streak (the server
already failed to answer it); it opens at the decision and resolves at the first good answer.
Every state change is an audit event carrying the run behind it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from agent.config import ModelConfig
from agent.health.drift import ModelDrift
from agent.health.incidents import IncidentBook
from probes.base import Probe, ProbeTarget, now_ms, redact
from probes.httpclient import HttpClient
from probes.registry import PROBES
from storage.records import (
    PLANNED_MODEL_STATES,
    Event,
    ModelState,
    ModelStatus,
    ProbeRun,
    Sample,
    make_labels,
)
from storage.text import short_artifact

log = logging.getLogger("vigil.models")

DEGRADED = frozenset({"slow", "wrong_output"})


def severity_of(run: ProbeRun) -> str:
    """``ok``, ``soft`` (answers, badly) or ``hard`` (does not answer usefully)."""
    if run.ok:
        return "ok"
    return "soft" if run.category in DEGRADED else "hard"


def samples_for(run: ProbeRun) -> list[Sample]:
    """The latency series a run adds (only the phases it measured)."""
    labels = make_labels(model=run.model)
    out = [Sample("probe.up", labels, run.ts_ms, 1.0 if run.ok else 0.0)]
    for name, value in (
        ("probe.e2e_ms", run.e2e_ms),
        ("probe.ttft_ms", run.ttft_ms),
        ("probe.itl_ms", run.itl_ms),
        ("probe.tokens_per_s", run.tokens_per_s),
    ):
        if value is not None:
            out.append(Sample(name, labels, run.ts_ms, float(value)))
    return out


def make_probe(config: ModelConfig) -> Probe:
    """The probe of ``config``'s protocol, aimed at its URL."""
    return PROBES[config.protocol](
        ProbeTarget(
            name=config.name,
            url=config.url,
            timeout_s=config.timeout_s,
            options=config.canary,
            api_key=config.api_key,
        )
    )


class ModelMonitor:
    """One model: its probe, its current state and its last run."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.probe: Probe = make_probe(config)
        self.subject = f"model:{config.name}"
        self.state = ModelState.UNKNOWN
        self.since_ms = now_ms()
        self.planned: str | None = None
        """Why the model's server is in a planned start or stop, while it is."""
        self.inflight: asyncio.Task[None] | None = None
        """The run out now, if any: one run per model at a time, whoever asks."""
        self.last_run: ProbeRun | None = None
        self.hard_failures = 0
        self.failing_since_ms: int | None = None
        self.degraded_since_ms: int | None = None
        self.artifact: str | None = None
        self.drift = ModelDrift(self.subject, config.drift)

    def retarget(self, url: str) -> Probe:
        """Probe ``url`` from now on, the model's state and history kept (a blue-green deploy
        sends the canaries to the new copy for its bake, then on, or back, to the copy that
        serves). Returns the probe replaced, for the caller to close once the run it may have
        out is over."""
        old = self.probe
        self.config = dataclasses.replace(self.config, url=url)
        self.probe = make_probe(self.config)
        return old

    def status(self) -> ModelStatus:
        """The record the API serves."""
        return ModelStatus(
            name=self.config.name,
            protocol=self.config.protocol,
            url=self.config.url,
            state=self.state,
            since_ms=self.since_ms,
            last_run=self.last_run,
            drift=self.drift.active(),
            planned=self.planned if self.state in PLANNED_MODEL_STATES else None,
        )

    async def run_once(self, session: HttpClient) -> ProbeRun:
        """Probe once, bounded by the timeout even if the probe itself forgets to be."""
        started = now_ms()
        t0 = time.perf_counter_ns()
        try:
            # A grace over the probe's own timeout: the probe should report its timeout itself
            # (with its phase timings); this is the backstop for a probe that hangs anyway.
            run = await asyncio.wait_for(self.probe.run(session), self.config.timeout_s + 1.0)
        except TimeoutError:
            run = self.probe.failed(
                "timeout",
                f"no answer within {self.config.timeout_s}s",
                ts_ms=started,
                e2e_ms=(time.perf_counter_ns() - t0) / 1e6,
            )
        except Exception as exc:  # a probe bug is a recorded failure, never an agent crash
            log.exception("probe crashed model=%s", self.config.name)
            run = self.probe.failed("protocol_error", f"probe error: {exc!r}", ts_ms=started)
        if run.error and self.config.api_key:
            # Whatever a probe forgot: the key never reaches storage, logs or the API.
            run = dataclasses.replace(run, error=redact(run.error, self.config.api_key))
        # Observed now: the answer (or refusal, or the timeout) is in hand as the probe returns.
        return dataclasses.replace(run, end_ms=now_ms())

    def next_state(self, run: ProbeRun) -> ModelState:
        """The state after ``run``, counting consecutive hard failures."""
        kind = severity_of(run)
        if kind == "ok":
            self.failing_since_ms = None
            self.hard_failures = 0
            return ModelState.UP
        if self.failing_since_ms is None:
            # The request that failed was sent at ts_ms: the fault was there to be seen then.
            self.failing_since_ms = run.ts_ms
        if kind == "soft":
            self.hard_failures = 0
            return ModelState.DEGRADED
        self.hard_failures += 1
        if self.hard_failures >= self.config.down_after_failures:
            return ModelState.DOWN
        return ModelState.DEGRADED

    def masks(self, run: ProbeRun) -> bool:
        """Whether ``run`` falls in a planned start or stop: a hard failure while the server
        is being started or stopped on purpose, and no unplanned outage already going on."""
        return (
            self.planned is not None
            and severity_of(run) == "hard"
            and self.failing_since_ms is None
            and self.state in (*PLANNED_MODEL_STATES, ModelState.UNKNOWN, ModelState.UP)
        )

    def _change(
        self, new: ModelState, at_ms: int, emit: Callable[[Event], None], **data: object
    ) -> None:
        """Move to ``new`` at ``at_ms`` (when it was observed), with an audit event."""
        if new == self.state:
            return
        old, self.state, self.since_ms = self.state, new, at_ms
        self.degraded_since_ms = at_ms if new == ModelState.DEGRADED else None
        why = str(
            data.get("category")
            or data.get("planned")
            or (
                f"start failed: {data['planned_start_failed']}"
                if "planned_start_failed" in data
                else ""
            )
        )
        log.info(
            "model state changed model=%s from=%s to=%s why=%s",
            self.config.name,
            old,
            new,
            why,
        )
        emit(
            Event(
                ts_ms=at_ms,
                kind="model.state_changed",
                subject=self.subject,
                message=f"{old} -> {new} ({why})",
                data={"from": str(old), "to": str(new), **data},
            )
        )

    def begin_planned(
        self, reason: str, stopping: bool, at_ms: int, emit: Callable[[Event], None]
    ) -> None:
        """The model's server is being started (or stopped) on purpose, from ``at_ms``."""
        self.planned = reason
        if self.failing_since_ms is not None or self.state == ModelState.DEGRADED:
            return  # an outage in progress goes on: a restart does not make it planned
        self.hard_failures = 0
        new = ModelState.STOPPED if stopping else ModelState.STARTING
        self._change(new, at_ms, emit, planned=reason)

    def end_planned(
        self,
        at_ms: int,
        emit: Callable[[Event], None],
        *,
        failed: str | None = None,
        book: IncidentBook | None = None,
        root_id: Callable[[], int | None] | None = None,
    ) -> None:
        """The planned start is over: the server is ready, or (``failed`` says why) it missed
        its startup gate or died starting, which is an unplanned outage from ``at_ms``."""
        self.planned = None
        if failed is None or self.state not in PLANNED_MODEL_STATES:
            return
        self.failing_since_ms = at_ms
        self.hard_failures = max(self.hard_failures, self.config.down_after_failures)
        self._change(ModelState.DOWN, at_ms, emit, planned_start_failed=failed)
        if book is not None:
            book.open(
                self.subject,
                "model_down",
                severity="critical",
                cause=f"start failed: {failed}",
                evidence={"failing_since_ms": at_ms, "planned_start_failed": failed},
                opened_ms=at_ms,
                began_ms=at_ms,
                root_id=root_id() if root_id else None,
            )

    def record(
        self,
        run: ProbeRun,
        emit: Callable[[Event], None],
        book: IncidentBook | None = None,
        root_id: Callable[[], int | None] | None = None,
    ) -> ProbeRun:
        """Take a run's result: update state, emit an event on change, open/resolve incidents.

        Returns the run as it is to be stored (``planned`` set when it fell in a planned
        start or stop).
        """
        at = run.observed_ms
        if self.masks(run):
            run = dataclasses.replace(run, planned=True)
            self.last_run = run
            if self.state not in PLANNED_MODEL_STATES:
                self._change(ModelState.STARTING, at, emit, planned=self.planned)
            self._artifact(run, emit)
            return run
        self.last_run = run
        new = self.next_state(run)
        self._change(new, at, emit, category=run.category, run=run.to_json())
        self._artifact(run, emit)
        for event in self.drift.observe(run, self.probe.last_output):
            log.warning(
                "model drift model=%s kind=%s message=%s",
                self.config.name,
                event.kind,
                event.message,
            )
            emit(event)
        if book is not None:
            self._incidents(run, book, root_id)
        return run

    def _artifact(self, run: ProbeRun, emit: Callable[[Event], None]) -> None:
        """Record the artifact a probe reports (``info["artifact"]``) when it is new to us.

        The first one a monitor sees is recorded too, so that reports can tell a change made
        while the agent was stopped (a deployment) from an agent restart (same artifact).
        """
        info = self.probe.info
        artifact = info.get("artifact")
        if not isinstance(artifact, str) or not artifact or artifact == self.artifact:
            return
        previous, self.artifact = self.artifact, artifact
        kind = str(info.get("artifact_kind") or "artifact")
        data: dict[str, object] = {
            "artifact": artifact,
            "artifact_kind": kind,
            "previous_artifact": previous,
            "run": {"category": run.category, "ok": run.ok},
        }
        if kind == "sha256":
            data["sha256"], data["previous_sha256"] = artifact, previous
        for key in ("artifact_time_ms", "size_bytes", "reloaded_at"):
            if key in info:
                data[key] = info[key]
        short = short_artifact(artifact, 40)
        was = short_artifact(previous, 40) if previous else None
        emit(
            Event(
                ts_ms=run.observed_ms,
                kind="model.artifact",
                subject=self.subject,
                message=f"{kind} {short}"
                + (f" (was {was})" if was else " (first seen by this agent)"),
                data=data,
            )
        )

    def _incidents(
        self, run: ProbeRun, book: IncidentBook, root_id: Callable[[], int | None] | None
    ) -> None:
        # The first failing run is when the problem was there to be seen: times to detect and
        # recover are measured from it.
        at = run.observed_ms
        evidence = {
            "last_run": run.to_json(),
            "consecutive_failures": self.hard_failures,
            "failing_since_ms": self.failing_since_ms,
        }
        if self.state == ModelState.UP:
            book.resolve(self.subject, kinds=("model_down", "model_degraded"), resolved_ms=at)
        elif self.state == ModelState.DOWN:
            book.open(
                self.subject,
                "model_down",
                severity="critical",
                cause=f"{run.category}: {run.error or 'no detail'}",
                evidence=evidence,
                opened_ms=self.since_ms,
                began_ms=self.failing_since_ms,
                # A model is down because its server crashed or hangs, or that server's
                # dependency did: the supervisor's incident is the root.
                root_id=root_id() if root_id else None,
            )
        elif (
            self.degraded_since_ms is not None
            and at - self.degraded_since_ms >= self.config.incident_after_degraded_s * 1000
        ):
            book.open(
                self.subject,
                "model_degraded",
                severity="warning",
                cause=f"degraded for {(at - self.degraded_since_ms) / 1000:.0f}s: "
                f"{run.category}: {run.error or 'no detail'}",
                evidence=evidence,
                opened_ms=at,
                began_ms=self.failing_since_ms,
                root_id=root_id() if root_id else None,
            )
