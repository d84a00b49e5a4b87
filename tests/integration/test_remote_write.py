"""remote_write into a real Prometheus (Debian's package, its remote-write receiver enabled):
a real agent forwards what it stores; Prometheus is stopped in the middle while the agent keeps
storing, then started again on the same port and TSDB; afterwards every raw sample the agent's
database holds is in Prometheus, read back through its query API, with the same time and value.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.forward import Catalog
from storage.db import connect
from storage.forwardcursor import TARGET, load_target, series_after
from storage.samples import count_all_raw, raw_points
from tests.helpers import RunningAgent, running_agent, wait_for, write_config

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="Debian's prometheus package is not installed (scripts/debian-deps.sh installs it)",
)
Key = tuple[tuple[str, str], ...]


class Prometheus:
    """A Prometheus server with its remote-write receiver, restartable on the same port and
    TSDB (the first start takes a free port and reads it from the log)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = tmp / "prometheus.yml"
        self.config.write_text("global:\n  scrape_interval: 1m\n")  # scrapes nothing
        self.address = "127.0.0.1:0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        assert PROMETHEUS is not None
        self.starts += 1
        log = self.tmp / f"prometheus-{self.starts}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.tmp / 'tsdb'}",
                    f"--web.listen-address={self.address}",
                    "--web.enable-remote-write-receiver",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        proc = self.proc

        def bound() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log.read_text()}")
            m = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', log.read_text())
            return m.group(1) if m else None

        self.address = wait_for(bound, 30, what="prometheus to listen")
        wait_for(self.ready, 30, what="prometheus to be ready")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def query(self, expr: str, at_s: float) -> list[dict[str, Any]]:
        args = urllib.parse.urlencode({"query": expr, "time": f"{at_s:.3f}"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{args}", timeout=30) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])


@contextmanager
def prometheus(tmp: Path) -> Iterator[Prometheus]:
    prom = Prometheus(tmp)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


def forward_state(agent: RunningAgent) -> dict[str, Any]:
    code, body = agent.get("/api/v1/remote_write")
    assert code == 200, body
    return dict(body)


def stored_samples(db: Path, host: str, labels: tuple[tuple[str, str], ...]) -> dict[Key, list]:
    """Every raw sample in the agent's database, by the label set it is sent with."""
    conn = connect(db, readonly=True)
    try:
        catalog = Catalog(host, labels)
        rows = series_after(conn, 0)
        catalog.add(rows)
        out = {catalog.labels(sid): raw_points(conn, sid, 0, 2**62) for sid, _, _ in rows}
        return {k: v for k, v in out.items() if v}
    finally:
        conn.close()


@needs_prometheus
def test_every_stored_sample_reaches_prometheus_across_an_outage(tmp_path: Path) -> None:
    (tmp_path / "prom").mkdir()
    with prometheus(tmp_path / "prom") as prom:
        cfg = write_config(
            tmp_path,
            f"""
[remote_write]
url = "{prom.url}/api/v1/write"
interval = "500ms"
max_samples_per_request = 200
timeout = "2s"
backoff_initial = "100ms"
backoff_max = "1s"
labels = {{ region = "test" }}
""",
            sample_interval="200ms",
        )
        with running_agent(cfg) as agent:
            db = agent.data_dir / "vigil.db"
            wait_for(
                lambda: forward_state(agent)["samples_sent"] > 200,
                20,
                what="the first samples to be sent",
            )
            assert forward_state(agent)["state"] in ("ok", "catching_up")

            # The outage: Prometheus goes away while the agent keeps storing.
            prom.stop()
            wait_for(
                lambda: forward_state(agent)["state"] == "retrying", 20, what="requests failing"
            )
            conn = connect(db, readonly=True)
            before = count_all_raw(conn)
            wait_for(
                lambda: count_all_raw(conn) > before + 600, 30, what="samples stored meanwhile"
            )
            conn.close()
            down = forward_state(agent)
            assert down["requests_failed"]["connect"] >= 1
            assert down["lag_s"] >= 1.0

            # Back on the same port and TSDB: the agent replays from its cursors.
            prom.start()
            back_ms = int(time.time() * 1000)
            wait_for(
                lambda: (
                    (s := forward_state(agent))["state"] == "ok" and s["sent_through_ms"] > back_ms
                ),
                30,
                what="the backlog to be replayed",
            )
            code, text = agent.get("/metrics")
            assert code == 200
            assert 'vigil_remote_write_state{state="ok"} 1.0' in text
            assert re.search(r"^vigil_remote_write_samples_sent_total [1-9]", text, re.M)
            code, events = agent.get("/api/v1/events?kind=remote_write.&limit=100")
            kinds = {e["kind"] for e in events["events"]}
            assert {"remote_write.failing", "remote_write.recovered"} <= kinds
        # The agent stopped (its last samples sent at stop): compare everything it stored.
        assert agent.proc.returncode == 0
        expected = stored_samples(db, "test-host", (("job", "vigil"), ("region", "test")))
        conn = connect(db, readonly=True)
        target = load_target(conn, TARGET)
        conn.close()
        assert target is not None and target.dropped == 0
        newest = max(ts for points in expected.values() for ts, _ in points)
        oldest = min(ts for points in expected.values() for ts, _ in points)
        window_s = int((newest - oldest) / 1000) + 60
        got: dict[Key, list[tuple[int, float]]] = {}
        for series in prom.query(f'{{instance="test-host"}}[{window_s}s]', newest / 1000 + 1):
            key = tuple(sorted(series["metric"].items()))
            got[key] = [(round(float(t) * 1000), float(v)) for t, v in series["values"]]
        assert set(got) == set(expected), set(got) ^ set(expected)
        missing = {k: sorted(set(v) - set(got[k])) for k, v in expected.items()}
        assert not any(missing.values()), {k: v[:5] for k, v in missing.items() if v}
        assert sum(map(len, got.values())) == sum(map(len, expected.values()))
        assert sum(map(len, expected.values())) > before + 600  # the outage's samples too
