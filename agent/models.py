"""Per-model probing and state: runs a model's probe, turns results into state and series.

State rules: an ``ok`` run means ``up``; ``slow`` or ``wrong_output`` means ``degraded`` (it
answers, but not as it should); any other failure means ``down``. Every state change is an
audit event carrying the run that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from agent.config import ModelConfig
from probes.base import Probe, ProbeTarget, now_ms
from probes.registry import PROBES
from storage.records import Event, ModelStatus, ProbeRun, Sample, make_labels

log = logging.getLogger("vigil.models")

DEGRADED = frozenset({"slow", "wrong_output"})


def state_for(run: ProbeRun) -> str:
    """The model state one run implies."""
    if run.ok:
        return "up"
    return "degraded" if run.category in DEGRADED else "down"


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


class ModelMonitor:
    """One model: its probe, its current state and its last run."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.probe: Probe = PROBES[config.protocol](
            ProbeTarget(
                name=config.name, url=config.url, timeout_s=config.timeout_s, options=config.canary
            )
        )
        self.state = "unknown"
        self.since_ms = now_ms()
        self.last_run: ProbeRun | None = None

    def status(self) -> ModelStatus:
        """The record the API serves."""
        return ModelStatus(
            name=self.config.name,
            protocol=self.config.protocol,
            url=self.config.url,
            state=self.state,
            since_ms=self.since_ms,
            last_run=self.last_run,
        )

    async def run_once(self, session: aiohttp.ClientSession) -> ProbeRun:
        """Probe once, bounded by the timeout even if the probe itself forgets to be."""
        started = now_ms()
        t0 = time.perf_counter_ns()
        try:
            # A grace over the probe's own timeout: the probe should report its timeout itself
            # (with its phase timings); this is the backstop for a probe that hangs anyway.
            return await asyncio.wait_for(self.probe.run(session), self.config.timeout_s + 1.0)
        except TimeoutError:
            return self.probe.failed(
                "timeout",
                f"no answer within {self.config.timeout_s}s",
                ts_ms=started,
                e2e_ms=(time.perf_counter_ns() - t0) / 1e6,
            )
        except Exception as exc:  # a probe bug is a recorded failure, never an agent crash
            log.exception("probe crashed model=%s", self.config.name)
            return self.probe.failed("protocol_error", f"probe error: {exc!r}", ts_ms=started)

    def record(self, run: ProbeRun, emit: Callable[[Event], None]) -> None:
        """Take a run's result: update state, emit an event on change."""
        self.last_run = run
        new = state_for(run)
        if new != self.state:
            old, self.state, self.since_ms = self.state, new, run.ts_ms
            log.info(
                "model state changed model=%s from=%s to=%s category=%s",
                self.config.name,
                old,
                new,
                run.category,
            )
            emit(
                Event(
                    ts_ms=run.ts_ms,
                    kind="model.state_changed",
                    subject=f"model:{self.config.name}",
                    message=f"{old} -> {new} ({run.category})",
                    data={"from": old, "to": new, "run": run.to_json()},
                )
            )
