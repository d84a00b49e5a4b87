"""The supervisor's restart path stays short: what ``bench/restart_latency.py`` found.

- An exited process whose group is empty is restarted without scanning the process table
  (:func:`agent.supervise.tree.group_empty`), and a group with a worker left in it is not empty.
- A hang after a healthy period (``backoff_reset``) is a first restart, immediate, like an
  exit after one; it used to keep the backoff of an earlier restart.

No test here sleeps: the group's worker is the test's own child, reaped by the test, and the
healthy period is the incarnation's start moved back, not time waited out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import ProcessConfig
from agent.supervise.supervisor import Supervisor
from agent.supervise.tree import ExitInfo, Handle, group_empty
from storage.records import Event


async def _handle(proc: subprocess.Popen[bytes]) -> Handle:
    fut: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()
    return Handle(pid=proc.pid, exited=fut, pgid=proc.pid)


async def test_group_empty_only_when_no_member_is_left() -> None:
    # A leader with a worker in its group; the leader exits (as a crash leaves it) and the
    # worker stays. Both block on stdin rather than sleeping, and both are the test's children,
    # so the test reaps the killed worker itself instead of waiting for init to.
    block = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    leader = subprocess.Popen(block, stdin=subprocess.PIPE, process_group=0)
    worker = subprocess.Popen(block, stdin=subprocess.PIPE, process_group=leader.pid)
    try:
        leader.communicate()  # stdin closed: the leader exits, the worker is left in the group
        handle = await _handle(leader)
        assert not group_empty(handle)
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        worker.wait()
    assert group_empty(handle)  # the killed worker was reaped: nothing is left

    alone = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    alone.wait()
    assert group_empty(await _handle(alone))
    assert group_empty(Handle(pid=None, exited=asyncio.get_running_loop().create_future()))


class Recorder:
    """The supervisor's events, and a wait for a condition over them woken by each event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._new = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._new.set()

    async def until(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Return once ``cond()`` holds, checked after each event; fail after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not cond():
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError:
            raise AssertionError(f"not met: {[e.kind for e in self.events]}") from None


async def test_a_hang_after_a_healthy_period_restarts_at_once(tmp_path: Path) -> None:
    recorder = Recorder()
    sup = Supervisor(tmp_path / "data", recorder)
    cfg = ProcessConfig(
        name="srv",
        command=("sleep", "60"),
        restart="always",
        stop_timeout_s=2.0,
        backoff_initial_s=30.0,  # a hang restart that kept its backoff would wait this long
        backoff_reset_s=60.0,
        backoff_jitter=0.0,
    )
    await sup.apply((cfg,))
    mp = sup.processes["srv"]

    def restarts() -> list[Event]:
        return [e for e in recorder.events if e.kind == "process.restarting"]

    def restarted(count: int) -> dict[str, Any]:
        return dict(restarts()[count - 1].data)

    try:
        for n in (1, 2, 3):
            await asyncio.wait_for(mp.ready.wait(), 5)
            assert mp.handle is not None
            mp.handle.started_mono -= 61.0  # up for longer than backoff_reset, without waiting
            mp.request("hang", "hung: test")
            # "process.ready" follows every change to running, so each wake-up sees it.
            await recorder.until(lambda n=n: len(restarts()) >= n and mp.state == "running")
            assert restarted(n)["delay_s"] == 0
    finally:
        await sup.stop_all()
