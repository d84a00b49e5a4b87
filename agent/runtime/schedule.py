"""The agent's clock: periodic jobs on the event loop. The only module that imports APScheduler.

APScheduler 3.x's AsyncIOScheduler runs coroutine jobs on the loop. Jobs never overlap
themselves (max_instances=1) and a late run is coalesced rather than replayed, so a slow probe
or a suspended laptop does not cause a burst of catch-up runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

log = logging.getLogger("vigil.schedule")


class GridTrigger(BaseTrigger):
    """Fires at ``origin + k * interval + U(0, jitter)``: jitter around a fixed grid.

    APScheduler 3's IntervalTrigger adds the jitter to the previous *jittered* fire time, so
    the delays accumulate: a 5 s interval with 0.5 s of jitter really ran every ~5.25 s, and
    the runs of models sharing an interval drifted apart from the interval users configured.
    Here each run picks its own offset within its own slot, so the mean period is exactly the
    interval and a probe never runs twice in one slot.
    """

    def __init__(
        self,
        interval_s: float,
        origin: datetime,
        jitter_s: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval must be positive, got {interval_s}")
        if not 0 <= jitter_s < interval_s:
            raise ValueError(f"jitter must be in [0, interval), got {jitter_s} for {interval_s}")
        self.interval_s = interval_s
        self.origin = origin
        self.jitter_s = jitter_s
        # One offset per slot, the same however often it is asked for: APScheduler asks twice
        # for the same previous time after a late wake-up (collecting missed runs, then the
        # next one), and two different draws could make the job due again at once.
        self._seed = (rng or random.Random()).getrandbits(64)  # noqa: S311 - spreading load

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The next slot's time plus this run's jitter."""
        # Whole datetimes, not epoch floats: at today's epoch a float carries ~0.2 us of
        # error, enough to put a run exactly on its grid point into the slot below.
        step = timedelta(seconds=self.interval_s)
        if previous_fire_time is None:
            slot = max(0, math.ceil((now - self.origin) / step))
        else:
            # The previous run sat in slot floor(...): its jitter is below one interval.
            slot = math.floor((previous_fire_time - self.origin) / step) + 1
        return self.origin + slot * step + timedelta(seconds=self.offset(slot))

    def offset(self, slot: int) -> float:
        """This job's jitter in ``slot``: random across slots and jobs, fixed for a slot."""
        if not self.jitter_s:
            return 0.0
        return random.Random(self._seed ^ slot).uniform(0, self.jitter_s)  # noqa: S311

    def __str__(self) -> str:
        return f"grid[interval={self.interval_s}s, jitter={self.jitter_s}s]"


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
            jitter_s: random extra delay per run, so many probes on one interval spread out;
                below ``interval_s``. Runs jitter around the grid, they do not drift from it.
            first_in_s: delay before the first run, counted from ``origin``; later runs keep to
                the grid ``origin + k * interval_s``.
            origin: when the schedule starts; default now. Jobs added together should share
                one origin: taking "now" per job would spread their runs over however long
                adding them took (70 ms for 200 jobs on a small VM), and the later jobs then
                wait behind the work of the earlier ones on every round.
        """
        grid = origin or datetime.now(UTC)
        self._sched.add_job(
            fn,
            GridTrigger(interval_s, grid, jitter_s),
            id=job_id,
            replace_existing=True,
            next_run_time=grid + timedelta(seconds=first_in_s),
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
