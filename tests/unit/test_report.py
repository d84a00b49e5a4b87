"""Host reports: numbers computed from a real database (real writer, real migrations) with known
contents, checked exactly; and the HTML, Markdown, JSON and CSV renderings of them."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ModelConfig
from agent.health.monitor import ModelMonitor
from agent.report import load_schema, parse_since, render, write_csv
from agent.report.markdown import md_escape
from probes.base import artifact_info
from storage.db import connect
from storage.incidents import save_incident
from storage.records import Event, Incident, ProbeRun, Sample, make_labels
from storage.report import MIN_TREND_RUNS, bucket_for, build_report
from storage.report_events import restart_reason
from storage.report_model import LatencyTrend, Report
from storage.writer import Writer
from tests.schema_subset import errors

H = 3_600_000
T0 = 1_700_006_400_000  # a whole hour: buckets start on the hour
UNTIL = T0 + 24 * H
GIB = 1024**3
EVIL = '<script>alert("x")</script> | *bold*'
FORMULA = "=cmd|' /C calc'!A0"


def _run(
    model: str, hour: float, category: str, e2e: float | None, *, planned: bool = False
) -> ProbeRun:
    return ProbeRun(
        model=model,
        ts_ms=int(T0 + hour * H),
        ok=category == "ok",
        category=category,
        e2e_ms=e2e,
        planned=planned,
    )


def _ev(ts: int, kind: str, subject: str, message: str = "", **data: object) -> Event:
    return Event(ts_ms=ts, kind=kind, subject=subject, message=message or kind, data=data)


def fill(writer: Writer) -> None:
    """Known contents; every number the tests check follows from these lines."""
    # alpha: 10 runs an hour apart; hour 3 times out (no latency), hour 6 is slow (answered).
    runs = [
        _run("alpha", h, {3: "timeout", 6: "slow"}.get(h, "ok"), None if h == 3 else 10.0 * (h + 1))
        for h in range(10)
    ]
    runs.append(_run("gamma", -1, "ok", 5.0))  # before the window: not monitored in it
    # An operator's restart at 7 h: planned from 7 h to 7 h 2 m, one refused run in it.
    runs.append(_run("alpha", 7 + 1 / 60, "refused", None, planned=True))
    writer.submit(runs)
    events = [
        _ev(T0 - 2 * H, "agent.started", "agent", host="gpu-01", models=["alpha", "beta"]),
        _ev(T0 - 3 * H, "model.artifact", "model:alpha", sha256="a" * 64),
        _ev(T0 - H, "process.restarting", "process:srv", reason="exit 9"),  # before the window
        _ev(T0 + 2 * H, "process.exited", "process:srv", returncode=1),
        _ev(T0 + 2 * H + 1, "process.restarting", "process:srv", reason="exit 1", delay_s=0),
        _ev(T0 + 2 * H + 2, "model.artifact", "model:alpha", sha256="a" * 64),  # agent restart
        _ev(T0 + 3 * H, "model.state_changed", "model:alpha", **{"from": "up", "to": "down"}),
        _ev(T0 + 4 * H, "model.state_changed", "model:alpha", **{"from": "down", "to": "up"}),
        _ev(T0 + 5 * H, "process.exited", "process:srv", returncode=1),
        _ev(T0 + 5 * H + 1, "process.restarting", "process:srv", reason="exit 1", delay_s=1),
        _ev(
            int(T0 + 5.5 * H),
            "model.artifact",
            "model:alpha",
            sha256="b" * 64,
            previous_sha256="a" * 64,
            artifact_mtime_ms=T0 + 5 * H,
            run={"category": "slow", "ok": False},
        ),
        _ev(T0 + 6 * H, "process.hung", "process:srv"),
        _ev(
            T0 + 6 * H + 1,
            "process.restarting",
            "process:srv",
            reason="hung: 3 failed probes in a row (alpha: timeout)",
        ),
        _ev(T0 + 7 * H, "process.restarting", "process:srv", by="ops@h"),
        _ev(T0 + 7 * H, "model.state_changed", "model:alpha", **{"from": "up", "to": "starting"}),
        _ev(
            T0 + 7 * H + 120_000,
            "model.state_changed",
            "model:alpha",
            **{"from": "starting", "to": "up"},
        ),
        # Stopped by an operator at 23 h and never started again: planned to the window's end.
        _ev(T0 + 23 * H, "model.state_changed", "model:alpha", **{"from": "up", "to": "stopped"}),
        _ev(T0 + 8 * H, "process.quarantined", "process:srv"),
        _ev(T0 + 8 * H, "drift.detected", "model:alpha", "input mean moved 3 sigma"),
        _ev(T0 + 9 * H, "process.restarting", f"process:{EVIL}", reason=FORMULA),
    ]
    writer.submit(events)
    samples = [Sample("host.cpu.percent", (), T0 - 1, 99.0)]
    samples += [Sample("host.cpu.percent", (), T0 + k * 600_000, 10.0 * (k + 1)) for k in range(6)]
    samples += [Sample("host.cpu.percent", make_labels(core=0), T0, 50.0)]
    samples += [
        Sample("host.mem.used_bytes", (), T0, 1e9),
        Sample("host.mem.used_bytes", (), T0 + H, 3e9),
        Sample("host.mem.total_bytes", (), T0, 8e9),
        Sample("gpu.util.percent", make_labels(gpu=0), T0, 50.0),
        Sample("gpu.util.percent", make_labels(gpu=0), T0 + 2 * H, 100.0),
        Sample("gpu.mem.used_bytes", make_labels(gpu=0), T0, 2.0 * GIB),
        Sample("gpu.mem.total_bytes", make_labels(gpu=0), T0, 16.0 * GIB),
    ]
    writer.submit(samples)

    def inc(iid: int, subject: str, kind: str, opened: int, **kw: object) -> Incident:
        resolved = kw.pop("resolved_ms", None)
        return Incident(
            id=iid,
            subject=subject,
            kind=kind,
            severity=str(kw.pop("severity", "warning")),
            cause=str(kw.pop("cause", "cause")),
            state="resolved" if resolved is not None else "open",
            opened_ms=opened,
            resolved_ms=resolved,  # type: ignore[arg-type]
            ttr_ms=(resolved - opened) if resolved is not None else None,  # type: ignore[operator]
            evidence=kw,
        )

    for incident in (
        inc(
            1,
            "model:alpha",
            "model_down",
            T0 + 3 * H,
            severity="critical",
            resolved_ms=T0 + 4 * H,
            failing_since_ms=T0 + 3 * H - 20_000,
        ),
        inc(2, "process:srv", "process_exited", T0 + 2 * H, resolved_ms=T0 + 2 * H + 30_000),
        inc(3, "model:alpha", "model_degraded", T0 + 20 * H, cause=EVIL),
        inc(4, "model:alpha", "model_down", T0 - 5 * H, resolved_ms=T0 - 4 * H),
        inc(
            5,
            "model:alpha",
            "model_down",
            T0 - H,
            resolved_ms=T0 + H,
            failing_since_ms=T0 - H - 5000,
        ),
    ):
        writer.run_task(lambda conn, i=incident: save_incident(conn, i))
    assert writer.flush()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    writer = Writer(tmp_path / "data" / "vigil.db", flush_interval_s=0.01)
    writer.start()
    try:
        fill(writer)
    finally:
        writer.close()
    yield tmp_path / "data" / "vigil.db"


@pytest.fixture
def report(db: Path) -> Report:
    conn = connect(db, readonly=True)
    try:
        return build_report(conn, since_ms=T0, until_ms=UNTIL, generated_ms=UNTIL)
    finally:
        conn.close()


def test_availability_latency_and_trend(report: Report) -> None:
    assert report.window.bucket_ms == H
    assert [m.name for m in report.models] == ["alpha", "beta"]
    alpha, beta = report.models
    assert (alpha.runs, alpha.ok_runs, alpha.availability) == (10, 8, 0.8)
    # The planned run is counted apart and against nothing.
    assert alpha.planned_runs == 1 and "refused" not in alpha.outcomes
    assert alpha.planned_downtime_ms == 120_000 + H
    # Incident 1 from its failure (20 s before it opened) to 4 h; incident 5 from the start.
    assert alpha.outage_ms == (H + 20_000) + H
    assert alpha.outcomes == {"ok": 8, "slow": 1, "timeout": 1}
    assert (alpha.first_run_ms, alpha.last_run_ms) == (T0, T0 + 9 * H)
    assert alpha.state_changes == 5
    e2e = alpha.latency["e2e_ms"]
    # Answered runs: 10..100 ms without hour 3's timeout (40 ms is not there).
    assert e2e.count == 9
    assert e2e.p50 == 60.0
    assert e2e.p95 == pytest.approx(96.0)  # (9 - 1) * 0.95 = 7.6 -> 90 + 0.6 * 10
    assert e2e.p99 == pytest.approx(99.2)
    assert e2e.max == 100.0
    assert alpha.latency["ttft_ms"].count == 0 and alpha.latency["ttft_ms"].p95 is None
    trend = alpha.trend["e2e_ms"]
    # The runs span hours 0-9: the halves split at 4.5 h. p95 of [10,20,30,50] and [60..100].
    assert trend.first_half_p95 == pytest.approx(47.0)
    assert trend.second_half_p95 == pytest.approx(98.0)
    # 4 and 5 answered runs are far fewer than 20 a half: no verdict from them.
    assert (trend.first_half_runs, trend.second_half_runs) == (4, 5)
    assert (trend.change_pct, trend.direction) == (None, "too few runs")
    assert [(p.ts_ms, p.p95, p.count) for p in trend.points] == [
        (T0 + h * H, 10.0 * (h + 1), 1) for h in range(10) if h != 3
    ]
    assert (beta.runs, beta.availability, beta.trend["e2e_ms"].direction) == (0, None, "n/a")
    assert report.availability == 0.8


def _trend_of(tmp_path: Path, e2e: list[float]) -> LatencyTrend:
    """The e2e trend of one model with one answered run a minute, latencies as given."""
    writer = Writer(tmp_path / "trend.db", flush_interval_s=0.01)
    writer.start()
    try:
        writer.submit(
            [
                ProbeRun(model="m", ts_ms=T0 + k * 60_000, ok=True, category="ok", e2e_ms=v)
                for k, v in enumerate(e2e)
            ]
        )
        assert writer.flush()
    finally:
        writer.close()
    conn = connect(tmp_path / "trend.db", readonly=True)
    try:
        return build_report(conn, since_ms=T0, until_ms=UNTIL).models[0].trend["e2e_ms"]
    finally:
        conn.close()


def test_trend_needs_enough_runs_in_each_half(tmp_path: Path) -> None:
    assert MIN_TREND_RUNS == 20
    # 40 runs a minute apart split 20 | 20 at 19.5 min: enough, and twice as slow.
    enough = _trend_of(tmp_path / "a", [10.0] * 20 + [20.0] * 20)
    assert (enough.first_half_runs, enough.second_half_runs) == (20, 20)
    assert (enough.direction, enough.change_pct) == ("slower", pytest.approx(100.0))
    # 39 runs split 19 | 20 at 19 min: one short in the first half, so no verdict at all.
    short = _trend_of(tmp_path / "b", [10.0] * 19 + [20.0] * 20)
    assert (short.first_half_runs, short.second_half_runs) == (19, 20)
    assert (short.direction, short.change_pct) == ("too few runs", None)
    assert (short.first_half_p95, short.second_half_p95) == (10.0, 20.0)  # still shown
    flat = _trend_of(tmp_path / "c", [10.0, 10.5] * 30)
    assert (flat.direction, flat.change_pct) == ("flat", pytest.approx(0.0))


def test_monitoring_share_and_host_come_from_recorded_events(report: Report) -> None:
    assert report.host == "gpu-01"
    mon = report.monitoring
    assert mon.source == "events"
    assert mon.known_models == ("alpha", "beta")  # gamma only ran before the window
    assert (mon.monitored, mon.unmonitored, mon.share) == (("alpha",), ("beta",), 0.5)


def test_configured_models_override_the_recorded_list(db: Path) -> None:
    conn = connect(db, readonly=True)
    r = build_report(conn, since_ms=T0, until_ms=UNTIL, host="h", models=["alpha", "x", "y"])
    assert (r.host, r.monitoring.source) == ("h", "config")
    assert r.monitoring.known_models == ("alpha", "x", "y")
    assert r.monitoring.share == pytest.approx(1 / 3)


def test_incidents_time_to_detect_and_recover(report: Report) -> None:
    inc = report.incidents
    assert [r.id for r in inc.rows] == [5, 2, 1, 3]  # 4 ended before the window
    by_id = {r.id: r for r in inc.rows}
    assert (by_id[1].ttd_ms, by_id[1].ttr_ms) == (20_000, H)
    assert (by_id[2].ttd_ms, by_id[2].ttr_ms) == (None, 30_000)
    assert (by_id[3].state, by_id[3].ttr_ms, by_id[3].resolved_ms) == ("open", None, None)
    assert (by_id[5].ttd_ms, by_id[5].ttr_ms) == (5000, 2 * H)
    assert (inc.total, inc.opened_in_window, inc.resolved_in_window, inc.still_open) == (4, 3, 3, 1)
    assert inc.critical == 1
    assert inc.mttd_ms == 20_000  # only incidents opened in the window count
    assert inc.mttr_ms == (H + 30_000 + 2 * H) / 3
    assert inc.max_ttr_ms == 2 * H


def test_incident_resolved_after_the_window_is_open_at_its_end(db: Path) -> None:
    conn = connect(db, readonly=True)
    r = build_report(conn, since_ms=T0, until_ms=T0 + int(3.5 * H))
    row = next(r for r in r.incidents.rows if r.id == 1)
    assert (row.state, row.resolved_ms, row.ttr_ms) == ("open", None, None)
    assert r.incidents.mttr_ms == (30_000 + 2 * H) / 2


def test_restarts_grouped_by_reason(report: Report) -> None:
    groups = [(g.process, g.reason, g.count) for g in report.restarts.groups]
    assert groups == [
        ("srv", "exit 1", 2),
        (EVIL, FORMULA, 1),
        ("srv", "hung: 3 failed probes in a row", 1),
        ("srv", "operator restart", 1),
    ]
    assert report.restarts.total == 5
    hung = report.restarts.groups[2]
    assert hung.last_detail == "hung: 3 failed probes in a row (alpha: timeout)"
    srv = next(p for p in report.restarts.processes if p.process == "srv")
    assert (srv.restarts, srv.exits, srv.hangs, srv.quarantines) == (4, 2, 1, 1)


def test_restart_reason_classes() -> None:
    assert restart_reason({"reason": "signal SIGKILL"}) == "signal SIGKILL"
    assert restart_reason({"reason": "hung: generation stalled (m: no token)"}) == (
        "hung: generation stalled"
    )
    assert restart_reason({"by": "ops@h"}) == "operator restart"
    assert restart_reason({}) == "unknown"


def test_deployments_are_artifact_changes(report: Report) -> None:
    dep = report.deployments
    assert dep.count == 1 and dep.note is None
    row = dep.rows[0]
    # These events are in the format of agents before artifact kinds (sha256 only): still read.
    assert (row.model, row.artifact, row.previous_artifact) == ("alpha", "b" * 64, "a" * 64)
    assert row.artifact_kind == "sha256"
    assert row.first_run_category == "slow"
    assert row.verified_ms == T0 + 7 * H  # hour 6 was slow; hour 7 the first ok run after it
    assert row.lead_time_ms == 2 * H  # from the file's mtime (5 h) to the verified run (7 h)
    assert (dep.per_day, dep.failed, dep.median_lead_time_ms) == (1.0, 0, 2 * H)


def test_drift_resources_audit_and_coverage(report: Report) -> None:
    assert [(d.kind, d.message) for d in report.drift.rows] == [
        ("drift.detected", "input mean moved 3 sigma")
    ]
    res = {(r.name, tuple(r.labels.items())): r for r in report.resources}
    assert set(res) == {
        ("host.cpu.percent", ()),
        ("host.mem.used_bytes", ()),
        ("gpu.util.percent", (("gpu", "0"),)),
        ("gpu.mem.used_bytes", (("gpu", "0"),)),
    }
    cpu = res["host.cpu.percent", ()]
    assert (cpu.samples, cpu.mean, cpu.peak, cpu.unit) == (6, 35.0, 60.0, "%")
    assert [(p.ts_ms, p.avg, p.max) for p in cpu.points] == [(T0, 35.0, 60.0)]
    mem = res["host.mem.used_bytes", ()]
    assert (mem.mean, mem.peak, mem.capacity, mem.unit) == (2e9, 3e9, 8e9, "bytes")
    gpu = res["gpu.util.percent", (("gpu", "0"),)]
    assert (gpu.mean, gpu.peak) == (75.0, 100.0)
    assert res["gpu.mem.used_bytes", (("gpu", "0"),)].capacity == 16.0 * GIB
    assert report.audit.ok and report.audit.checked == 20
    assert report.audit.events_in_window == 17
    assert (report.coverage.first_probe_run_ms, report.coverage.first_sample_ms) == (T0, T0)
    assert report.coverage.note is None


def test_empty_database_reports_zero_with_notes(tmp_path: Path) -> None:
    Writer(tmp_path / "v.db").start()
    conn = connect(tmp_path / "v.db", readonly=True)
    r = build_report(conn, since_ms=T0, until_ms=UNTIL)
    assert r.models == () and r.availability is None and r.monitoring.share is None
    assert r.deployments.count == 0 and "no deployments in this window" in (
        r.deployments.note or ""
    )
    assert r.drift.count == 0 and "drift" in (r.drift.note or "")
    assert r.audit.ok and r.audit.checked == 0
    assert any("no probe runs" in n for n in r.notes)
    assert errors(r.to_json(), load_schema()) == []
    for fmt in ("html", "md", "json"):
        assert render(r, fmt)


def test_tampered_chain_is_reported(db: Path) -> None:
    raw = sqlite3.connect(db)
    raw.execute("UPDATE events SET message = 'nothing happened' WHERE seq = 5")
    raw.commit()
    raw.close()
    conn = connect(db, readonly=True)
    r = build_report(conn, since_ms=T0, until_ms=UNTIL)
    assert (r.audit.ok, r.audit.broken_seq, r.audit.checked) == (False, 5, 4)
    assert "BROKEN at event 5" in render(r, "html")
    assert main(["report", "--db", str(db), "--since", "5000d", "--format", "json"]) == 1


def test_bucket_widths() -> None:
    assert bucket_for(30 * 60_000) == 60_000
    assert bucket_for(H) == 300_000  # 60 one-minute buckets would be more than 48
    assert bucket_for(24 * H) == H
    assert bucket_for(7 * 24 * H) == 6 * H
    assert bucket_for(30 * 24 * H) == 24 * H


def test_json_follows_the_schema(report: Report) -> None:
    doc = json.loads(render(report, "json"))
    schema = load_schema()
    assert errors(doc, schema) == []
    assert doc["availability"] == 0.8 and doc["models"][0]["latency"]["e2e_ms"]["p50"] == 60.0
    # The checker does catch what breaks the schema.
    doc["models"][0]["availability"] = 1.5
    doc["incidents"]["rows"][0]["surprise"] = 1
    del doc["audit"]["ok"]
    found = errors(doc, schema)
    assert any("models[0].availability" in e and "maximum" in e for e in found)
    assert any("unexpected property 'surprise'" in e for e in found)
    assert any("audit: missing required 'ok'" in e for e in found)


def test_html_is_self_contained_escaped_and_has_charts(report: Report) -> None:
    page = render(report, "html")
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # Availability, e2e latency, host CPU and memory, GPU utilization, GPU memory.
    assert page.count('<svg class="chart"') == 5
    assert "<polyline" in page and 'class="bar"' in page
    assert "Vigil host report: gpu-01" in page and "80.00 %" in page
    assert "no deployment" not in page  # there was one


def test_markdown_escapes_text(report: Report) -> None:
    text = render(report, "md")
    assert text.startswith("# Vigil host report: gpu-01")
    assert "## Incidents" in text and "## Restarts by reason" in text
    assert "\\<script\\>" in text and "\\| \\*bold\\*" in text
    assert "<script" not in text.replace("\\<script", "")
    assert md_escape("a|b\nc\x1b[31m") == "a\\|b c?\\[31m"


def test_csv_one_file_per_table(report: Report, tmp_path: Path) -> None:
    files = write_csv(report, tmp_path / "out")
    names = {p.name for p in files}
    assert {"summary.csv", "models.csv", "latency.csv", "latency_trend.csv", "incidents.csv"} <= (
        names
    )
    assert {"restarts.csv", "deployments.csv", "drift.csv", "resources.csv"} <= names
    rows = list(csv.DictReader((tmp_path / "out" / "models.csv").open()))
    assert rows[0] == {
        "model": "alpha",
        "runs": "10",
        "ok_runs": "8",
        "outage_ms": str(2 * H + 20_000),
        "planned_downtime_ms": str(120_000 + H),
        "planned_runs": "1",
        "availability": "0.8",
        "state_changes": "5",
        "outcomes": "ok=8 slow=1 timeout=1",
        "last_run_ms": str(T0 + 9 * H),
    }
    incidents = list(csv.DictReader((tmp_path / "out" / "incidents.csv").open()))
    assert incidents[-1]["cause"] == EVIL
    restarts = list(csv.DictReader((tmp_path / "out" / "restarts.csv").open()))
    assert restarts[1]["reason"] == "'" + FORMULA  # a spreadsheet shows it, never runs it
    summary = dict(csv.reader((tmp_path / "out" / "summary.csv").open()))
    assert summary["mttr_ms"] == str((H + 30_000 + 2 * H) / 3) and summary["audit_ok"] == "true"


def test_csv_guards_formula_cells(tmp_path: Path) -> None:
    from agent.report.csvfiles import _cell

    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("@SUM") == "'@SUM" and _cell(-1.5) == -1.5 and _cell(None) == ""


def test_parse_since() -> None:
    assert parse_since("7d") == 7 * 24 * H
    assert parse_since("90m") == 90 * 60_000
    for bad in ("7", "yesterday", "-1d", "0s", ""):
        with pytest.raises(ValueError, match="expected"):
            parse_since(bad)


def test_cli_report_formats_and_errors(db: Path, tmp_path: Path, capsys) -> None:
    base = ["report", "--db", str(db), "--since", "5000d"]
    assert main(base) == 0
    assert capsys.readouterr().out.startswith("# Vigil host report: gpu-01")
    assert main([*base, "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main([*base, "--format", "json", "-o", str(tmp_path / "r.out")]) == 0
    assert json.loads((tmp_path / "r.out").read_text())["host"] == "gpu-01"
    assert main([*base, "--format", "csv", "-o", str(tmp_path / "csv")]) == 0
    assert (tmp_path / "csv" / "models.csv").is_file()
    capsys.readouterr()

    def usage(argv: list[str], message: str) -> None:
        assert main(argv) == 2
        assert message in capsys.readouterr().err

    usage([*base, "--since", "soon"], "--since: expected a duration such as")
    usage([*base, "--since", "0s"], "--since: expected a positive duration")
    usage([*base, "--format", "csv"], "pass -o DIR")
    usage([*base, "-o", str(tmp_path / "r.txt")], "cannot tell the format")
    usage(["report", "--db", str(tmp_path / "none.db")], "no database at")
    with pytest.raises(SystemExit) as exc:
        main(["report", "--db", str(db), "--config", str(tmp_path / "c.toml")])
    assert exc.value.code == 2


def test_cli_report_with_config_uses_its_host_and_models(db: Path, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "vigil.toml"
    cfg.write_text(
        f"""
[agent]
host = "cfg-host"
data_dir = {json.dumps(str(db.parent))}

[[model]]
name = "alpha"
protocol = "tcp"
url = "tcp://127.0.0.1:9"
""",
        encoding="utf-8",
    )
    assert main(["report", "--config", str(cfg), "--since", "5000d", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["host"] == "cfg-host"
    assert doc["monitoring"] == {
        "known_models": ["alpha", "gamma"],  # gamma is not configured now but ran in the window
        "monitored": ["alpha", "gamma"],
        "unmonitored": [],
        "share": 1.0,
        "source": "config",
    }


def test_monitor_records_artifact_changes() -> None:
    mon = ModelMonitor(ModelConfig(name="m", protocol="tcp", url="tcp://127.0.0.1:9"))
    events: list[Event] = []

    def record(ts: int, artifact: str | None, kind: str = "sha256") -> None:
        if artifact is not None:
            mon.probe.info.update(artifact_info(artifact, kind, 1000 + ts))
        mon.record(ProbeRun(model="m", ts_ms=ts, ok=True, category="ok"), events.append)

    record(1, None)  # a probe that reports no artifact: nothing to record
    record(2, "a" * 64)
    record(3, "a" * 64)
    record(4, "b" * 64)
    record(5, "/models/Llama-3.1-8B-Instruct", "served_root")
    artifacts = [e for e in events if e.kind == "model.artifact"]
    assert [(e.ts_ms, e.data["artifact"], e.data["previous_artifact"]) for e in artifacts] == [
        (2, "a" * 64, None),
        (4, "b" * 64, "a" * 64),
        (5, "/models/Llama-3.1-8B-Instruct", "b" * 64),
    ]
    # A file hash keeps the sha256 keys older readers know; other identities do not claim them.
    assert (artifacts[1].data["sha256"], artifacts[1].data["previous_sha256"]) == (
        "b" * 64,
        "a" * 64,
    )
    assert "sha256" not in artifacts[2].data
    assert artifacts[2].data["artifact_kind"] == "served_root"
    assert artifacts[2].message == "served_root /models/Llama-3.1-8B-Instruct (was bbbbbbbbbbbb)"
    assert artifacts[1].data["artifact_time_ms"] == 1004
    assert artifacts[1].data["run"] == {"category": "ok", "ok": True}
    assert artifacts[1].subject == "model:m"
