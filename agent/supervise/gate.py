"""The startup gate: when a started process counts as ready.

``starting`` lasts until a linked model's probe answers (the gate asks for probes right away
rather than waiting for the schedule), a configured ``port`` accepts connections, or, with
neither, no time at all; ``startup_timeout`` without that is a failed start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from enum import StrEnum
from typing import Any, Protocol

from agent.config import ProcessConfig
from agent.supervise.tree import Handle, port_free
from storage.records import ProbeRun

__all__ = ["READY_POLL_S", "GateOutcome", "StartupGate", "first_answer_ms"]

READY_POLL_S = 0.25


class GateOutcome(StrEnum):
    """How the gate ended: the process is ``ready``, or not within the ``timeout``, or it
    ``exited``, or a ``request`` (stop, restart) came first."""

    READY = "ready"
    TIMEOUT = "timeout"
    EXITED = "exited"
    REQUEST = "request"


class Waiter(Protocol):
    """The process's wait: until a request or wake-up, a future, or ``within`` seconds."""

    def __call__(
        self, *futures: asyncio.Future[Any], within: float | None = None
    ) -> Awaitable[None]: ...


def first_answer_ms(runs: Iterable[ProbeRun], started_ms: int) -> int | None:
    """When the first probe that started after ``started_ms`` got an answer (even a slow or
    wrong one: the server is up; judging the answer is the model monitor's job)."""
    answered = [
        r.observed_ms
        for r in runs
        if r.ts_ms >= started_ms and (r.ok or r.category in ("slow", "wrong_output"))
    ]
    return min(answered) if answered else None


class StartupGate:
    """The gate of one started incarnation."""

    def __init__(
        self,
        config: ProcessConfig,
        linked: list[str],
        *,
        runs: Iterable[ProbeRun],
        probe_now: Callable[[list[str]], Awaitable[None]],
        wait: Waiter,
        interrupted: Callable[[], bool],
    ) -> None:
        self.config = config
        self.linked = linked
        self._runs = runs
        self._probe_now = probe_now
        self._wait = wait
        self._interrupted = interrupted
        self.ready_ms: int | None = None
        """When the answer that opened the gate arrived (None: no answer opened it)."""

    def _answered(self, handle: Handle) -> bool:
        started_ms = int(time.time() * 1000 - (time.monotonic() - handle.started_mono) * 1000)
        self.ready_ms = first_answer_ms(self._runs, started_ms)
        return self.ready_ms is not None

    async def run(self, handle: Handle) -> GateOutcome:
        """Wait at the gate for this incarnation."""
        cfg, linked = self.config, self.linked
        deadline = time.monotonic() + cfg.startup_timeout_s
        while True:
            if self._interrupted():
                return GateOutcome.REQUEST
            if handle.exited.done():
                return GateOutcome.EXITED
            if not linked and cfg.port is None:
                return GateOutcome.READY
            if linked and self._answered(handle):
                return GateOutcome.READY
            if (
                not linked
                and cfg.port is not None
                and not await asyncio.to_thread(port_free, cfg.port)
            ):
                return GateOutcome.READY
            left = deadline - time.monotonic()
            if left <= 0:
                return GateOutcome.TIMEOUT
            if linked:
                # Ask for probes now instead of waiting out the schedule: readiness is then
                # known within a probe's round trip of the server being up.
                t0 = time.monotonic()
                probe = asyncio.ensure_future(self._probe_now(linked))
                await self._wait(handle.exited, probe, within=left)
                if not probe.done():
                    probe.cancel()
                    continue
                pause = READY_POLL_S - (time.monotonic() - t0)
                if pause > 0 and not self._answered(handle):
                    # A refused connection answers in microseconds: pace the retries.
                    await self._wait(handle.exited, within=min(pause, max(left, 0.0)))
            else:
                await self._wait(handle.exited, within=min(left, READY_POLL_S))
