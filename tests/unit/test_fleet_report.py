"""The fleet report's aggregation on injected truth: fake host report JSON with known numbers
in, the pooled fleet and group figures out (docs/kpi.md "Fleet figures"), the environment
differences against each group's majority, and every format escaping agents' text."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.report.fleet import Member, build_fleet_report
from agent.report.fleetrender import fleet_tables, render_fleet, write_fleet_csv

DAY = 86_400_000
UNTIL = 1_800_000_000_000
SINCE = UNTIL - 2 * DAY


def _report(
    models: list[tuple[int, int, int]],
    ttrs: Sequence[int | None] = (),
    *,
    maintenance_ttrs: Sequence[int] = (),
    changes: int = 0,
    failed: int = 0,
    promoted: int = 0,
    artifact_changes: int = 0,
    drift: int = 0,
    audit_ok: bool = True,
) -> dict[str, Any]:
    """A host report's JSON with only the fields the fleet report reads."""
    rows: list[dict[str, Any]] = [
        {"ttr_ms": t, "resolved_ms": None if t is None else 1, "maintenance": None} for t in ttrs
    ]
    rows += [{"ttr_ms": t, "resolved_ms": 1, "maintenance": "upgrade"} for t in maintenance_ttrs]
    return {
        "host": "agent-host",
        "models": [
            {"name": f"m{i}", "runs": r, "ok_runs": ok, "outage_ms": out, "planned_downtime_ms": 5}
            for i, (r, ok, out) in enumerate(models)
        ],
        "incidents": {"rows": rows},
        "deploys": {
            "host": {
                "changes": changes,
                "failed_changes": failed,
                "promoted": promoted,
                "rollbacks": 0,
            }
        },
        "deployments": {"count": artifact_changes},
        "drift": {"count": drift},
        "audit": {"ok": audit_ok},
    }


ENV_A = {"host": {"kernel": "6.1", "driver": "550"}, "process:srv": {"pkg:torch": "2.4.0"}}
ENV_C = {"host": {"kernel": "6.1", "driver": "550"}, "process:srv": {"pkg:torch": "2.5.0"}}


def _members() -> list[Member]:
    return [
        Member(
            "a",
            "http://a:8470",
            {"region": "eu"},
            _report(
                [(100, 90, 1_000), (50, 50, 0)],
                [1_000, 3_000, None],
                maintenance_ttrs=[99_999],
                changes=4,
                failed=1,
                promoted=3,
                artifact_changes=2,
                drift=1,
            ),
            environment=ENV_A,
        ),
        Member(
            "b",
            "http://b:8470",
            {"region": "eu"},
            _report([(50, 10, 4_000)], [8_000], changes=1, failed=1),
            environment=ENV_A,
        ),
        Member(
            "c",
            "http://c:8470",
            {"region": "eu"},
            _report([], audit_ok=False),
            environment=ENV_C,
        ),
        Member("d", "http://d:8470", {"region": "us"}, error="connection refused"),
        Member("e", "http://e:8470", {}, _report([(10, 10, 0)]), environment=ENV_A),
    ]


def test_fleet_figures_are_pooled_across_hosts_not_averaged() -> None:
    report = build_fleet_report(
        _members(), fleet="fleet.toml", since_ms=SINCE, until_ms=UNTIL, generated_ms=UNTIL
    )
    k = report.fleet_kpis
    assert report.coverage == {"answered": 4, "hosts": 5}
    assert (k.hosts, k.answered, k.models) == (5, 4, 4)
    # (90 + 50 + 10 + 10) / (100 + 50 + 50 + 10); the mean of host availabilities would differ.
    assert (k.runs, k.ok_runs) == (210, 160)
    assert k.availability == pytest.approx(160 / 210)
    assert k.outage_ms == 5_000
    assert k.planned_downtime_ms == 5 * 4
    # Unplanned incidents only; MTTR is the mean of 1 s, 3 s and 8 s (4 s), not the mean of the
    # hosts' MTTRs (2 s and 8 s: 5 s); the incident in maintenance counts nowhere.
    assert (k.incidents, k.incidents_open, k.resolved) == (4, 1, 3)
    assert k.mttr_ms == pytest.approx(4_000)
    # Failed / finished changes summed: 2 / 5, not the mean of 1/4 and 1/1.
    assert (k.changes, k.failed_changes) == (5, 2)
    assert k.change_failure_rate == pytest.approx(0.4)
    assert k.deploys_per_day == pytest.approx(3 / 2)
    assert (k.artifact_changes, k.drift_detections, k.audit_broken) == (2, 1, 1)
    # One group: c's torch differs from the majority of a, b and e.
    assert k.env_differences == 1
    (diff,) = report.env_differences
    assert (diff.host, diff.section, diff.item, diff.value, diff.majority, diff.tied) == (
        "c",
        "process:srv",
        "pkg:torch",
        "2.5.0",
        "2.4.0",
        False,
    )
    hosts = {h.name: h for h in report.hosts}
    assert [h.name for h in report.hosts] == ["a", "b", "c", "d", "e"]
    assert not hosts["d"].reachable and hosts["d"].error == "connection refused"
    assert hosts["a"].kpis.mttr_ms == pytest.approx(2_000)
    assert hosts["b"].kpis.change_failure_rate == 1.0
    assert hosts["c"].kpis.availability is None


def test_groups_by_a_label_with_a_group_for_hosts_without_it() -> None:
    report = build_fleet_report(
        _members(),
        fleet="fleet.toml",
        since_ms=SINCE,
        until_ms=UNTIL,
        generated_ms=UNTIL,
        group_by="region",
    )
    groups = {g.group: g for g in report.groups}
    assert list(groups) == ["(none)", "eu", "us"]
    eu = groups["eu"].kpis
    assert groups["eu"].hosts == ("a", "b", "c")
    assert (eu.runs, eu.ok_runs, eu.resolved, eu.changes, eu.failed_changes) == (200, 150, 3, 5, 2)
    assert eu.mttr_ms == pytest.approx(4_000)
    assert groups["us"].unreachable == ("d",)
    assert (groups["us"].kpis.answered, groups["us"].kpis.availability) == (0, None)
    assert groups["(none)"].hosts == ("e",)
    # e is alone in its group now: no majority to differ from; c still differs within eu.
    assert [(d.group, d.host) for d in report.env_differences] == [("eu", "c")]
    assert report.fleet_kpis.availability == pytest.approx(160 / 210)


def test_a_tie_has_no_majority_and_lists_both_hosts() -> None:
    members = [
        Member("a", "u", {}, _report([]), environment=ENV_A),
        Member("c", "u", {}, _report([]), environment=ENV_C),
    ]
    report = build_fleet_report(members, fleet="f", since_ms=0, until_ms=DAY, generated_ms=DAY)
    assert [(d.host, d.value, d.majority, d.tied) for d in report.env_differences] == [
        ("a", "2.4.0", None, True),
        ("c", "2.5.0", None, True),
    ]
    md = render_fleet(report, "md")
    assert "tied: no majority" in md


def test_every_format_escapes_agents_text(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    formula = '=HYPERLINK("http://x")|*'
    members = [
        Member("a", "http://a", {"team": formula}, _report([(1, 1, 0)]), environment=ENV_A),
        Member("b", "http://b", {"team": formula}, _report([(1, 1, 0)]), environment=ENV_A),
        Member(
            "c",
            "http://c",
            {"team": formula},
            _report([(1, 0, 0)]),
            environment={**ENV_A, "process:srv": {"pkg:torch": evil}},
        ),
        Member("d", "http://d", {}, error=f"HTTP 500: {evil}\x1b[31m"),
    ]
    report = build_fleet_report(
        members, fleet="f<b>.toml", since_ms=0, until_ms=DAY, generated_ms=DAY, group_by="team"
    )
    html = render_fleet(report, "html")
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\x1b" not in html
    assert "<svg" in html and 'data-series="host:a"' in html
    md = render_fleet(report, "md")
    assert "<script>" not in md and "\\<script\\>" in md and "\x1b" not in md
    assert "\\|\\*" in md  # the label's | and * do not break the table
    doc = json.loads(render_fleet(report, "json"))
    assert doc["fleet"]["availability"] == pytest.approx(2 / 3)
    assert doc["env_differences"][0]["value"] == evil  # JSON keeps the exact text
    assert doc["coverage"] == {"answered": 3, "hosts": 4}
    files = write_fleet_csv(report, tmp_path / "csv")
    assert sorted(p.name for p in files) == [
        "environment.csv",
        "groups.csv",
        "hosts.csv",
        "summary.csv",
    ]
    with (tmp_path / "csv" / "hosts.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["labels"].startswith("team=")
    groups = list(csv.DictReader((tmp_path / "csv" / "groups.csv").open(newline="")))
    # A spreadsheet shows the label's value, never runs it.
    assert [g["group"] for g in groups] == ["(none)", "'" + formula]
    assert "\x1b" not in (tmp_path / "csv" / "hosts.csv").read_text()
    assert [t.name for t in fleet_tables(report)] == ["summary", "groups", "hosts", "environment"]
