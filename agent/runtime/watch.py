"""Live config reload: watch the config file with watchdog and ask the agent to reload.

The directory is watched, not the file: editors and config managers replace files atomically
(write a temp file, rename it over), which a watch on the old inode would miss.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("vigil.watch")

DEBOUNCE_S = 0.3
"""Quiet time after the last change event before the file is re-read."""


class _Handler(FileSystemEventHandler):
    def __init__(self, path: Path, notify: Callable[[], None]) -> None:
        self.path = os.path.realpath(path)
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(p and os.path.realpath(os.fsdecode(p)) == self.path for p in paths):
            self.notify()


class ConfigWatcher:
    """Calls ``on_change`` on the event loop when the config file changes."""

    def __init__(
        self, path: Path, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None]
    ) -> None:
        self.path = path
        self.loop = loop
        self.on_change = on_change
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._pending: asyncio.TimerHandle | None = None

    def _notify(self) -> None:
        self.loop.call_soon_threadsafe(self._debounce)

    def _debounce(self) -> None:
        # A save is a burst of events, and an in-place write (cp, shell redirection) passes
        # through a truncated, even empty, file: wait for the file to be quiet before reading.
        if self._pending is not None:
            self._pending.cancel()
        self._pending = self.loop.call_later(DEBOUNCE_S, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self.on_change()

    def start(self) -> None:
        """Start watching; a directory that cannot be watched only disables live reload."""
        try:
            observer = Observer()
            observer.schedule(
                _Handler(self.path, self._notify), str(self.path.parent), recursive=False
            )
            observer.daemon = True
            observer.start()
        except OSError as exc:
            log.warning(
                "config file watch unavailable path=%s error=%r; SIGHUP still reloads",
                self.path,
                str(exc),
            )
            return
        self._observer = observer

    def stop(self) -> None:
        """Stop watching."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None
