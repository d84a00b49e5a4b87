"""The CSV report: one file per table (``summary.csv``, ``models.csv``, ...) in a directory.

Values are raw (epoch ms, fractions, bytes) under column names that carry their units. A text
cell starting with ``=``, ``+``, ``-``, ``@`` or a tab would be run as a formula by
spreadsheets; it is prefixed with ``'`` (text from models and events is data). Control
characters (ESC, BEL, DEL, C1; not tab and newline) are replaced by ``?``, as in every format.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from agent.report.tables import Table, tables
from storage.report_model import Report
from storage.text import printable

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        value = printable(value, keep_newlines=True)
        return "'" + value if value.startswith(_FORMULA) else value
    return value


def table_csv(table: Table) -> str:
    """One table as CSV text (header row of column keys, then the rows)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.key for c in table.columns])
    for row in table.rows:
        writer.writerow([_cell(row.get(c.key)) for c in table.columns])
    return buf.getvalue()


def write_csv(report: Report, out_dir: Path) -> list[Path]:
    """Write every table into ``out_dir`` (created if needed); return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables(report):
        path = out_dir / f"{table.name}.csv"
        path.write_text(table_csv(table), encoding="utf-8")
        written.append(path)
    return written
