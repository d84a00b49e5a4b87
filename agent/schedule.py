"""The agent's clock: periodic jobs on the event loop. The only module that imports APScheduler.

APScheduler 3.x's AsyncIOScheduler runs coroutine jobs on the loop. Jobs never overlap
themselves (max_instances=1) and a late run is coalesced rather than replayed, so a slow probe
or a suspended laptop does not cause a burst of catch-up runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger("vigil.schedule")


class Scheduler:
    """Thin wrapper: add, replace and remove interval jobs by id."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._sched = AsyncIOScheduler(event_loop=loop or asyncio.get_running_loop(), timezone=UTC)

    def start(self) -> None:
        """Start running jobs."""
        self._sched.start()

    def shutdown(self) -> None:
        """Stop; running jobs are not waited for (their tasks are cancelled by the loop)."""
        if self._sched.running:
            self._sched.shutdown(wait=False)

    def every(
        self,
        job_id: str,
        interval_s: float,
        fn: Callable[[], Awaitable[None]],
        *,
        jitter_s: float = 0.0,
        first_in_s: float = 0.0,
        origin: datetime | None = None,
    ) -> None:
        """Run ``fn`` every ``interval_s`` seconds (replacing a job with the same id).

        Args:
            jitter_s: random extra delay per run, so many probes on one interval spread out.
            first_in_s: delay before the first run, counted from ``origin``.
            origin: when the schedule starts; default now. Jobs added together should share
                one origin: taking "now" per job would spread their runs over however long
                adding them took (70 ms for 200 jobs on a small VM), and the later jobs then
                wait behind the work of the earlier ones on every round.
        """
        start = (origin or datetime.now(UTC)) + timedelta(seconds=first_in_s)
        self._sched.add_job(
            fn,
            "interval",
            id=job_id,
            replace_existing=True,
            seconds=interval_s,
            jitter=jitter_s or None,
            next_run_time=start,
            start_date=start,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval_s)),
        )

    def remove(self, job_id: str) -> None:
        """Remove a job if it exists."""
        if self._sched.get_job(job_id) is not None:
            self._sched.remove_job(job_id)

    def job_ids(self) -> list[str]:
        """Ids of the scheduled jobs."""
        return [job.id for job in self._sched.get_jobs()]
