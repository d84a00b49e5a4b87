"""The incidents table, shared by the incidents view and the model view's incidents tab."""

from __future__ import annotations

from tui.widgets.tables import KeyedTable


class IncidentsTable(KeyedTable):
    """Incidents, newest first."""

    COLUMNS = (
        ("id", "id"),
        ("state", "state"),
        ("severity", "sev"),
        ("subject", "subject"),
        ("opened", "age"),
        ("cause", "cause"),
        ("by", "by"),
        ("kind", "kind"),
    )
