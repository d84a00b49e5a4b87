"""``vigil report --fleet FILE``: every member's host report and serving environment, fetched
through its API and aggregated per group and for the fleet (agent/report/fleet.py).

Each member is asked, side by side, for ``GET /api/v1/status`` (its labels),
``GET /api/v1/report?format=json&since=...`` and ``GET /api/v1/environment``; nothing reads a
remote database. A member that does not answer is listed as unreachable with the reason.
``ssh://`` members are refused (their transport is the TUI's asynchronous ssh forward): give
such a host's ``http(s)://`` address, through a tunnel of your own if need be.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agent.cli.api_client import AgentUnreachable, ApiClient
from agent.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from storage.labels import Labels, merge_labels, name_problem, read_labels

if TYPE_CHECKING:
    from agent.report.fleet import Member

REPORT_TIMEOUT_S = 60.0
"""A host report is built from the agent's database on request: more than a poll's budget."""
MAX_PARALLEL = 16

SSH_REFUSED = (
    "ssh:// members are not supported by `vigil report --fleet` (the ssh transport is the "
    "TUI's); give this agent's http(s):// address, e.g. through `ssh -L` to its port"
)


def fleet_report_command(args: argparse.Namespace, fmt: str, span_ms: int) -> int:
    """Write the fleet report; 1 when a host did not answer or its audit chain is broken."""
    from agent.report.fleet import build_fleet_report
    from agent.report.fleetrender import render_fleet, write_fleet_csv

    # tui.fleet reads the fleet file (the same rules and errors as `vigil tui --fleet`); it is
    # Textual-free, and imported here only, inside the command (pyproject's ignore_imports).
    from tui.fleet import FleetError, load_fleet

    group_by: str | None = args.group_by
    if group_by is not None and (problem := name_problem(group_by)):
        print(f"vigil: --group-by: {problem}", file=sys.stderr)
        return EXIT_USAGE
    fleet_path: Path = args.fleet
    try:
        entries = load_fleet(fleet_path)
    except FleetError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE
    now = time.time_ns() // 1_000_000
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(entries))) as pool:
        members = list(pool.map(lambda e: fetch_member(e, args.since), entries))
    report = build_fleet_report(
        members,
        fleet=fleet_path.name,
        since_ms=now - span_ms,
        until_ms=now,
        generated_ms=time.time_ns() // 1_000_000,
        group_by=group_by,
    )
    try:
        if fmt == "csv":
            files = write_fleet_csv(report, args.output)
            print(f"wrote {len(files)} CSV files to {args.output}", file=sys.stderr)
        elif args.output is not None:
            args.output.write_text(render_fleet(report, fmt), encoding="utf-8")
            print(f"wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(render_fleet(report, fmt))
    except OSError as exc:
        print(f"vigil: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    cov = report.coverage
    print(f"coverage: {cov['answered']} of {cov['hosts']} hosts answered", file=sys.stderr)
    failed = False
    for host in report.hosts:
        if not host.reachable:
            print(f"vigil: {host.name}: unreachable: {host.error}", file=sys.stderr)
            failed = True
        elif host.kpis.audit_broken:
            print(f"vigil: {host.name}: audit chain BROKEN", file=sys.stderr)
            failed = True
    return EXIT_FAILURE if failed else EXIT_OK


def fetch_member(entry: Any, since: str) -> Member:
    """One member's labels, report and environment (a :class:`tui.fleet.FleetEntry`)."""
    from agent.report.fleet import Member

    given: Labels = tuple(getattr(entry, "labels", ()) or ())
    if entry.is_ssh:
        return Member(entry.name, entry.url, merge_labels({}, given), error=SSH_REFUSED)
    client = ApiClient(entry.url, entry.token or "", entry.timeout_s, ssl_context=entry.ssl_context)
    try:
        status = client.get("/api/v1/status")
        labels = merge_labels(read_labels(_mapping(status).get("labels")), given)
        client.timeout_s = max(entry.timeout_s, REPORT_TIMEOUT_S)
        report = client.get(f"/api/v1/report?format=json&since={quote(since)}")
    except AgentUnreachable as exc:
        return Member(entry.name, entry.url, merge_labels({}, given), error=str(exc))
    if not isinstance(report, Mapping):
        return Member(entry.name, entry.url, labels, error="the report is not a JSON object")
    client.timeout_s = entry.timeout_s
    try:
        env = _mapping(client.get("/api/v1/environment"))
    except AgentUnreachable as exc:
        return Member(entry.name, entry.url, labels, report, environment_error=str(exc))
    sections = {
        str(section): {str(k): v for k, v in items.items() if isinstance(v, str)}
        for section, items in _mapping(env.get("sections")).items()
        if isinstance(items, Mapping)
    }
    if not sections:
        return Member(
            entry.name, entry.url, labels, report, environment_error="no fingerprint recorded yet"
        )
    env_hash = env.get("hash")
    return Member(
        entry.name,
        entry.url,
        labels,
        report,
        environment=sections,
        environment_hash=env_hash if isinstance(env_hash, str) else None,
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
