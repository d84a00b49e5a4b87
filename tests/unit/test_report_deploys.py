"""The report's Deployments section: the DORA keys and the deploy list from a real database, in
every format, valid against the schema, with request text (actor, approver, error) escaped for
where it goes."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

from agent.report import load_schema, render, write_csv
from agent.report.deploytables import DEPLOY_NOTE, HOST_ROW
from agent.report.tables import format_ms
from tests.report_samples import HOSTILE_ACTOR, T0, H, chart_report
from tests.schema_subset import errors

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_the_deploys_section_in_every_format(tmp_path: Path) -> None:
    report = chart_report(tmp_path)
    k = report.deploys
    # One promoted (lead 2 h), one rolled back (restored 90 s after the gate failed it).
    assert (k.host.changes, k.host.promoted, k.host.failed_changes) == (2, 1, 1)
    assert k.host.change_failure_rate == 0.5
    assert k.host.lead_time_median_ms == 2 * H
    assert k.host.time_to_restore_median_ms == 90_000
    assert k.host.per_day == 1 / 0.25  # one promotion in a 6-hour window
    assert [m.model for m in k.models] == ["steady"]

    doc = json.loads(render(report, "json"))
    assert doc["schema_version"] == 5
    assert errors(doc, load_schema()) == []
    rows = doc["deploys"]["rows"]
    assert [(r["state"], r["change_failed"]) for r in rows] == [
        ("promoted", False),
        ("rolled_back", True),
    ]
    assert rows[1]["requested_by"] == HOSTILE_ACTOR  # JSON keeps the exact text, escaped
    assert rows[1]["approved_by"] == "bob <b>ops</b>"
    assert rows[0]["lead_time_ms"] == 2 * H and rows[1]["time_to_restore_ms"] == 90_000
    assert doc["deploys"]["host"]["model"] is None

    page = render(report, "html")
    assert "<h2>Deployments</h2>" in page and "<h2>Artifact changes seen by probes</h2>" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>ops</b>" not in page and "bob &lt;b&gt;ops&lt;/b&gt;" in page
    assert not CONTROL.search(page)
    assert f"<td class=n>{format_ms(2 * H)}</td>" in page and "<td class=n>50.00 %</td>" in page
    assert "Deployment KPIs (DORA four keys)" in page and HOST_ROW in page

    md = render(report, "md")
    assert "## Deployment KPIs (DORA four keys)" in md and "## Deploys" in md
    assert "\\<script\\>alert(1)\\</script\\>\\|\\*x\\*=cmd?\\[2J" in md
    assert DEPLOY_NOTE.split(".")[0] in md and not CONTROL.search(md)
    assert "- **Deploys**: 2 changes finished (1 promoted, 4.00/day)" in md

    write_csv(report, tmp_path / "csv")
    deploys = list(csv.DictReader((tmp_path / "csv" / "deploys.csv").open()))
    assert [d["state"] for d in deploys] == ["promoted", "rolled_back"]
    assert deploys[1]["requested_by"] == "<script>alert(1)</script>|*x*=cmd?[2J"
    assert deploys[0]["requested_ms"] == str(T0 + H - 5 * 60_000)
    kpis = list(csv.DictReader((tmp_path / "csv" / "deploy_kpis.csv").open()))
    assert [r["model"] for r in kpis] == ["steady", HOST_ROW]
    assert kpis[-1]["change_failure_rate"] == "0.5"
    summary = dict(csv.reader((tmp_path / "csv" / "summary.csv").open()))
    assert summary["deploy_changes"] == "2" and summary["change_failure_rate"] == "0.5"


def test_a_formula_in_a_deploys_text_is_defused_in_csv(tmp_path: Path) -> None:
    report = chart_report(tmp_path)
    row = report.deploys.rows[1]
    hostile = replace(report.deploys, rows=(replace(row, requested_by="=HYPERLINK(1)"),))
    write_csv(replace(report, deploys=hostile), tmp_path / "c")
    (got,) = list(csv.DictReader((tmp_path / "c" / "deploys.csv").open()))
    assert got["requested_by"] == "'=HYPERLINK(1)"
