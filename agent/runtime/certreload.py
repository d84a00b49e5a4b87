"""The API's certificate and key, re-read when either file changes.

Certificates are renewed in place (certbot swapping its ``live/`` symlinks, a config manager,
a Kubernetes secret volume swapping its ``..data`` link), so the agent re-reads both files when
the directory holding either reports a change (watchdog, debounced) and, as a fallback for what
a watch misses, every :data:`POLL_S`. New handshakes get the new pair; connections already open
keep theirs until they close.

A pair that does not load (half written, a key for another certificate, a damaged file) is
refused: the running certificate keeps serving, and the refusal is logged and recorded as
``api.tls_reload_refused`` once per change of the files; the next change is tried afresh.

How new handshakes get the new pair: the listening context's SNI callback, which OpenSSL calls
for every ClientHello (with a server name or without), moves the connection to the newest
context. Loading the new chain into the listening context itself would not be atomic: OpenSSL
installs a certificate before it checks the key, so a mismatched key would leave the context
serving nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from agent.config.records import TlsConfig
from agent.config.tls import TlsFileError, leaf_sha256, server_context
from probes.base import now_ms
from storage.records import Event

log = logging.getLogger("vigil.tls")

DEBOUNCE_S = 1.0
"""Quiet time after the last change before the pair is re-read: renewals write the certificate
and the key one after the other, and the pair matches only once both are written."""
POLL_S = 60.0
"""How often the files' identities are compared anyway (a change the watch cannot see: a
symlink's target rewritten in a directory not watched, a file system without inotify)."""

Signature = tuple[tuple[int, int, int, int] | None, ...]


def _signature(tls: TlsConfig) -> Signature:
    """What identifies the files' contents cheaply: device, inode, size and mtime of each,
    through symlinks (None for a file that cannot be reached)."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in (tls.cert_file, tls.key_file):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class _Handler(FileSystemEventHandler):
    def __init__(self, notify: Callable[[], None]) -> None:
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Any change in the directory: whether it touched the pair is decided by _signature.
        if event.event_type not in ("opened", "closed_no_write"):
            self.notify()


class CertReloader:
    """Holds the API's server contexts and swaps in a new one when the files change.

    Args:
        tls: the ``[agent.tls]`` settings (the files are watched by these paths).
        emit: records an event (the agent's audit trail).
        poll_s: the fallback poll's period.
        debounce_s: the quiet time after a watched change before the files are read.

    Raises:
        TlsFileError: the files do not load now (the agent does not start without them).
    """

    def __init__(
        self,
        tls: TlsConfig,
        emit: Callable[[Event], None],
        *,
        poll_s: float = POLL_S,
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        self.tls = tls
        self.emit = emit
        self.poll_s = poll_s
        self.debounce_s = debounce_s
        self._signature = _signature(tls)
        self.context = server_context(tls)
        """The listening context; its SNI callback hands each handshake the newest one."""
        self.context.sni_callback = self._pick
        self._current = self.context
        self._refused: Signature | None = None
        self.sha256 = _fingerprint(tls.cert_file)
        """The fingerprint of the certificate new handshakes get."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._pending: asyncio.TimerHandle | None = None
        self._poll: asyncio.Task[None] | None = None

    def _pick(self, conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        del server_name  # one certificate for every name
        if self._current is not ctx:
            conn.context = self._current

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the files' directories and poll; a directory that cannot be watched leaves
        the poll."""
        self._loop = loop
        self._poll = loop.create_task(self._poll_loop())
        dirs = {str(self.tls.cert_file.parent), str(self.tls.key_file.parent)}
        try:
            observer = Observer()
            for directory in sorted(dirs):
                observer.schedule(_Handler(self._notify), directory, recursive=False)
            observer.daemon = True
            observer.start()
        except OSError as exc:
            log.warning(
                "certificate watch unavailable dirs=%s error=%r; polled every %gs",
                ",".join(sorted(dirs)),
                str(exc),
                self.poll_s,
            )
            return
        self._observer = observer

    def stop(self) -> None:
        """Stop watching and polling; the contexts keep serving what is open."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None

    def _notify(self) -> None:  # a watchdog thread
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to serve
                self._loop.call_soon_threadsafe(self._debounce)

    def _debounce(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        assert self._loop is not None
        self._pending = self._loop.call_later(self.debounce_s, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self.check("file change")

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.check("poll")

    def check(self, trigger: str) -> bool | None:
        """Reload the pair if the files changed since the last load or refusal.

        Returns:
            True when a new pair now serves, False when a changed pair was refused, None when
            nothing changed.
        """
        signature = _signature(self.tls)
        if signature in (self._signature, self._refused):
            return None
        try:
            fresh = server_context(self.tls)
            sha256 = _fingerprint(self.tls.cert_file)
        except TlsFileError as exc:
            self._refused = signature
            log.error(
                "api certificate reload refused trigger=%s field=agent.tls.%s error=%r; "
                "the running certificate keeps serving",
                trigger,
                exc.key,
                exc.reason,
            )
            self.emit(
                Event(
                    ts_ms=now_ms(),
                    kind="api.tls_reload_refused",
                    subject="agent",
                    message=f"API certificate not reloaded: {exc}; the running one keeps serving",
                    data={
                        "field": f"agent.tls.{exc.key}",
                        "path": str(self.tls.cert_file if exc.key == "cert" else self.tls.key_file),
                        "reason": exc.reason,
                        "trigger": trigger,
                        "sha256": self.sha256,
                    },
                )
            )
            return False
        previous, self.sha256 = self.sha256, sha256
        self._current, self._signature, self._refused = fresh, signature, None
        log.info(
            "api certificate reloaded trigger=%s cert=%s sha256=%s",
            trigger,
            self.tls.cert_file,
            sha256,
        )
        self.emit(
            Event(
                ts_ms=now_ms(),
                kind="api.tls_reloaded",
                subject="agent",
                message=f"API certificate reloaded from {self.tls.cert_file} ({trigger})",
                data={
                    "cert": str(self.tls.cert_file),
                    "key": str(self.tls.key_file),
                    "sha256": sha256,
                    "previous_sha256": previous,
                    "trigger": trigger,
                },
            )
        )
        return True


def _fingerprint(cert_file: Path) -> str:
    try:
        return leaf_sha256(cert_file)
    except (OSError, ValueError) as exc:  # server_context just read it: a race with a writer
        raise TlsFileError("cert", f"cannot read {cert_file}: {exc}") from None
