"""A database that exercises every chart of the HTML report, for the unit tests and the
headless-Chromium test: models at 100 %, 50 % and 0 % availability and one without runs,
latency on two metrics, host, GPU and process series (one process at a few hundredths of a
percent of CPU, the range whose axis used to repeat ``0 %``), and control characters in the
texts that reach the report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from storage.db import connect
from storage.deployments import Deployment, insert_deployment, update_deployment
from storage.incidents import save_incident
from storage.records import (
    ArtifactKind,
    DeployKind,
    DeployState,
    DeployStrategy,
    Event,
    Incident,
    ProbeRun,
    Sample,
    make_labels,
)
from storage.report import build_report
from storage.report_model import Report
from storage.versions import Version, register_version
from storage.writer import Writer

MIN = 60_000
H = 3_600_000
T0 = 1_700_006_400_000
UNTIL = T0 + 6 * H
GIB = 1024**3
MODELS = ("steady", "flaky", "dead", "idle")
"""steady: every run ok; flaky: every other run refused; dead: every run refused (0 %);
idle: configured, never probed."""
CONTROL_HOST = "gpu\x1b]0;pwned\x07-01"
CONTROL_REASON = "exit 1 \x1b[31mred\x1b[0m\x07 \x9b2J \x7f"
HOSTILE_ACTOR = "<script>alert(1)</script>|*x*=cmd\x1b[2J"
"""A deploy's actor: markup for HTML and Markdown, a formula start, a control character."""


def fill_charts(writer: Writer) -> None:
    """Write the contents; every chart of the report gets at least one series."""
    runs: list[ProbeRun] = []
    for k in range(6 * 12):  # every 5 minutes for 6 hours
        ts = T0 + k * 5 * MIN
        runs.append(
            ProbeRun(
                model="steady",
                ts_ms=ts,
                ok=True,
                category="ok",
                e2e_ms=20.0 + k % 7,
                ttft_ms=4.0 + k % 3,
            )
        )
        ok = k % 2 == 0
        runs.append(
            ProbeRun(
                model="flaky",
                ts_ms=ts + 1,
                ok=ok,
                category="ok" if ok else "refused",
                e2e_ms=1500.0 + 10 * k if ok else None,
                error=None if ok else CONTROL_REASON,
            )
        )
        runs.append(
            ProbeRun(model="dead", ts_ms=ts + 2, ok=False, category="refused", error="refused")
        )
    writer.submit(runs)
    samples: list[Sample] = []
    for k in range(6 * 12):
        ts = T0 + k * 5 * MIN
        samples += [
            Sample("host.cpu.percent", (), ts, 10.0 + k % 30),
            Sample("host.mem.percent", (), ts, 40.0),
            Sample("gpu.util.percent", make_labels(gpu=0), ts, float(k % 100)),
            Sample("gpu.util.percent", make_labels(gpu=1), ts, 0.0),
            Sample("gpu.mem.used_bytes", make_labels(gpu=0), ts, 7.5 * GIB),
            Sample("gpu.mem.used_bytes", make_labels(gpu=1), ts, 0.5 * GIB),
            Sample("gpu.mem.total_bytes", make_labels(gpu=0), ts, 79.6 * GIB),
            Sample("gpu.mem.total_bytes", make_labels(gpu=1), ts, 79.6 * GIB),
            Sample("process.cpu.percent", make_labels(process="worker"), ts, 0.004 * (k % 6)),
            Sample("process.cpu.percent", make_labels(process="idle-srv"), ts, 0.0),
        ]
    writer.submit(samples)
    writer.submit(
        [
            Event(
                ts_ms=T0 + H,
                kind="process.restarting",
                subject="process:worker",
                message="restarting",
                data={"reason": CONTROL_REASON},
            )
        ]
    )
    writer.run_task(
        lambda conn: save_incident(
            conn,
            Incident(
                id=1,
                subject="model:dead",
                kind="model_down",
                severity="critical",
                cause=f"connection refused {CONTROL_REASON}",
                state="open",
                opened_ms=T0 + 10 * MIN,
                evidence={"failing_since_ms": T0},
            ),
        )
    )
    assert writer.flush()


def fill_deploys(db: Path) -> None:
    """Two deploys of ``steady``: one promoted (lead time 2 h), one rolled back 10 min later by
    the gate (restored in 90 s), requested by a hostile actor and approved by another."""
    conn = connect(db)
    try:
        v1, _ = register_version(conn, _version(1, T0 + 1 * H - 2 * H))
        v2, _ = register_version(conn, _version(2, T0))
        base = Deployment(
            id=0,
            model="steady",
            kind=DeployKind.ARTIFACT,
            strategy=DeployStrategy.IN_PLACE,
            state=DeployState.REQUESTED,
            requested_by="alice@ci",
            requested_ms=T0 + H - 5 * MIN,
            state_since_ms=T0 + H - 5 * MIN,
            process="steady-server",
            to_version_id=v1.id,
            checks={"operation": "deploy"},
        )
        first = insert_deployment(conn, base)
        update_deployment(conn, first.moved(DeployState.PROMOTED, T0 + H))
        second = insert_deployment(
            conn,
            replace(
                base,
                requested_by=HOSTILE_ACTOR,
                requested_ms=T0 + 2 * H - 5 * MIN,
                state_since_ms=T0 + 2 * H - 5 * MIN,
                from_version_id=v1.id,
                to_version_id=v2.id,
            ),
        )
        update_deployment(
            conn,
            second.moved(
                DeployState.ROLLED_BACK,
                T0 + 2 * H + 100_000,
                approved_by="bob <b>ops</b>",
                approved_ms=T0 + 2 * H - 4 * MIN,
                error=f"the canary gate failed: {CONTROL_REASON}",
                checks={
                    "operation": "deploy",
                    "switched_ms": T0 + 2 * H - 3 * MIN,
                    "failed_ms": T0 + 2 * H,
                    "restored_ms": T0 + 2 * H + 90_000,
                },
            ),
        )
    finally:
        conn.close()


def _version(n: int, created_ms: int) -> Version:
    return Version(
        id=0,
        model="steady",
        hash=f"sha256:{n:064x}",
        path=f"/models/steady/v{n}",
        kind=ArtifactKind.FILE,
        size_bytes=1,
        files=1,
        created_ms=created_ms,
        registered_ms=created_ms,
    )


def chart_report(tmp: Path, *, host: str = CONTROL_HOST) -> Report:
    """Fill a database under ``tmp`` and build its report (the configured models included)."""
    writer = Writer(tmp / "charts" / "vigil.db", flush_interval_s=0.01)
    writer.start()
    try:
        fill_charts(writer)
    finally:
        writer.close()
    fill_deploys(tmp / "charts" / "vigil.db")
    conn = connect(tmp / "charts" / "vigil.db", readonly=True)
    try:
        return build_report(
            conn, since_ms=T0, until_ms=UNTIL, generated_ms=UNTIL, host=host, models=MODELS
        )
    finally:
        conn.close()
