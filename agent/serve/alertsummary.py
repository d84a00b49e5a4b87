"""How many alerts a host has, and how many of them page someone: the ``alert_counts`` of
``GET /api/v1/status``.

The fleet view polls every agent's status each second (1,000 hosts is the target), so a
host's alert counts travel in that answer instead of a second request per poll. They are
counted from the alerting job's alerts as of its last evaluation (memory only: no database
read on the status route) and the silences and maintenance windows in force now.

The groups are disjoint, so an operator can tell at a glance which hosts are paging:

- ``firing``: firing alerts that notify, muted by neither a silence nor a maintenance window;
- ``critical``: those of ``firing`` whose severity is ``critical`` (a subset, not a group);
- ``silenced``: firing alerts muted by a silence (somebody already knows);
- ``maintenance``: firing alerts muted by a maintenance window covering their subject (and
  no silence);
- ``pending``: alerts whose condition holds but not yet for the rule's ``for``.

``firing + silenced + maintenance`` is how many alerts ``GET /api/v1/alerts?state=firing``
lists. A silence and a window are matched as that route matches them (the silence's label
matchers; the window's subject patterns on the alert's own subject), so the counts agree with
the list an operator opens next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from probes.base import now_ms
from storage.alerts import AlertRow

if TYPE_CHECKING:
    from agent.serve.view import AlertingView

__all__ = ["AlertCounts", "alert_counts", "count_alerts"]


class Silencing(Protocol):
    """The silences in force (:class:`agent.alerting.silences.SilenceBook`)."""

    def silencing(self, labels: Mapping[str, str], now_ms: int) -> object | None:
        """The silence muting an alert with these labels now, if any."""
        ...


class Maintaining(Protocol):
    """The maintenance windows (:class:`agent.alerting.maintenance.MaintenanceCalendar`)."""

    def in_maintenance(self, subject: str, now_ms: int) -> object | None:
        """The window covering ``subject`` now, if any."""
        ...


@dataclass(frozen=True, slots=True)
class AlertCounts:
    """A host's alerts by group (see the module docstring); every count >= 0."""

    firing: int = 0
    critical: int = 0
    silenced: int = 0
    maintenance: int = 0
    pending: int = 0

    def to_json(self) -> dict[str, int]:
        """``{"firing": 2, "critical": 1, "silenced": 1, "maintenance": 0, "pending": 0}``."""
        return asdict(self)


def count_alerts(
    alerts: Iterable[AlertRow], silences: Silencing, maintenance: Maintaining, now_ms: int
) -> AlertCounts:
    """Count pending and firing alerts into the groups of :class:`AlertCounts`.

    Args:
        alerts: The pending and firing alerts (others, such as resolved ones, are ignored).
        silences: The silences; a firing alert a silence matches at ``now_ms`` is ``silenced``.
        maintenance: The windows; a firing alert whose subject one covers at ``now_ms`` (and
            no silence matches) is ``maintenance``.
        now_ms: The time the silences and windows are judged at (epoch ms).

    Returns:
        The counts.
    """
    firing = critical = silenced = in_window = pending = 0
    for row in alerts:
        if row.state == "pending":
            pending += 1
        elif row.state != "firing":
            continue
        elif silences.silencing(dict(row.labels), now_ms) is not None:
            silenced += 1
        elif maintenance.in_maintenance(row.subject, now_ms) is not None:
            in_window += 1
        else:
            firing += 1
            if row.severity == "critical":
                critical += 1
    return AlertCounts(firing, critical, silenced, in_window, pending)


def alert_counts(alerting: AlertingView, at_ms: int | None = None) -> dict[str, int]:
    """The running agent's :class:`AlertCounts` now (or at ``at_ms``), as JSON; read on the
    event loop, where the alerting job changes them."""
    at = now_ms() if at_ms is None else at_ms
    return count_alerts(alerting.alerts(), alerting.silences, alerting.calendar, at).to_json()
