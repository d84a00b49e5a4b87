"""Process trees: how a process ends, is watched, and is stopped with everything it started.

A stop must end the process, its descendants and its process group (a worker that called
setsid() leaves the group but stays a descendant; an orphaned worker stays in the group), then
wait until they, their port and their GPU memory are gone. Exit detection never polls: asyncio
reaps our own children and a pidfd wakes us for any other process (Linux >= 5.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

__all__ = [
    "ExitInfo",
    "Handle",
    "alive",
    "describe_exit",
    "group_empty",
    "leftovers",
    "port_free",
    "process_create_time",
    "terminate_tree",
    "tree_pids",
    "watch_pidfd",
]

log = logging.getLogger("vigil.supervisor")

_POLL_GONE_S = 0.01
_RELEASE_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a process ended. ``returncode`` is None when the kernel does not tell us (a process
    we adopted is not our child, so its status goes to its real parent)."""

    returncode: int | None
    description: str


def describe_exit(returncode: int | None) -> str:
    """``exit 3`` or ``signal SIGKILL`` from a returncode (negative means killed by signal)."""
    if returncode is None:
        return "exited (status not visible: adopted process)"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


@dataclass
class Handle:
    """One running incarnation of a target."""

    pid: int | None
    exited: asyncio.Future[ExitInfo]
    create_time: float | None = None
    adopted: bool = False
    pgid: int | None = None
    """Set when the process leads its own process group (our children do), so a signal to the
    group reaches the workers it forked."""
    started_mono: float = field(default_factory=time.monotonic)
    proc: asyncio.subprocess.Process | None = None


def process_create_time(pid: int) -> float | None:
    """psutil's start time of ``pid``; None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def watch_pidfd(pid: int) -> asyncio.Future[ExitInfo]:
    """A future resolved when ``pid`` (not our child) exits, woken by its pidfd."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[ExitInfo] = loop.create_future()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        fut.set_result(ExitInfo(None, describe_exit(None)))
        return fut

    def done() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not fut.done():
            fut.set_result(ExitInfo(None, describe_exit(None)))

    loop.add_reader(fd, done)

    def cancelled(f: asyncio.Future[ExitInfo]) -> None:
        if f.cancelled():
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(fd)
                os.close(fd)

    fut.add_done_callback(cancelled)
    return fut


def tree_pids(pid: int, pgid: int | None) -> set[int]:
    """The process, its descendants and the members of its group: everything a stop must end.

    Both, because a worker that called setsid() leaves the group but stays a descendant, and a
    worker whose parent died is re-parented away but stays in the group.
    """
    out = {pid}
    with contextlib.suppress(psutil.Error):
        out.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    if pgid is not None:
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(p.pid) == pgid:
                    out.add(p.pid)
    return out


def alive(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` that are alive (a zombie is not)."""
    out = set()
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            pass
    return out


def _signal_tree(pids: Iterable[int], pgid: int | None, sig: int) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    """Wait until none of ``pids`` is alive (zombies count as gone); return the survivors."""
    end = time.monotonic() + timeout_s
    left = alive(pids)
    while left and time.monotonic() < end:
        await asyncio.sleep(_POLL_GONE_S)
        left = alive(left)
    return left


def leftovers(handle: Handle) -> set[int]:
    """Members of an exited process's group that are still alive: workers it forked that
    outlived it. Blocking (scans the process table): call in a thread."""
    if handle.pid is None or handle.pgid is None:
        return set()
    return alive(tree_pids(handle.pid, handle.pgid)) - {handle.pid}


def group_empty(handle: Handle) -> bool:
    """True when no process (not even a zombie) is left in an exited process's group: one
    ``kill(-pgid, 0)`` instead of :func:`leftovers`' scan of the process table, so the common
    crash, with nothing left behind, restarts without that scan on the critical path."""
    if handle.pid is None or handle.pgid is None:
        return True
    try:
        os.killpg(handle.pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a member runs as another user: the group is not empty
    return False


def port_free(port: int) -> bool:
    """True when nothing listens on ``port`` (any address): we could bind it ourselves."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # noqa: S104
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host
        with s:
            # SO_REUSEADDR: connections in TIME_WAIT do not hold the port for a new server.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


async def terminate_tree(
    handle: Handle,
    stop_signal: int,
    timeout_s: float,
    *,
    port: int | None = None,
    gpu_pids: Callable[[], set[int]] | None = None,
) -> dict[str, object]:
    """Stop a process and everything it started; wait until they, their port and their GPU
    memory are gone. Returns what happened, for the audit event."""
    assert handle.pid is not None
    t0 = time.monotonic()
    tree = tree_pids(handle.pid, handle.pgid)
    _signal_tree(tree, handle.pgid, stop_signal)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(handle.exited), timeout_s)
    survivors = await _wait_gone(tree, max(0.0, timeout_s - (time.monotonic() - t0)))
    killed = False
    if survivors or not handle.exited.done():
        killed = True
        log.warning(
            "stop signal ignored pid=%d survivors=%s; killing", handle.pid, sorted(survivors)
        )
        _signal_tree(survivors | {handle.pid}, handle.pgid, signal.SIGKILL)
        survivors = await _wait_gone(survivors | {handle.pid}, 5.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(handle.exited), 5.0)
    out: dict[str, object] = {"killed": killed, "tree": sorted(tree)}
    if survivors:
        out["survivors"] = sorted(survivors)
    if port is not None:
        end = time.monotonic() + max(timeout_s, 1.0)
        # Nothing notifies a port's release: poll, bounded by the deadline.
        while not port_free(port) and time.monotonic() < end:  # noqa: ASYNC110
            await asyncio.sleep(_RELEASE_POLL_S)
        out["port_released"] = port_free(port)
    if gpu_pids is not None:
        end = time.monotonic() + max(timeout_s, 1.0)
        while time.monotonic() < end:
            held = tree & await asyncio.to_thread(gpu_pids)
            if not held:
                break
            await asyncio.sleep(_RELEASE_POLL_S * 4)
        out["gpu_released"] = not (tree & await asyncio.to_thread(gpu_pids))
    out["stop_ms"] = round((time.monotonic() - t0) * 1000, 1)
    return out
