"""How a target is stopped (agent.supervise.targets, .tree): the configured stop signal reaches
the child, and the stop waits, bounded, for the tree's GPU memory to be released.

The processes are real children; only NVML's answer (which pids hold GPU memory) is faked, at
the ``gpu_pids`` callable the agent hands the supervisor: this machine has no GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from agent.config import ProcessConfig
from agent.supervise.proclogs import ProcessLog
from agent.supervise.targets import CommandTarget
from agent.supervise.tree import ExitInfo, Handle, describe_exit, terminate_tree

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "managed_server.py"

# A leader and a worker it forked into its group, as a model server with a GPU worker: both
# end on SIGTERM (Python's default), the leader once the worker is there.
LEADER_AND_WORKER = """
import os, sys, time
if os.fork() == 0:
    time.sleep(600)
    os._exit(0)
print("forked", flush=True)
time.sleep(600)
"""


async def _records(path: Path, pid: int, want: str) -> list[str]:
    """The lines ``pid`` appended to the --record-signals file, once ``want`` is among them."""
    deadline = time.monotonic() + 10
    while True:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        mine = [line.split()[1] for line in lines if line.split()[0] == str(pid)]
        if want in mine:
            return mine
        assert time.monotonic() < deadline, f"no {want!r} from pid {pid}: {lines}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
async def test_terminate_sends_the_configured_stop_signal(tmp_path: Path, stop_signal: str) -> None:
    record = tmp_path / "signals"
    cfg = ProcessConfig(
        name="srv",
        command=(sys.executable, "-S", str(FAKE), "--record-signals", str(record)),
        stop_signal=stop_signal,
        stop_timeout_s=5.0,
    )
    target = CommandTarget(cfg, ProcessLog(tmp_path / "logs", "srv", 1 << 20, 1))
    handle = await target.launch()
    assert handle.pid is not None
    try:
        await _records(record, handle.pid, "ready")
        info = await target.terminate(handle, None)
    finally:
        if handle.proc is not None and handle.proc.returncode is None:
            handle.proc.kill()
            await handle.proc.wait()
    received = await _records(record, handle.pid, stop_signal)
    # The group and the pid are both signalled: the handler may run twice, with one signal.
    assert set(received) == {"ready", stop_signal}
    assert info["killed"] is False  # it went on the stop signal, not on SIGKILL
    assert handle.exited.result().returncode == 0


class FakeNvml:
    """NVML's list of pids holding GPU memory: ``pids`` for the first ``busy_calls`` calls
    (``None``: for ever), and ``always`` on every call. Called from a thread, as the agent's."""

    def __init__(self, pids: set[int], busy_calls: int | None, always: set[int]) -> None:
        self.pids = pids
        self.busy_calls = busy_calls
        self.always = always
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> set[int]:
        with self._lock:
            self.calls += 1
            busy = self.busy_calls is None or self.calls <= self.busy_calls
        return (self.pids if busy else set()) | self.always


@pytest.fixture
async def tree() -> AsyncIterator[tuple[Handle, int]]:
    """A real leader with a forked worker in its own group; the handle and the worker's pid."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LEADER_AND_WORKER,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"forked\n"
    (worker,) = psutil.Process(proc.pid).children()
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[ExitInfo] = loop.create_future()

    async def reap() -> None:
        code = await proc.wait()
        exited.set_result(ExitInfo(code, describe_exit(code)))

    reaper = asyncio.create_task(reap())
    try:
        yield Handle(pid=proc.pid, exited=exited, pgid=proc.pid, proc=proc), worker.pid
    finally:
        # Whatever a failed test left of the group (the worker is in it too).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(reaper, 10)


async def test_stop_waits_until_the_trees_gpu_memory_is_released(
    tree: tuple[Handle, int],
) -> None:
    handle, worker = tree
    # The worker's memory outlives it for three NVML reads (the driver frees it late); another
    # process on the GPU (this test's own pid) holds memory throughout and is none of ours.
    nvml = FakeNvml({worker}, busy_calls=3, always={os.getpid()})
    t0 = time.monotonic()
    info = await asyncio.wait_for(
        terminate_tree(handle, signal.SIGTERM, timeout_s=10.0, gpu_pids=nvml), 30
    )
    elapsed = time.monotonic() - t0
    assert worker in info["tree"] and handle.pid in info["tree"]
    assert info["killed"] is False
    assert nvml.calls > 3, "the stop did not wait for the memory to clear"
    assert info["gpu_released"] is True
    # It waited between reads (a pause each), and stopped waiting once it cleared, long
    # before its 10 s bound.
    assert 0.3 <= elapsed < 5.0, elapsed


async def test_stop_gives_up_on_gpu_memory_that_never_clears(tree: tuple[Handle, int]) -> None:
    handle, worker = tree
    nvml = FakeNvml({worker}, busy_calls=None, always=set())
    t0 = time.monotonic()
    # stop_timeout 0.5 s: the wait for the GPU is bounded by max(stop_timeout, 1 s).
    info = await asyncio.wait_for(
        terminate_tree(handle, signal.SIGTERM, timeout_s=0.5, gpu_pids=nvml), 30
    )
    elapsed = time.monotonic() - t0
    assert info["gpu_released"] is False
    assert info["killed"] is False  # the processes did go: only their memory stayed
    assert nvml.calls >= 3  # it kept asking until its bound
    assert 1.0 <= elapsed < 4.0, elapsed
