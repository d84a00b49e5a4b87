"""The outbox as the event loop sees it: awaitable reads and writes run by the single writer.

Every statement runs on the writer thread (``Writer.run_task``), the one connection that writes,
and its result or error comes back to the loop as a future. So an ``await enqueue(...)`` returns
once the rows are committed, which is what "written before it is sent" needs, and the loop never
waits on SQLite itself. A writer that is stopped or stuck turns into :class:`OutboxUnavailable`
after ``timeout_s``, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from agent.alerting.model import NotificationRequest
from storage import outbox as sql
from storage.outbox import OutboxEntry
from storage.writer import Writer

T = TypeVar("T")


class OutboxUnavailable(RuntimeError):
    """The outbox could not be read or written (storage failing, writer stopped)."""


def entry_for(request: NotificationRequest) -> OutboxEntry:
    """The outbox row of a notification (its payload is the request's plain JSON)."""
    return OutboxEntry(
        id=request.notification_id,
        channel=request.channel,
        kind=str(request.kind),
        dedup_key=request.dedup_key,
        payload=request.to_json(),
        created_ms=request.created_ms,
        next_attempt_ms=request.created_ms,
    )


def request_of(entry: OutboxEntry) -> NotificationRequest:
    """The notification stored in a row."""
    return NotificationRequest.from_json(entry.payload)


class OutboxStore:
    """Awaitable outbox operations on a running :class:`~storage.writer.Writer`."""

    def __init__(self, writer: Writer, *, timeout_s: float = 30.0) -> None:
        self.writer = writer
        self.timeout_s = timeout_s

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: object) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)  # type: ignore[arg-type]
            else:
                assert isinstance(value, BaseException)
                fut.set_exception(value)

        def task(conn: sqlite3.Connection) -> None:
            try:
                result = fn(conn)
            except BaseException as exc:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(settle, False, exc)
                raise  # the writer rolls back and logs
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, True, result)

        task.__name__ = f"outbox_{getattr(fn, '__name__', 'task')}"
        self.writer.run_task(task)
        try:
            return await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError as exc:
            raise OutboxUnavailable(f"storage did not answer in {self.timeout_s:g}s") from exc
        except sqlite3.Error as exc:
            raise OutboxUnavailable(f"storage failed: {exc}") from exc

    async def enqueue(self, requests: Iterable[NotificationRequest]) -> int:
        """Write notifications (committed when this returns); returns how many were new."""
        entries = [entry_for(r) for r in requests]
        return await self._run(lambda conn: sql.enqueue(conn, entries))

    def enqueue_nowait(
        self,
        requests: Iterable[NotificationRequest],
        on_written: Callable[[], None] | None = None,
    ) -> None:
        """Queue notifications for writing without waiting (from any thread); ``on_written``
        runs on the writer thread once they are committed."""
        entries = [entry_for(r) for r in requests]

        def write(conn: sqlite3.Connection) -> None:
            sql.enqueue(conn, entries)
            if on_written is not None:
                on_written()

        self.writer.run_task(write)

    async def due(self, channel: str, now_ms: int, limit: int) -> list[OutboxEntry]:
        """Pending rows of one channel whose time has come, oldest first."""
        return await self._run(lambda conn: sql.due(conn, channel, now_ms, limit))

    async def heads(self, channels: Sequence[str]) -> dict[str, int]:
        """When each channel's oldest pending notification may be sent."""
        names = list(channels)
        return await self._run(lambda conn: sql.heads(conn, names))

    async def mark_delivered(self, key: tuple[str, str], *, attempts: int, at_ms: int) -> None:
        """Record the receiver's acceptance."""
        await self._run(
            lambda conn: sql.mark_delivered(conn, key, attempts=attempts, delivered_ms=at_ms)
        )

    async def mark_failed(
        self,
        key: tuple[str, str],
        *,
        attempts: int,
        at_ms: int,
        error: str,
        next_attempt_ms: int | None,
    ) -> None:
        """Record a failed attempt (``next_attempt_ms`` None: given up)."""
        await self._run(
            lambda conn: sql.mark_failed(
                conn,
                key,
                attempts=attempts,
                attempted_ms=at_ms,
                error=error,
                next_attempt_ms=next_attempt_ms,
            )
        )

    async def entries(
        self, *, state: str | None = None, channel: str | None = None, limit: int = 200
    ) -> list[OutboxEntry]:
        """Rows newest first (for the API and ``vigil notify``)."""
        return await self._run(
            lambda conn: sql.list_entries(conn, state=state, channel=channel, limit=limit)
        )
