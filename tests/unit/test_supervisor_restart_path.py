"""The supervisor's restart path stays short: what ``bench/restart_latency.py`` found.

- An exited process whose group is empty is restarted without scanning the process table
  (:func:`agent.supervise.tree.group_empty`), and a group with a worker left in it is not empty.
- A hang after a healthy period (``backoff_reset``) is a first restart, immediate, like an
  exit after one; it used to keep the backoff of an earlier restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
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
    # A leader that forks a worker into its own group, then exits (as a crash leaves it).
    script = "import os, time\nif os.fork() == 0:\n    time.sleep(30)\n"
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    leader.wait()
    handle = await _handle(leader)
    try:
        assert not group_empty(handle)
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
    for _ in range(200):
        if group_empty(handle):
            break
        await asyncio.sleep(0.01)
    assert group_empty(handle)  # the killed worker was reaped by init: nothing is left

    alone = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    alone.wait()
    assert group_empty(await _handle(alone))
    assert group_empty(Handle(pid=None, exited=asyncio.get_running_loop().create_future()))


async def test_a_hang_after_a_healthy_period_restarts_at_once(tmp_path: Path) -> None:
    events: list[Event] = []
    sup = Supervisor(tmp_path / "data", events.append)
    cfg = ProcessConfig(
        name="srv",
        command=("sleep", "60"),
        restart="always",
        stop_timeout_s=2.0,
        backoff_initial_s=30.0,  # a hang restart that kept its backoff would wait this long
        backoff_reset_s=0.2,
        backoff_jitter=0.0,
    )
    await sup.apply((cfg,))
    mp = sup.processes["srv"]

    async def restarted(count: int) -> dict[str, Any]:
        for _ in range(500):
            starts = [e for e in events if e.kind == "process.restarting"]
            if len(starts) >= count and mp.state == "running":
                return dict(starts[count - 1].data)
            await asyncio.sleep(0.01)
        raise AssertionError(f"no restart #{count}: {[e.kind for e in events]}")

    try:
        for n in (1, 2, 3):
            await asyncio.wait_for(mp.ready.wait(), 5)
            await asyncio.sleep(0.3)  # healthy for longer than backoff_reset
            mp.request("hang", "hung: test")
            assert (await restarted(n))["delay_s"] == 0
    finally:
        await sup.stop_all()
