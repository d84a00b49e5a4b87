"""The agent's clock: runs keep to their grid however much jitter is added."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from agent.runtime.schedule import GridTrigger, Scheduler

ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


def fire_times(trigger: GridTrigger, first: datetime, n: int) -> list[float]:
    """Feed each fire time back as the previous one, as APScheduler does."""
    times = [first]
    for _ in range(n - 1):
        nxt = trigger.get_next_fire_time(times[-1], times[-1])
        assert nxt is not None
        times.append(nxt)
    return [(t - ORIGIN).total_seconds() for t in times]


def test_jitter_does_not_accumulate() -> None:
    # APScheduler's own IntervalTrigger drifted by jitter/2 per run: 1000 runs of 5 s with
    # 0.5 s of jitter ended ~250 s late. Here the last run is within one jitter of its slot.
    trigger = GridTrigger(5.0, ORIGIN, 0.5, rng=random.Random(7))
    times = fire_times(trigger, ORIGIN + timedelta(seconds=0.3), 1000)
    assert 999 * 5.0 <= times[-1] <= 999 * 5.0 + 0.5
    for k, t in enumerate(times[1:], start=1):
        assert k * 5.0 <= t <= k * 5.0 + 0.5, (k, t)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 4.5 and max(gaps) <= 5.5
    assert sum(gaps) / len(gaps) == pytest.approx(5.0, abs=0.001)


def test_runs_exactly_on_the_grid_do_not_skip_a_slot() -> None:
    trigger = GridTrigger(0.1, ORIGIN, 0.0)
    times = fire_times(trigger, ORIGIN, 50)
    assert times == pytest.approx([k * 0.1 for k in range(50)])


def test_first_fire_time_is_the_next_slot_after_now() -> None:
    trigger = GridTrigger(10.0, ORIGIN, 0.0)
    assert trigger.get_next_fire_time(None, ORIGIN - timedelta(seconds=3)) == ORIGIN
    nxt = trigger.get_next_fire_time(None, ORIGIN + timedelta(seconds=21))
    assert nxt == ORIGIN + timedelta(seconds=30)


@pytest.mark.parametrize(("interval", "jitter"), [(0.0, 0.0), (5.0, 5.0), (5.0, -1.0)])
def test_bad_trigger_arguments_are_refused(interval: float, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"interval|jitter"):
        GridTrigger(interval, ORIGIN, jitter)


async def test_scheduler_jobs_use_the_grid() -> None:
    # The real APScheduler computes the next run from the job's trigger: a job added with
    # jitter keeps to origin + k * interval, run after run.
    sched = Scheduler(asyncio.get_running_loop())
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    sched.every("j", 5.0, job, jitter_s=1.0, first_in_s=0.2, origin=ORIGIN)
    aps_job = sched._sched.get_job("j")  # the trigger is what is under test
    assert isinstance(aps_job.trigger, GridTrigger)
    previous = aps_job.next_run_time
    assert previous == ORIGIN + timedelta(seconds=0.2)
    for k in range(1, 200):
        previous = aps_job.trigger.get_next_fire_time(previous, previous)
        assert 5.0 * k <= (previous - ORIGIN).total_seconds() <= 5.0 * k + 1.0
    # Started with it, the scheduler would walk every slot since ORIGIN to reach now.
    sched.remove("j")
    sched.start()
    sched.every("now", 60.0, job, jitter_s=1.0)
    await asyncio.wait_for(ran.wait(), 10)
    sched.shutdown()


@pytest.mark.parametrize("seed", range(50))
def test_after_a_late_wake_up_the_next_run_is_in_the_future(seed: int) -> None:
    # APScheduler collects the missed run times (asking the trigger for each) and then asks
    # again for the time after the last one: both answers for a slot must agree, or the job
    # is due again at once. This is APScheduler's own collection, not a copy of it.
    loop = asyncio.new_event_loop()
    sched = Scheduler(loop)
    loop.close()  # never started: the scheduler only computes times here

    async def job() -> None:
        return None

    sched.every("j", 5.0, job, jitter_s=1.0, origin=ORIGIN)
    aps_job = sched._sched.get_job("j")  # the trigger is what is under test
    aps_job.trigger = GridTrigger(5.0, ORIGIN, 1.0, rng=random.Random(seed))
    now = ORIGIN + timedelta(seconds=10.0 + random.Random(seed).uniform(0, 1.0))
    missed = aps_job._get_run_times(now)
    assert missed and missed[-1] <= now
    upcoming = aps_job.trigger.get_next_fire_time(missed[-1], now)
    assert upcoming > now
    assert upcoming == aps_job.trigger.get_next_fire_time(missed[-1], now)
