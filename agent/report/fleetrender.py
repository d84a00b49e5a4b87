"""The fleet report in the host report's four formats: HTML (inline SVG bars), Markdown, JSON
and CSV (one file per table), through the host report's table renderers, so every cell is
escaped as there: HTML-escaped, Markdown-escaped, CSV cells that a spreadsheet would run as a
formula prefixed with ``'``, control characters replaced everywhere. Host names, labels and
environment values are agents' and the fleet file's text: data, never markup.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from agent import __version__
from agent.report.csvfiles import table_csv
from agent.report.fleet import FleetReport, Kpis
from agent.report.html import CSP, CSS
from agent.report.html import render_table as html_table
from agent.report.jsondoc import json_document
from agent.report.markdown import md_escape
from agent.report.markdown import render_table as md_table
from agent.report.svg import Styles, bar_chart
from agent.report.table import Column, Row, Table
from agent.report.tables import format_frac, format_ms, format_ts, labels_text
from storage.text import printable
from storage.units import format_duration

__all__ = ["fleet_tables", "render_fleet", "write_fleet_csv"]


_KPI_COLUMNS = (
    Column("availability", "Availability", "frac"),
    Column("runs", "Runs", "int"),
    Column("outage_ms", "Outage", "ms"),
    Column("planned_downtime_ms", "Planned downtime", "ms"),
    Column("incidents", "Incidents (unplanned)", "int"),
    Column("incidents_open", "Open", "int"),
    Column("mttr_ms", "MTTR", "ms"),
    Column("changes", "Changes", "int"),
    Column("failed_changes", "Failed changes", "int"),
    Column("change_failure_rate", "Change-failure rate", "frac"),
    Column("deploys_per_day", "Deploys/day", "num"),
    Column("artifact_changes", "Artifact changes", "int"),
    Column("drift_detections", "Drift detections", "int"),
    Column("env_differences", "Environment differences", "int"),
)

FLEET_NOTE = (
    "Figures are pooled across hosts, not averaged: availability is all ok probe runs / all "
    "probe runs; MTTR is the mean over every unplanned incident resolved in the window; "
    "change-failure rate is failed changes / finished changes, summed (docs/kpi.md)."
)


def _kpi_cells(k: Kpis) -> dict[str, object]:
    return {c.key: getattr(k, c.key) for c in _KPI_COLUMNS}


def fleet_tables(report: FleetReport) -> list[Table]:
    """The report's tables: summary, groups, hosts, environment differences."""
    k = report.fleet_kpis
    cov = report.coverage
    summary_rows: list[Row] = [
        {"key": "fleet", "value": report.fleet},
        {"key": "since_ms", "value": report.since_ms},
        {"key": "until_ms", "value": report.until_ms},
        {"key": "generated_ms", "value": report.generated_ms},
        {"key": "group_by", "value": report.group_by or ""},
        {"key": "hosts", "value": cov["hosts"]},
        {"key": "hosts_answered", "value": cov["answered"]},
        *({"key": key, "value": value} for key, value in _kpi_cells(k).items()),
        {"key": "resolved_incidents", "value": k.resolved},
        {"key": "audit_broken_hosts", "value": k.audit_broken},
    ]
    groups = tuple(
        {
            "group": g.group,
            "hosts": len(g.hosts),
            "answered": g.kpis.answered,
            "unreachable": " ".join(g.unreachable),
            **_kpi_cells(g.kpis),
        }
        for g in report.groups
    )
    hosts = tuple(
        {
            "host": h.name,
            "group": h.group,
            "state": "ok" if h.reachable else "unreachable",
            "error": h.error or "",
            "labels": labels_text(h.labels),
            "reported_host": h.reported_host or "",
            "environment_hash": h.environment_hash or "",
            "url": h.url,
            # An unreachable host has no figures (not zeros): blank in CSV, "-" elsewhere.
            **(_kpi_cells(h.kpis) if h.reachable else dict.fromkeys(c.key for c in _KPI_COLUMNS)),
        }
        for h in report.hosts
    )
    env = tuple(
        {
            "group": d.group,
            "host": d.host,
            "section": d.section,
            "item": d.item,
            "value": "(absent)" if d.value is None else d.value,
            "majority": "(tied: no majority)"
            if d.tied
            else "(absent)"
            if d.majority is None
            else d.majority,
        }
        for d in report.env_differences
    )
    head = (Column("group", "Group"), Column("hosts", "Hosts", "int"))
    return [
        Table(
            "summary",
            "Summary",
            (Column("key", "Figure"), Column("value", "Value")),
            tuple(summary_rows),
            "no figures",
            detail=True,
        ),
        Table(
            "groups",
            "Groups",
            (
                *head,
                Column("answered", "Answered", "int"),
                Column("unreachable", "Unreachable"),
                *_KPI_COLUMNS,
            ),
            groups,
            "no groups",
        ),
        Table(
            "hosts",
            "Hosts",
            (
                Column("host", "Host"),
                Column("group", "Group"),
                Column("state", "State"),
                Column("error", "Why unreachable"),
                Column("labels", "Labels"),
                Column("reported_host", "Agent's host name"),
                Column("environment_hash", "Environment"),
                Column("url", "URL"),
                *_KPI_COLUMNS,
            ),
            hosts,
            "no hosts in the fleet file",
        ),
        Table(
            "environment",
            "Environment differences (host value vs the group's majority)",
            (
                Column("group", "Group"),
                Column("host", "Host"),
                Column("section", "Section"),
                Column("item", "Item"),
                Column("value", "Host's value"),
                Column("majority", "Group's majority"),
            ),
            env,
            "every group's hosts serve from the same environment (of those that answered)",
        ),
    ]


def _headline(report: FleetReport) -> list[tuple[str, str]]:
    k, cov = report.fleet_kpis, report.coverage
    unreachable = [h.name for h in report.hosts if not h.reachable]
    span = (report.until_ms - report.since_ms) / 1000
    return [
        ("Fleet file", report.fleet),
        (
            "Window",
            f"{format_ts(report.since_ms)} to {format_ts(report.until_ms)} "
            f"({format_duration(span)})",
        ),
        (
            "Coverage",
            f"{cov['answered']} of {cov['hosts']} hosts answered"
            + (f"; unreachable: {', '.join(unreachable)}" if unreachable else ""),
        ),
        ("Grouped by", f"label {report.group_by}" if report.group_by else "(one group)"),
        ("Availability (all models, all hosts)", format_frac(k.availability)),
        (
            "Incidents",
            f"{k.incidents} unplanned ({k.incidents_open} open); MTTR {format_ms(k.mttr_ms)} "
            f"over {k.resolved} resolved",
        ),
        (
            "Deploys",
            f"{k.changes} changes finished ({k.promoted} promoted, {k.deploys_per_day:.2f}/day); "
            f"change-failure rate {format_frac(k.change_failure_rate)}",
        ),
        (
            "Drift",
            f"{k.drift_detections} drift detections; {k.env_differences} environment "
            "differences from a group's majority",
        ),
        (
            "Audit chains",
            "every answering host's verifies"
            if not k.audit_broken
            else f"BROKEN on {k.audit_broken} host(s)",
        ),
    ]


def render_markdown(report: FleetReport) -> str:
    """The fleet report as Markdown."""
    out = [f"# Vigil fleet report: {md_escape(report.fleet)}", ""]
    out.append(f"Generated {md_escape(format_ts(report.generated_ms))}.")
    out.append("")
    out += [f"- **{md_escape(k)}**: {md_escape(v)}" for k, v in _headline(report)]
    if report.notes:
        out += ["", "Notes:", ""] + [f"- {md_escape(n)}" for n in report.notes]
    for table in fleet_tables(report):
        if table.detail:
            continue
        out += ["", f"## {md_escape(table.title)}", "", md_table(table).rstrip("\n")]
    out += ["", f"_{md_escape(FLEET_NOTE)}_", ""]
    return printable("\n".join(out), keep_newlines=True)


def render_html(report: FleetReport) -> str:
    """The fleet report as one self-contained HTML document (no script, nothing fetched)."""
    styles = Styles()
    by_name = {t.name: t for t in fleet_tables(report)}
    items = "".join(
        f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>" for label, value in _headline(report)
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    group_bars = bar_chart(
        "Availability per group",
        [
            (g.group, g.kpis.availability, f"group:{g.group}", styles(f"group:{g.group}"))
            for g in report.groups
        ],
    )
    host_bars = bar_chart(
        "Availability per host",
        [
            (
                h.name if h.reachable else f"{h.name} (unreachable)",
                h.kpis.availability,
                f"host:{h.name}",
                styles(f"group:{h.group}"),
            )
            for h in report.hosts
        ],
    )

    def section(title: str, *parts: str) -> str:
        return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"

    body = [
        f"<h1>Vigil fleet report: {escape(report.fleet)}</h1>",
        f'<p class="sub">generated {escape(format_ts(report.generated_ms))}</p>',
        f'<dl class="summary">{items}</dl>',
        f'<ul class="note">{notes}</ul>' if notes else "",
        section("Groups", group_bars, html_table(by_name["groups"])),
        section("Hosts", host_bars, html_table(by_name["hosts"])),
        section(
            by_name["environment"].title,
            html_table(by_name["environment"]),
            '<p class="note">Per group, each item\'s majority is the value most hosts hold; '
            "with a tie there is none and every host of the item is listed.</p>",
        ),
        f'<p class="note">{escape(FLEET_NOTE)}</p>',
        f"<footer>Generated by Vigil {escape(__version__)} from each agent's "
        f"/api/v1/report and /api/v1/environment. Fleet report schema version "
        f"{report.schema_version}.</footer>",
    ]
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Vigil fleet report: {escape(report.fleet)}</title>"
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    return printable(page, keep_newlines=True)


def render_fleet(report: FleetReport, fmt: str) -> str:
    """One document: ``html``, ``md`` or ``json``.

    Raises:
        ValueError: for another format (CSV is written with :func:`write_fleet_csv`).
    """
    if fmt == "html":
        return render_html(report)
    if fmt == "md":
        return render_markdown(report)
    if fmt == "json":
        return json_document(report.to_json())
    raise ValueError(f"format: expected one of html, md, json, got {fmt!r}")


def write_fleet_csv(report: FleetReport, out_dir: Path) -> list[Path]:
    """Every table as ``<name>.csv`` in ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in fleet_tables(report):
        path = out_dir / f"{table.name}.csv"
        path.write_text(table_csv(table), encoding="utf-8")
        written.append(path)
    return written
