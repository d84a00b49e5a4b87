"""The incident book: opens, acknowledges and resolves incidents, and records each step.

The book keeps the open incidents in memory (the agent decides on them many times a second
and must not wait on the database) and persists every change through the writer, plus an
audit event. Ids are allocated here, from the highest stored id, so a root incident's id is
known before its row is written.

Times are those of the decisions (see the KPI glossary, docs/kpi.md): an incident opens at
``opened_ms``, the moment the agent decided (not when the book got round to it), and its
audit events carry the same times as the incident's own fields. ``began_ms`` is when the
fault was first there to be seen; time to recover is measured from it.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from probes.base import now_ms
from storage.incidents import list_incidents, max_incident_id, save_incident
from storage.records import Event, Incident
from storage.writer import Writer

log = logging.getLogger("vigil.incidents")


class IncidentBook:
    """Open incidents by (subject, kind); every change persisted and audited."""

    def __init__(self, writer: Writer, emit: Callable[[Event], None]) -> None:
        self.writer = writer
        self.emit = emit
        self._open: dict[tuple[str, str], Incident] = {}
        self._next_id = 1

    def load(self, conn: sqlite3.Connection) -> None:
        """Pick up the open incidents and the id counter from the database (at start)."""
        self._next_id = max_incident_id(conn) + 1
        for inc in list_incidents(conn, state="open", limit=10_000):
            self._open[(inc.subject, inc.kind)] = inc

    def open_incidents(self) -> list[Incident]:
        """The incidents not yet resolved, oldest first."""
        return sorted(self._open.values(), key=lambda i: i.id)

    def current(self, subject: str) -> Incident | None:
        """The oldest unresolved incident about ``subject``, if any."""
        found = [i for (s, _), i in self._open.items() if s == subject]
        return min(found, key=lambda i: i.id) if found else None

    def _store(
        self, inc: Incident, kind: str, message: str, at_ms: int, by: str | None = None
    ) -> None:
        self.writer.run_task(lambda conn: save_incident(conn, inc))
        data: dict[str, Any] = {"incident": inc.id, "kind": inc.kind, "state": inc.state}
        if inc.began_ms is not None:
            data["began_ms"] = inc.began_ms
        if by:
            data["by"] = by
        if inc.ttr_ms is not None:
            data["ttr_ms"] = inc.ttr_ms
        if inc.root_id is not None:
            data["root_id"] = inc.root_id
        self.emit(
            Event(
                ts_ms=at_ms,
                kind=kind,
                subject=inc.subject,
                message=message,
                data={**data, "evidence": dict(inc.evidence)},
            )
        )

    def open(
        self,
        subject: str,
        kind: str,
        *,
        severity: str,
        cause: str,
        evidence: Mapping[str, Any] | None = None,
        root_id: int | None = None,
        opened_ms: int | None = None,
        began_ms: int | None = None,
    ) -> Incident:
        """Open an incident, or return the one already open for (subject, kind).

        Args:
            opened_ms: when the decision was taken (default: now).
            began_ms: when the fault was first there to be seen (default: ``opened_ms``).
        """
        existing = self._open.get((subject, kind))
        if existing is not None:
            return existing
        opened = opened_ms if opened_ms is not None else now_ms()
        began = min(began_ms, opened) if began_ms is not None else opened
        inc = Incident(
            id=self._next_id,
            subject=subject,
            kind=kind,
            severity=severity,
            cause=cause,
            state="open",
            opened_ms=opened,
            root_id=root_id,
            evidence=dict(evidence or {}),
            began_ms=began,
        )
        self._next_id += 1
        self._open[(subject, kind)] = inc
        log.warning(
            "incident opened id=%d subject=%s kind=%s cause=%r", inc.id, subject, kind, cause
        )
        self._store(inc, "incident.opened", f"#{inc.id} {kind}: {cause}", opened)
        return inc

    def resolve(
        self,
        subject: str,
        *,
        kinds: tuple[str, ...] | None = None,
        by: str = "auto",
        resolved_ms: int | None = None,
    ) -> list[Incident]:
        """Resolve the open incidents about ``subject`` (of ``kinds``), storing the TTR."""
        done = []
        for key, inc in list(self._open.items()):
            if key[0] != subject or (kinds is not None and key[1] not in kinds):
                continue
            at = resolved_ms if resolved_ms is not None else now_ms()
            done.append(self._resolve(key, inc, by, at))
        return done

    def _resolve(self, key: tuple[str, str], inc: Incident, by: str, at_ms: int) -> Incident:
        began = inc.began_ms if inc.began_ms is not None else inc.opened_ms
        ttr = max(0, at_ms - began)
        inc = dataclasses.replace(
            inc, state="resolved", resolved_ms=at_ms, resolved_by=by, ttr_ms=ttr
        )
        del self._open[key]
        log.info("incident resolved id=%d subject=%s ttr_ms=%d by=%s", inc.id, inc.subject, ttr, by)
        self._store(
            inc,
            "incident.resolved",
            f"#{inc.id} resolved after {ttr / 1000:.1f}s ({by})",
            at_ms,
            by,
        )
        return inc

    def by_id(self, incident_id: int) -> tuple[tuple[str, str], Incident] | None:
        """The open incident with this id, with its key."""
        for key, inc in self._open.items():
            if inc.id == incident_id:
                return key, inc
        return None

    def acknowledge(self, incident_id: int, by: str) -> Incident | None:
        """An operator takes an open incident; None if it is not open."""
        found = self.by_id(incident_id)
        if found is None:
            return None
        key, inc = found
        if inc.state == "acknowledged":
            return inc
        at = now_ms()
        inc = dataclasses.replace(inc, state="acknowledged", acknowledged_ms=at, acknowledged_by=by)
        self._open[key] = inc
        self._store(inc, "incident.acknowledged", f"#{inc.id} acknowledged by {by}", at, by)
        return inc

    def resolve_by_id(self, incident_id: int, by: str) -> Incident | None:
        """An operator closes an open incident by hand; None if it is not open."""
        found = self.by_id(incident_id)
        if found is None:
            return None
        key, inc = found
        return self._resolve(key, inc, by, now_ms())
