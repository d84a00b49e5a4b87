"""A database that exercises every chart of the HTML report, for the unit tests and the
headless-Chromium test: models at 100 %, 50 % and 0 % availability and one without runs,
latency on two metrics, host, GPU and process series (one process at a few hundredths of a
percent of CPU, the range whose axis used to repeat ``0 %``), and control characters in the
texts that reach the report."""

from __future__ import annotations

from pathlib import Path

from storage.db import connect
from storage.incidents import save_incident
from storage.records import Event, Incident, ProbeRun, Sample, make_labels
from storage.report import build_report
from storage.report_model import Report
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


def chart_report(tmp: Path, *, host: str = CONTROL_HOST) -> Report:
    """Fill a database under ``tmp`` and build its report (the configured models included)."""
    writer = Writer(tmp / "charts" / "vigil.db", flush_interval_s=0.01)
    writer.start()
    try:
        fill_charts(writer)
    finally:
        writer.close()
    conn = connect(tmp / "charts" / "vigil.db", readonly=True)
    try:
        return build_report(
            conn, since_ms=T0, until_ms=UNTIL, generated_ms=UNTIL, host=host, models=MODELS
        )
    finally:
        conn.close()
