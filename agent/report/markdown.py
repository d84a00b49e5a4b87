"""The Markdown report: headline numbers, then each table (GitHub-flavoured tables).

Every string is escaped, so a model name holding ``|``, ``*`` or ``<img>`` stays plain text.
"""

from __future__ import annotations

import re

from agent.report.deploytables import DEPLOY_NOTE
from agent.report.tables import TREND_NOTE, Table, format_ts, human, summary_items, tables
from storage.report_model import Report
from storage.text import printable

_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def md_escape(text: object) -> str:
    """``text`` as literal Markdown: punctuation that means something is backslash-escaped,
    control characters and newlines are replaced."""
    return _SPECIAL.sub(r"\\\1", printable(text))


def render_table(table: Table) -> str:
    """A GitHub-flavoured table, or the table's empty text in italics."""
    if not table.rows:
        return f"_{md_escape(table.empty)}_\n"
    lines = [
        "| " + " | ".join(md_escape(c.header) for c in table.columns) + " |",
        "|"
        + "|".join("---:" if c.kind not in ("text", "sha") else "---" for c in table.columns)
        + "|",
    ]
    for row in table.rows:
        cells = (md_escape(human(row.get(c.key), c.kind, row)) for c in table.columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """The whole report as Markdown."""
    host = report.host or "(host not recorded)"
    out = [f"# Vigil host report: {md_escape(host)}", ""]
    out.append(f"Generated {md_escape(format_ts(report.generated_ms))}.")
    out.append("")
    out += [f"- **{md_escape(k)}**: {md_escape(v)}" for k, v in summary_items(report)]
    if report.notes:
        out += ["", "Notes:", ""] + [f"- {md_escape(n)}" for n in report.notes]
    for table in tables(report):
        if table.detail:
            continue
        out += ["", f"## {md_escape(table.title)}", "", render_table(table).rstrip("\n")]
        if table.name == "latency":
            out += ["", f"_{md_escape(TREND_NOTE)}_"]
        if table.name == "deploy_kpis":
            out += ["", f"_{md_escape(DEPLOY_NOTE)}_"]
    out += [
        "",
        f"_Availability is ok probe runs / all probe runs; latency covers answered runs. "
        f"Report schema version {report.schema_version}._",
        "",
    ]
    # Every piece above went through md_escape; this pass makes sure of it.
    return printable("\n".join(out), keep_newlines=True)
