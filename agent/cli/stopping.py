"""Stopping a command that started processes: SIGHUP (a closed terminal) and SIGTERM end it as
Ctrl-C does, so what it started is cleaned up, with a forced exit as the backstop."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGHUP, signal.SIGTERM)
"""What a closed terminal (SIGHUP) or a ``kill`` (SIGTERM) sends a command."""
STOP_GRACE_S = 5.0
"""How long a stop signal gives the command to wind down before it is ended by force."""


class StopSignals:
    """SIGHUP and SIGTERM while a command runs: those received, and the cleanups that must run
    even if the command cannot stop by itself (see :func:`stop_signals_interrupt`)."""

    def __init__(self, grace_s: float) -> None:
        self.received: list[int] = []
        self.grace_s = grace_s
        self._cleanups: list[Callable[[], None]] = []
        self._deadline: threading.Timer | None = None

    def on_forced_exit(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` (from another thread) before a forced exit; it may run twice."""
        self._cleanups.append(cleanup)

    def _arm(self) -> None:
        self._deadline = threading.Timer(self.grace_s, self._force_exit)
        self._deadline.daemon = True
        self._deadline.start()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()

    def _force_exit(self) -> None:
        for cleanup in self._cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        os._exit(128 + self.received[0])


@contextlib.contextmanager
def stop_signals_interrupt(grace_s: float = STOP_GRACE_S) -> Iterator[StopSignals]:
    """Let SIGHUP and SIGTERM stop a command as Ctrl-C does, so that its cleanup runs.

    ``vigil demo`` and ``vigil tui`` start processes (the demo's agent and model server, ssh
    forwards) and make temporary directories, and undo that in ``finally`` blocks. Python's
    default for SIGHUP and SIGTERM ends the process without running them, so a dropped ssh
    connection or a killed tmux window left the demo running. The first stop signal is handed
    to the current SIGINT handler: while the TUI runs that is asyncio's, which cancels the
    app's main task so Textual shuts down (and gives the terminal back) before
    ``KeyboardInterrupt`` comes out of it; elsewhere ``KeyboardInterrupt`` is raised at once.
    Later ones are only noted: a second exception raised at a random point of the shutdown
    under way could wreck it. Not for ``vigil agent run``, where SIGHUP reloads the config.

    After SIGHUP the terminal is gone: the standard streams that were a terminal are pointed
    at /dev/null, so writing to them cannot fail (Textual's output thread dies on EIO, and its
    shutdown then waits forever). Whatever still hangs is ended after ``grace_s``: the
    cleanups given to :meth:`StopSignals.on_forced_exit` run, then the process exits with
    128 + the signal's number.

    Yields:
        The stop signals received so far, and where to leave the forced-exit cleanups.
    """
    stop = StopSignals(grace_s)
    terminals = [fd for fd in (1, 2) if os.isatty(fd)]  # now: a hung-up one is no tty

    def interrupt(signum: int, frame: FrameType | None) -> None:
        stop.received.append(signum)
        if len(stop.received) > 1:
            return  # already stopping
        if signum == signal.SIGHUP:
            _detach(terminals)
        stop._arm()
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
        else:  # SIGINT ignored (started in the background) or left to the OS
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        stop._disarm()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _detach(fds: list[int]) -> None:
    """Point ``fds`` at /dev/null: what is still written to the closed terminal is dropped."""
    if not fds:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(null, fd)
    os.close(null)
