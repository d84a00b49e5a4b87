"""Deploy records as the event loop sees them: writes run by the one writer, reads off the loop.

Deploy records are small, transactional and must be durable before the state machine acts on
them (a state is written, then the link switched), so they follow the outbox's precedent
(``agent.alerting.outbox_store``), not the batched record path: :meth:`DeployStore.write` runs
one function of ``storage.versions`` / ``storage.deployments`` on the writer thread
(``Writer.run_task``), each in its own transaction, and returns once it is committed, or raises
what it raised (``DeployInFlight``, ``DeployStateChanged``, ``LookupError`` are answers and pass
through as they are). :meth:`DeployStore.read` runs a query on a read-only connection in a
worker thread. A writer that is stopped or stuck, or a database that cannot be read, turns into
:class:`StorageUnavailable` after ``timeout_s``, never a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from storage.db import connect
from storage.deployments import DeployInFlight, DeployStateChanged
from storage.writer import Writer

T = TypeVar("T")

_ANSWERS = (DeployInFlight, DeployStateChanged, LookupError)
"""Raised by a write as its answer: handed to the caller, not logged by the writer."""


class StorageUnavailable(RuntimeError):
    """Deploy records could not be read or written (storage failing, writer stopped)."""


class DeployStore:
    """Awaitable reads and writes of deploy records (see the module docstring)."""

    def __init__(self, writer: Writer, db_path: Path | str, *, timeout_s: float = 30.0) -> None:
        self.writer = writer
        self.db_path = db_path
        self.timeout_s = timeout_s

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer thread; its result once committed."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def task(conn: sqlite3.Connection) -> None:
            if not fut.set_running_or_notify_cancel():
                return  # the caller gave up before the writer got here: do nothing
            try:
                fut.set_result(fn(conn))
            except _ANSWERS as exc:
                fut.set_exception(exc)
            except BaseException as exc:
                fut.set_exception(exc)
                raise  # the writer rolls back and logs

        task.__name__ = f"deploy_{getattr(fn, '__name__', 'write')}"
        self.writer.run_task(task)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.timeout_s)
        except TimeoutError as exc:
            raise StorageUnavailable(f"storage did not answer in {self.timeout_s:g}s") from exc
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"storage failed: {exc}") from exc

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a read-only connection in a worker thread."""

        def run() -> T:
            conn = connect(self.db_path, readonly=True)
            try:
                return fn(conn)
            finally:
                conn.close()

        try:
            return await asyncio.wait_for(asyncio.to_thread(run), self.timeout_s)
        except TimeoutError as exc:
            raise StorageUnavailable(f"storage did not answer in {self.timeout_s:g}s") from exc
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"storage failed: {exc}") from exc
