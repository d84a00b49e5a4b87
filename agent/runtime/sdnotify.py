"""systemd's notify protocol (``sd_notify(3)``), spoken without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an
abstract socket) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``. Each message is one datagram of
``KEY=VALUE`` lines. Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the agent
calls these unconditionally.

The watchdog ping is sent from a task on the agent's event loop, at half of ``WATCHDOG_USEC``
as systemd recommends: if the loop wedges, the pings stop and systemd restarts the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger("vigil.sdnotify")


class Notifier:
    """Sends notify messages to systemd, if it asked for them."""

    def __init__(self, environ: dict[str, str] | None = None, *, unset: bool = False) -> None:
        """Read the protocol's variables from ``environ`` (default ``os.environ``).

        Args:
            unset: remove them from ``os.environ`` afterwards, so the model servers the agent
                starts do not inherit them and talk to systemd in the agent's name.
        """
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self.watchdog_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._failed = False
        if unset:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening."""
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one message (``READY="1"`` -> ``READY=1``); False when nobody listens.

        Errors are logged once and swallowed: a notify failure must never stop the agent.
        """
        if self.address is None:
            return False
        text = "\n".join(f"{k}={v.replace(chr(10), ' ')}" for k, v in fields.items())
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode("utf-8"), addr)
        except OSError as exc:
            if not self._failed:
                log.error("sd_notify failed socket=%s error=%r", self.address, str(exc))
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1`` with a status line: the API is bound and the first collection stored."""
        return self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def status(self, text: str) -> bool:
        """``STATUS=``: the one line ``systemctl status`` shows."""
        return self.send(STATUS=text)

    def stopping(self) -> bool:
        """``STOPPING=1``: the agent is shutting down."""
        return self.send(STOPPING="1", STATUS="stopping")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the main loop is alive."""
        return self.send(WATCHDOG="1")

    async def watchdog_loop(self, status: Callable[[], str] | None = None) -> None:
        """Ping at half the watchdog interval, refreshing STATUS too; runs until cancelled."""
        if self.watchdog_s is None or not self.enabled:
            return
        period = self.watchdog_s / 2
        while True:
            if status is not None:
                self.send(WATCHDOG="1", STATUS=status())
            else:
                self.watchdog()
            await asyncio.sleep(period)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """WATCHDOG_USEC in seconds, when it is meant for this process (WATCHDOG_PID)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # inherited from a parent that is itself watched
    return int(usec) / 1_000_000
