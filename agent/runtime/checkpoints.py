"""Signed audit checkpoints as a job of the agent (see :mod:`storage.auditcheckpoint`).

Every ``[agent] audit_checkpoint_interval`` (5 minutes by default) and when the agent stops,
the chain's head is signed with the host key and the line is written where an attacker on the
host cannot take it back: the syslog socket (``audit_syslog``, ``/dev/log``, which the systemd
journal reads and a syslog daemon may forward), and, if configured, POSTed to a webhook
(``audit_webhook``); a copy goes to ``audit-checkpoints.log`` in the data dir, for exports.

A head that has not moved since the last checkpoint is not signed again, except once a day
(:data:`HEARTBEAT_MS`): a quiet host still shows, in its journal, that its chain stood where
it stood. A webhook that fails keeps its lines (up to :data:`MAX_PENDING`) for the next turn;
the syslog socket is a local datagram and either takes the line or logs why not.

Nothing here can stop the agent: a missing key, a locked database or an absent socket is
logged and the next turn tries again. ``cryptography`` is imported (by the key's module) on the
first signature, not at start.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.alerting.channels.http import host_of
from agent.config import AgentConfig
from probes.base import now_ms
from probes.httpclient import HttpClient, InvalidURL, WireError
from storage.db import DB_FILENAME, connect

if TYPE_CHECKING:
    from agent.runtime.schedule import Scheduler
    from storage.auditcheckpoint import Checkpoint
    from storage.auditkey import HostKey

log = logging.getLogger("vigil.agent")

HEARTBEAT_MS = 86_400_000
"""An unmoved head is signed again after a day."""
MAX_PENDING = 1000
"""Lines a failing webhook keeps for later (the oldest go first)."""
WEBHOOK_TIMEOUT_S = 10.0
SYSLOG_IDENT = "vigil"
SYSLOG_PRIORITY = (3 << 3) | 5
"""daemon.notice: not an error, but worth keeping where notices are kept."""
JOB_ID = "audit-checkpoint"


def send_syslog(path: str, line: str, *, ident: str = SYSLOG_IDENT) -> None:
    """Send ``line`` to the syslog socket at ``path`` as glibc's ``syslog(3)`` would: one
    datagram ``<PRI>Mmm dd hh:mm:ss ident[pid]: line`` (a stream socket if that is what
    listens there). The journal stores it with ``SYSLOG_IDENTIFIER=vigil``.

    Raises:
        OSError: no socket there, or it refused the message.
    """
    stamp = time.strftime("%b %e %H:%M:%S")
    msg = f"<{SYSLOG_PRIORITY}>{stamp} {ident}[{os.getpid()}]: {line}".encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.settimeout(2.0)
        try:
            sock.connect(path)
        except OSError as exc:
            if exc.errno != errno.EPROTOTYPE:
                raise
            sock.close()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2.0)
            sock.connect(path)
            msg += b"\n"
        sock.sendall(msg)
    finally:
        sock.close()


class Checkpoints:
    """Signs the chain's head on a schedule and sends the lines off the host."""

    def __init__(self, data_dir: Path, settings: Callable[[], AgentConfig]) -> None:
        self.data_dir = data_dir
        self.settings = settings
        """The running ``[agent]`` settings (they change on reload)."""
        self._key: HostKey | None = None
        self._last: Checkpoint | None = None
        self._loaded = False
        self._pending: collections.deque[str] = collections.deque(maxlen=MAX_PENDING)
        self._client: HttpClient | None = None
        self._interval_s: float | None = None
        self._syslog_failing = False
        self._turns = asyncio.Lock()
        """One turn at a time: the stop's turn waits for a scheduled one still running."""
        self.signed = 0
        """Checkpoints signed by this agent (for tests and the log)."""

    def schedule(self, sched: Scheduler, a: AgentConfig) -> None:
        """Add the job, or change its interval; a reload that leaves the interval as it was
        keeps the job's timer (reloads must not postpone checkpoints forever)."""
        if self._interval_s == a.audit_checkpoint_interval_s:
            return
        self._interval_s = a.audit_checkpoint_interval_s
        sched.every(JOB_ID, self._interval_s, self._turn, first_in_s=self._interval_s)

    async def _turn(self) -> None:
        await self.run(self.settings())

    async def run(self, a: AgentConfig, *, final: bool = False) -> str | None:
        """Sign the head if it moved (or a day passed) and send it; the line, or None."""
        async with self._turns:
            line = await asyncio.to_thread(self._sign, a.host, final)
            if line is not None and a.audit_syslog:
                await asyncio.to_thread(self._syslog, a.audit_syslog, line)
            if a.audit_webhook:
                if line is not None:
                    self._pending.append(line)
                await self._post_pending(a.audit_webhook, final=final)
            return line

    async def close(self) -> None:
        """Close the webhook's connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    # --- signing (in a thread) ---------------------------------------------------------------

    def _sign(self, host: str, final: bool) -> str | None:
        from storage.auditcheckpoint import append_local, head_checkpoint, signed_line
        from storage.auditkey import load_or_create

        try:
            if self._key is None:
                self._key = load_or_create(self.data_dir)
            key = self._key
            if not self._loaded:
                self._last = self._last_local(key)
                self._loaded = True
            conn = connect(self.data_dir / DB_FILENAME, readonly=True)
            try:
                cp = head_checkpoint(conn, host, key.public.fingerprint, now_ms())
            finally:
                conn.close()
        except Exception as exc:  # a key, a database or cryptography missing: a turn missed
            log.error("audit checkpoint not signed error=%r", str(exc))
            return None
        last = self._last
        if (
            last is not None
            and (last.seq, last.hash) == (cp.seq, cp.hash)
            and cp.ts_ms - last.ts_ms < HEARTBEAT_MS
        ):
            return None
        line = signed_line(cp, key)
        self._last = cp
        self.signed += 1
        try:
            append_local(self.data_dir, line)
        except OSError as exc:  # a full disk: the copies off the host still go out
            log.warning("audit checkpoint not kept locally error=%r", exc.strerror or str(exc))
        log.info(
            "audit checkpoint signed seq=%d hash=%s key=%s%s",
            cp.seq,
            cp.hash[:16],
            cp.key,
            " at=stop" if final else "",
        )
        return line

    def _last_local(self, key: HostKey) -> Checkpoint | None:
        from storage.auditcheckpoint import parse, read_local

        found = parse(read_local(self.data_dir), key.public).valid
        return max(found, key=lambda c: c.ts_ms) if found else None

    # --- sending -----------------------------------------------------------------------------

    def _syslog(self, path: str, line: str) -> None:
        try:
            send_syslog(path, line)
        except OSError as exc:
            if not self._syslog_failing:
                log.warning(
                    "audit checkpoint not sent to syslog socket=%s error=%r",
                    path,
                    exc.strerror or str(exc),
                )
            self._syslog_failing = True
            return
        if self._syslog_failing:
            log.info("audit checkpoints reach syslog again socket=%s", path)
        self._syslog_failing = False

    async def _post_pending(self, url: str, *, final: bool) -> None:
        if self._client is None or self._client.closed:
            self._client = HttpClient(user_agent="vigil-audit/1")
        timeout = WEBHOOK_TIMEOUT_S / 2 if final else WEBHOOK_TIMEOUT_S
        while self._pending:
            line = self._pending[0]
            why = await self._post(url, line, timeout)
            if why is not None:
                log.warning(
                    "audit checkpoint not sent to webhook host=%s error=%r pending=%d",
                    host_of(url),
                    why,
                    len(self._pending),
                )
                return
            self._pending.popleft()

    async def _post(self, url: str, line: str, timeout_s: float) -> str | None:
        """POST one line; None when the receiver took it, else why not."""
        assert self._client is not None
        body = {"format": "vigil-checkpoint/1", "line": line}
        try:
            async with self._client.post(url, json=body, timeout_s=timeout_s) as resp:
                await resp.read(limit=64 * 1024)
                status = resp.status
        except TimeoutError:
            return f"no answer in {timeout_s:g}s"
        except InvalidURL:
            return "invalid URL"
        except (WireError, OSError) as exc:
            return str(getattr(exc, "reason", None) or exc)
        return None if 200 <= status < 300 else f"HTTP {status}"
