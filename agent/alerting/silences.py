"""Silences: label matchers that mute matching alerts' notifications for a while.

A silence mutes notifications only: alerts are still evaluated, recorded and audited. It ends
by itself at ``ends_ms`` (``silence.expired``, by ``time``) or when someone expires it early.
Matchers are Alertmanager's: ``label=value``, ``label!=value``, ``label=~regex``,
``label!~regex``, regexes anchored at both ends (:class:`Matcher`, in
:mod:`agent.config.alerting.routes` so that routes in the config can use it too).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping

from agent.config.alerting.routes import Matcher
from storage.alerts import SilenceRow, list_silences, save_silence
from storage.records import Event
from storage.writer import Writer

__all__ = ["Matcher", "SilenceBook", "matchers_of"]


def matchers_of(row: SilenceRow) -> list[Matcher]:
    """A stored silence's matchers."""
    return [Matcher(*m) for m in row.matchers]


class SilenceBook:
    """The silences in force; every change stored and audited."""

    def __init__(self, writer: Writer | None, emit: Callable[[Event], None]) -> None:
        self.writer = writer
        self.emit = emit
        self._rows: dict[str, SilenceRow] = {}
        self._matchers: dict[str, list[Matcher]] = {}

    def load(self, conn: sqlite3.Connection, now_ms: int) -> None:
        """Pick up the silences not yet ended (at start); those ended meanwhile expire next step."""
        for row in list_silences(conn):
            if row.expired_ms is None:
                self._keep(row)

    def _keep(self, row: SilenceRow) -> None:
        self._rows[row.id] = row
        self._matchers[row.id] = matchers_of(row)

    def create(
        self,
        matchers: Iterable[Matcher],
        *,
        duration_s: float,
        author: str,
        comment: str,
        now_ms: int,
        starts_ms: int | None = None,
    ) -> SilenceRow:
        """Add a silence from ``starts_ms`` (default now) for ``duration_s``.

        Raises:
            ValueError: no matcher, no author, or a duration that is not positive.
        """
        ms = tuple((m.label, m.op, m.value) for m in matchers)
        if not ms:
            raise ValueError("a silence needs at least one matcher")
        if not author.strip():
            raise ValueError("a silence needs an author")
        if duration_s <= 0:
            raise ValueError(f"expected a duration > 0, got {duration_s!r}")
        start = now_ms if starts_ms is None else starts_ms
        row = SilenceRow(
            id=uuid.uuid4().hex[:12],
            matchers=ms,
            starts_ms=start,
            ends_ms=start + int(duration_s * 1000),
            author=author.strip(),
            comment=comment,
            created_ms=now_ms,
        )
        self._keep(row)
        self._store(row, "silence.created", f"silence {row.id} by {row.author}: {comment}", now_ms)
        return row

    def expire(self, silence_id: str, by: str, now_ms: int) -> SilenceRow | None:
        """End a silence now (an operator); None when there is no such silence in force."""
        row = self._rows.get(silence_id)
        if row is None:
            return None
        return self._end(row, by, now_ms)

    def step(self, now_ms: int) -> list[SilenceRow]:
        """Expire the silences whose time is up; each is audited at its end time."""
        return [
            self._end(r, "time", r.ends_ms)
            for r in list(self._rows.values())
            if r.ends_ms <= now_ms
        ]

    def _end(self, row: SilenceRow, by: str, at_ms: int) -> SilenceRow:
        del self._rows[row.id]
        del self._matchers[row.id]
        row = dataclasses.replace(row, expired_ms=at_ms, expired_by=by)
        self._store(row, "silence.expired", f"silence {row.id} expired ({by})", at_ms)
        return row

    def active(self, now_ms: int) -> list[SilenceRow]:
        """The silences muting now, oldest first."""
        return sorted(
            (r for r in self._rows.values() if r.starts_ms <= now_ms < r.ends_ms),
            key=lambda r: r.created_ms,
        )

    def silencing(self, labels: Mapping[str, str], now_ms: int) -> SilenceRow | None:
        """The silence muting an alert with these labels now, if any."""
        for row in self.active(now_ms):
            if all(m.matches(labels) for m in self._matchers[row.id]):
                return row
        return None

    def _store(self, row: SilenceRow, kind: str, message: str, at_ms: int) -> None:
        if self.writer is not None:
            self.writer.run_task(lambda conn: save_silence(conn, row))
        self.emit(
            Event(
                ts_ms=at_ms,
                kind=kind,
                subject="alerts",
                message=message,
                data={
                    "silence": row.id,
                    "matchers": [f"{a}{b}{c}" for a, b, c in row.matchers],
                    "starts_ms": row.starts_ms,
                    "ends_ms": row.ends_ms,
                    "author": row.author,
                    "comment": row.comment,
                    "by": row.expired_by,
                },
            )
        )
