"""Host reports: ``vigil report``, ``GET /api/v1/report`` (and through it the TUI's export).

The numbers come from :func:`storage.report.build_report` over the database alone; this package
renders them as HTML (self-contained, inline SVG charts), Markdown, JSON (described by
``schema.json`` next to this file) and CSV (one file per table). The CLI and the API call the
same functions, so a report looks the same whichever way it was asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.report.csvfiles import write_csv
from agent.report.html import render_html
from agent.report.jsondoc import json_document
from agent.report.markdown import render_markdown
from storage.db import connect
from storage.report import build_report
from storage.report_model import Report
from storage.units import EXPECTED, parse_duration

__all__ = [
    "CONTENT_TYPES",
    "DOCUMENT_FORMATS",
    "FORMATS",
    "SCHEMA_PATH",
    "generate",
    "load_schema",
    "parse_since",
    "render",
    "write_csv",
]

FORMATS = ("html", "md", "json", "csv")
DOCUMENT_FORMATS = ("html", "md", "json")
"""The formats that are one document (CSV is a directory of files)."""

CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "json": "application/json; charset=utf-8",
}

SCHEMA_PATH = Path(__file__).with_name("schema.json")
"""The JSON Schema (draft 2020-12) of the JSON report."""

DEFAULT_SINCE = "7d"


def parse_since(text: str) -> int:
    """The report window's length in milliseconds from ``7d``, ``24h``, ``90m``...

    Raises:
        ValueError: naming what was expected, for anything else (zero, negative, no unit).
    """
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(f"expected {EXPECTED}, got {text!r}") from None
    if seconds <= 0 or text.strip().startswith("-"):
        raise ValueError(f"expected a positive duration such as '7d' or '24h', got {text!r}")
    return int(seconds * 1000)


def generate(
    db_path: Path,
    *,
    since_ms: int,
    until_ms: int,
    host: str | None = None,
    models: Sequence[str] | None = None,
) -> Report:
    """Compute a report from a database file on a read-only connection."""
    conn = connect(db_path, readonly=True)
    try:
        return build_report(conn, since_ms=since_ms, until_ms=until_ms, host=host, models=models)
    finally:
        conn.close()


def render(report: Report, fmt: str) -> str:
    """One document: ``html``, ``md`` or ``json``.

    Raises:
        ValueError: for another format (CSV is written with :func:`write_csv`).
    """
    if fmt == "html":
        return render_html(report)
    if fmt == "md":
        return render_markdown(report)
    if fmt == "json":
        return json_document(report.to_json())
    raise ValueError(f"format: expected one of {', '.join(DOCUMENT_FORMATS)}, got {fmt!r}")


def load_schema() -> dict[str, Any]:
    """The JSON report's schema."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema
