"""A report table's shape: its columns and rows, as :mod:`agent.report.tables` builds them and
HTML, Markdown and CSV render them (apart, so that a section's tables can live in a module of
their own, :mod:`agent.report.deploytables`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: raw key (the CSV header), human header, and how to show its values."""

    key: str
    header: str
    kind: str = "text"
    """``text``, ``int``, ``num``, ``ms`` (a duration), ``ts`` (a time), ``frac`` (0-1 shown as
    %), ``sha`` (shortened), ``signed_pct`` (a change) or ``unit`` (per the row's ``unit``)."""


@dataclass(frozen=True, slots=True)
class Table:
    """A named table; ``detail`` tables (long series) go to CSV only."""

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    empty: str
    """What a table without rows says instead; each table says its own, so a reader never
    meets the same placeholder twice in one report."""
    detail: bool = False
