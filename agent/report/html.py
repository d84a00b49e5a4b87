"""The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched).

A Content-Security-Policy forbids scripts and every external load, so the file reads the same
offline, and a model name such as ``<script>`` is shown as text: every string is escaped.
"""

from __future__ import annotations

from html import escape

from agent import __version__
from agent.report.deploytables import DEPLOY_NOTE
from agent.report.svg import (
    Line,
    Styles,
    bar_chart,
    bytes_axis,
    line_chart,
    ms_axis,
    percent_axis,
)
from agent.report.tables import (
    METRICS,
    TREND_NOTE,
    Table,
    format_ms,
    format_ts,
    human,
    resource_label,
    summary_items,
    tables,
)
from storage.report_model import Report, ResourceRow
from storage.text import printable

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1b1f24; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h3 { font-size: 1em; margin: 1.2em 0 .3em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
.sub { color: #57606a; margin-top: 0; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: .3em 1.5em; }
dl.summary dt { font-weight: 600; }
dl.summary dd { margin: 0; }
.ok { color: #1a7f37; font-weight: 600; }
.bad { color: #cf222e; font-weight: 600; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.wrap { max-width: 28em; overflow-wrap: anywhere; }
.empty, .note { color: #57606a; font-style: italic; }
svg.chart { display: block; margin: .8em 0; max-width: 100%; height: auto; }
svg .ct { font-size: 13px; font-weight: 600; fill: #1b1f24; }
svg .ax { font-size: 11px; fill: #57606a; }
svg .grid { stroke: #eaeef2; stroke-width: 1; }
svg .tick { stroke: #8c959f; stroke-width: 1; }
svg .frame { fill: none; stroke: #d0d7de; }
svg .track { fill: #eaeef2; }
footer { margin-top: 3em; color: #57606a; font-size: 12px; }
@media print { h2 { break-after: avoid; } svg.chart, table { break-inside: avoid; } }
"""

NUMERIC = frozenset({"int", "num", "ms", "ts", "frac", "signed_pct", "unit", "pct", "bytes"})
WRAPPED = frozenset({"cause", "last_detail", "message", "outcomes", "failure", "error"})


def render_table(table: Table) -> str:
    """One table, every cell escaped; the table's empty text when it has no rows."""
    if not table.rows:
        return f'<p class="empty">{escape(table.empty)}</p>'
    head = "".join(f"<th>{escape(c.header)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for c in table.columns:
            cls = " class=n" if c.kind in NUMERIC else " class=wrap" if c.key in WRAPPED else ""
            text = human(row.get(c.key), c.kind, row)
            title = (
                f' title="{escape(str(row.get(c.key)))}"'
                if c.kind == "sha" and row.get(c.key)
                else ""
            )
            cells.append(f"<td{cls}{title}>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _resource_lines(
    rows: list[ResourceRow], styles: Styles, *, label_key: str | None = None
) -> list[Line]:
    out: list[Line] = []
    for r in rows:
        if label_key and label_key in r.labels:
            label = f"{label_key} {r.labels[label_key]}"
            key = f"{label_key}:{r.labels[label_key]}"
        else:
            label = key = resource_label(r.name, r.labels)
        out.append(Line(label, [(p.ts_ms, p.avg) for p in r.points], key, styles(key)))
    return out


def _charts(report: Report) -> dict[str, list[str]]:
    """The charts of each section; a section without data has none (its table says so)."""
    w = report.window
    out: dict[str, list[str]] = {"availability": [], "latency": [], "resources": []}
    styles = Styles()
    for m in report.models:  # models first: a model's colour never depends on what else ran
        styles(f"model:{m.name}")
    if report.models:
        out["availability"].append(
            bar_chart(
                "Availability per model",
                [
                    (m.name, m.availability, f"model:{m.name}", styles(f"model:{m.name}"))
                    for m in report.models
                ],
            )
        )
    for key, label in METRICS:
        lines = [
            Line(
                m.name,
                [(p.ts_ms, p.p95) for p in m.trend[key].points],
                f"model:{m.name}",
                styles(f"model:{m.name}"),
            )
            for m in report.models
            if m.trend[key].points
        ]
        if lines:
            out["latency"].append(
                line_chart(
                    f"{label} latency p95 per {format_ms(w.bucket_ms)}",
                    lines,
                    w.since_ms,
                    w.until_ms,
                    ms_axis,
                )
            )
    res = report.resources

    def named(name: str) -> list[ResourceRow]:
        return [r for r in res if r.name == name]

    host = [
        Line(label, [(p.ts_ms, p.avg) for p in r.points], f"host:{name}", styles(f"host:{name}"))
        for name, label in (("host.cpu.percent", "CPU"), ("host.mem.percent", "memory"))
        for r in named(name)
    ]
    if host:
        out["resources"].append(
            line_chart(
                "Host CPU and memory (%)", host, w.since_ms, w.until_ms, percent_axis, y_max=100
            )
        )
    if gpu := named("gpu.util.percent"):
        out["resources"].append(
            line_chart(
                "GPU utilization (%)",
                _resource_lines(gpu, styles, label_key="gpu"),
                w.since_ms,
                w.until_ms,
                percent_axis,
                y_max=100,
            )
        )
    if gpu_mem := named("gpu.mem.used_bytes"):
        out["resources"].append(
            line_chart(
                "GPU memory used",
                _resource_lines(gpu_mem, styles, label_key="gpu"),
                w.since_ms,
                w.until_ms,
                bytes_axis,
                y_max=max((r.capacity or 0.0) for r in gpu_mem) or None,
            )
        )
    if procs := named("process.cpu.percent"):
        out["resources"].append(
            line_chart(
                "Process CPU (%)",
                _resource_lines(procs, styles, label_key="process"),
                w.since_ms,
                w.until_ms,
                percent_axis,
            )
        )
    return out


def render_html(report: Report) -> str:
    """The whole report as one HTML document."""
    by_name = {t.name: t for t in tables(report)}
    charts = _charts(report)
    host = report.host or "(host not recorded)"
    audit = report.audit
    items = []
    for label, value in summary_items(report):
        cls = ""
        if label == "Audit chain":
            cls = ' class="ok"' if audit.ok else ' class="bad"'
        items.append(f"<dt>{escape(label)}</dt><dd{cls}>{escape(value)}</dd>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)

    def section(title: str, *parts: str) -> str:
        return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"

    def subsection(table: Table) -> str:
        return f"<h3>{escape(table.title)}</h3>{render_table(table)}"

    audit_text = (
        f"The audit chain holds {audit.checked} events and every link verifies."
        if audit.ok
        else f"The audit chain is BROKEN at event {audit.broken_seq}: {audit.reason}. "
        f"{audit.checked} events verified before it."
    )
    body = [
        f"<h1>Vigil host report: {escape(host)}</h1>",
        f'<p class="sub">{escape(format_ts(report.window.since_ms))} to '
        f"{escape(format_ts(report.window.until_ms))}, generated "
        f"{escape(format_ts(report.generated_ms))}</p>",
        f'<dl class="summary">{"".join(items)}</dl>',
        f'<ul class="note">{notes}</ul>' if notes else "",
        section(
            "Availability",
            *charts["availability"],
            render_table(by_name["models"]),
            '<p class="note">Availability is ok probe runs / all probe runs in the window.</p>',
        ),
        section(
            "Probe latency",
            *charts["latency"],
            render_table(by_name["latency"]),
            f'<p class="note">{escape(TREND_NOTE)}</p>',
        ),
        section("Incidents", render_table(by_name["incidents"])),
        section(
            "Restarts",
            subsection(by_name["restarts"]),
            subsection(by_name["process_events"]),
        ),
        section(
            "Deployments",
            subsection(by_name["deploy_kpis"]),
            f'<p class="note">{escape(DEPLOY_NOTE)}</p>',
            subsection(by_name["deploys"]),
        ),
        section("Artifact changes seen by probes", render_table(by_name["deployments"])),
        section("Drift detections", render_table(by_name["drift"])),
        section(
            "Alerting",
            subsection(by_name["alerts"]),
            subsection(by_name["noisiest_rules"]),
            subsection(by_name["pages"]),
            subsection(by_name["first_notifications"]),
            subsection(by_name["silences"]),
            subsection(by_name["maintenance"]),
            '<p class="note">Time to notify runs from when an unplanned incident\'s fault began '
            "to the delivery of the first notification about its subject created after that. "
            "MTTD and MTTR leave out incidents opened inside maintenance windows.</p>",
        ),
        section("Resource utilization", *charts["resources"], render_table(by_name["resources"])),
        section("Automated monitoring", render_table(by_name["monitoring"])),
        section(
            "Audit chain", f'<p class="{"ok" if audit.ok else "bad"}">{escape(audit_text)}</p>'
        ),
        f"<footer>Generated by Vigil {escape(__version__)} from the agent's local database. "
        f"Report schema version {report.schema_version}.</footer>",
    ]
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Vigil report: {escape(host)}</title>"
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    # Control characters (ESC, BEL, C1) in a server's error text or a host name would reach
    # whoever cats or greps the file: replaced as Markdown and ``vigil status`` replace them.
    return printable(page, keep_newlines=True)
