"""Host reports from a real agent that supervises and probes the demo KServe V2 server:
``vigil report`` in every format, ``GET /api/v1/report``, a stopped agent's data dir, and the
HTML report loaded in real headless Chromium."""

from __future__ import annotations

import csv
import hashlib
import html
import itertools
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.demo import MODEL_PATH
from agent.report import load_schema
from agent.report.html import CSP
from tests.helpers import (
    RunningAgent,
    child_env,
    control_fake,
    fake_llm,
    running_agent,
    vigil_cmd,
    wait_for,
    write_config,
)
from tests.schema_subset import errors

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(agent: RunningAgent, path: str, method: str = "GET", token: str | None = None):
    req = urllib.request.Request(
        agent.url + path,
        method=method,
        data=b"" if method == "POST" else None,
        headers={"Authorization": f"Bearer {token or agent.token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def _vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vigil_cmd(*args), capture_output=True, text=True, env=child_env(), timeout=60
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningAgent, Path]]:
    """A running agent with some history: a model that went down and recovered (an incident
    with its time to detect and recover) and a server killed once (a restart with a reason).
    The supervisor may also restart the frozen server as hung, before it is thawed."""
    tmp = tmp_path_factory.mktemp("report")
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "agent.demo.server",
        "--model",
        str(MODEL_PATH),
        "--name",
        "iris",
        "--port",
        str(port),
    ]
    cfg = write_config(
        tmp,
        f"""
[[process]]
name = "iris-server"
command = {json.dumps(argv)}
restart = "always"
backoff_initial = "100ms"
stop_timeout = "5s"

[[model]]
name = "iris"
protocol = "kserve_v2"
url = "http://127.0.0.1:{port}"
interval = "200ms"
timeout = "1s"
jitter = "0s"
process = "iris-server"
[model.canary]
model = "iris"
inputs = [{{ name = "input", shape = [1, 4], datatype = "FP32", data = [5.1, 3.5, 1.4, 0.2] }}]
""",
    )
    with running_agent(cfg) as agent:

        def model() -> dict[str, Any]:
            return agent.get("/api/v1/models")[1]["models"][0]

        def process() -> dict[str, Any]:
            return agent.get("/api/v1/processes")[1]["processes"][0]

        def events(kind: str) -> list[dict[str, Any]]:
            return agent.get(f"/api/v1/events?kind={kind}")[1]["events"]

        wait_for(lambda: model()["state"] == "up", 30, what="iris up")
        # A frozen server (SIGSTOP) is an outage nobody planned (an operator's stop is planned
        # and opens none): probes time out, a model_down incident opens...
        pid = wait_for(lambda: process()["pid"], what="the server's pid")
        subprocess.run(["kill", "-STOP", str(pid)], check=True)
        try:
            wait_for(lambda: model()["incident"], 30, what="a model_down incident")
        finally:
            subprocess.run(["kill", "-CONT", str(pid)], check=False)
        wait_for(lambda: model()["state"] == "up" and not model()["incident"], 30, what="recovery")
        # ...and a SIGKILL makes a restart whose reason is the signal.
        pid = wait_for(lambda: process()["pid"], what="the server's pid")
        subprocess.run(["kill", "-KILL", str(pid)], check=True)
        wait_for(lambda: events("process.restarting"), what="a restart")
        wait_for(lambda: process()["state"] == "running", 30, what="the server running again")
        wait_for(lambda: model()["state"] == "up", 30, what="iris up again")
        yield agent, cfg


@pytest.fixture(scope="module")
def cli_reports(history: tuple[RunningAgent, Path]) -> dict[str, Path]:
    """``vigil report`` run as a command on the running agent's config, in every format."""
    _, cfg = history
    out_dir = cfg.parent / "reports"
    out_dir.mkdir()
    paths = {
        "json": out_dir / "report.json",
        "md": out_dir / "report.md",
        "html": out_dir / "report.html",
        "csv": out_dir / "csv",
    }
    for fmt, path in paths.items():
        args = ["report", "--config", str(cfg), "--since", "1h", "-o", str(path)]
        out = _vigil(*args, *(["--format", "csv"] if fmt == "csv" else []))
        assert out.returncode == 0, out.stderr
    return paths


def test_cli_report_in_every_format(cli_reports: dict[str, Path]) -> None:
    doc = json.loads(cli_reports["json"].read_text())
    assert errors(doc, load_schema()) == []
    assert doc["host"] == "test-host"
    iris = doc["models"][0]
    assert iris["name"] == "iris" and iris["runs"] >= 5
    assert 0 < iris["availability"] < 1  # the frozen and the killed server failed some runs
    assert iris["outcomes"]["ok"] == iris["ok_runs"]
    assert sum(n for outcome, n in iris["outcomes"].items() if outcome != "ok") >= 2
    e2e = iris["latency"]["e2e_ms"]
    assert e2e["count"] >= 3 and 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"]
    assert iris["trend"]["e2e_ms"]["points"]
    down = [r for r in doc["incidents"]["rows"] if r["kind"] == "model_down"]
    assert down and down[0]["state"] == "resolved"
    assert down[0]["ttd_ms"] >= 0 and down[0]["ttr_ms"] > 0
    assert doc["incidents"]["mttr_ms"] > 0 and doc["incidents"]["mttd_ms"] is not None
    groups = {(g["process"], g["reason"]): g["count"] for g in doc["restarts"]["groups"]}
    assert groups[("iris-server", "signal SIGKILL")] == 1
    assert doc["monitoring"]["share"] == 1.0 and doc["monitoring"]["source"] == "config"
    assert doc["audit"]["ok"] and doc["audit"]["checked"] >= 5
    assert doc["deployments"]["count"] == 0 and doc["deployments"]["note"]
    cpu = [r for r in doc["resources"] if r["name"] == "host.cpu.percent"]
    assert cpu and cpu[0]["samples"] >= 3 and 0 <= cpu[0]["mean"] <= cpu[0]["peak"] <= 100

    md = cli_reports["md"].read_text()
    assert md.startswith("# Vigil host report: test-host")
    assert "| iris-server | signal SIGKILL | 1 |" in md

    assert cli_reports["html"].read_text().count('<svg class="chart"') >= 3

    models = list(csv.DictReader((cli_reports["csv"] / "models.csv").open()))
    assert models[0]["model"] == "iris" and int(models[0]["runs"]) >= 5


def test_api_serves_the_same_report(history: tuple[RunningAgent, Path]) -> None:
    agent, _ = history
    code, ctype, body = _request(agent, "/api/v1/report?since=1h")
    assert code == 200 and ctype.startswith("application/json")
    doc = json.loads(body)
    assert errors(doc, load_schema()) == []
    assert doc["host"] == "test-host" and doc["models"][0]["name"] == "iris"
    assert doc["window"]["until_ms"] - doc["window"]["since_ms"] == 3_600_000

    code, ctype, body = _request(agent, "/api/v1/report?since=1h&format=html")
    assert code == 200 and ctype.startswith("text/html") and "<svg" in body
    code, ctype, body = _request(agent, "/api/v1/report?format=md")
    assert code == 200 and ctype.startswith("text/markdown") and body.startswith("# Vigil")

    read_token = (agent.data_dir / "api-token.read").read_text().strip()
    assert _request(agent, "/api/v1/report", token=read_token)[0] == 200
    code, _, body = _request(agent, "/api/v1/report?since=soon")
    assert code == 400 and "since" in json.loads(body)["error"]
    code, _, body = _request(agent, "/api/v1/report?format=csv")
    assert code == 400 and "vigil report --format csv" in json.loads(body)["error"]
    assert agent.get("/api/v1/report", token=None)[0] == 401


def test_deployments_of_an_ollama_model(tmp_path: Path) -> None:
    # A new digest for the same tag is a deployment; its lead time runs from Ollama's own
    # modified_at (set here to a minute ago) to the first ok run on it.
    with fake_llm("--ttft-ms", "1", "--itl-ms", "1", "--tokens", "2", "--model", "llama3") as url:
        cfg = write_config(
            tmp_path,
            f"""
[[model]]
name = "llama3"
protocol = "ollama"
url = "{url}"
interval = "200ms"
jitter = "0s"
[model.canary]
max_tokens = 2
""",
        )
        with running_agent(cfg) as agent:

            def artifacts() -> list[dict[str, Any]]:
                return agent.get("/api/v1/events?kind=model.artifact")[1]["events"]

            first = wait_for(artifacts, 30, what="the first artifact event")[0]["data"]
            assert first["artifact_kind"] == "ollama_digest"
            pulled = time.time() - 60
            stamp = datetime.fromtimestamp(pulled, UTC).isoformat().replace("+00:00", "Z")
            control_fake(url, revision="rev-2", modified_at=stamp)
            wait_for(lambda: len(artifacts()) >= 2, 30, what="the new digest seen")
            code, _, body = _request(agent, "/api/v1/report?since=1h")
            assert code == 200
    dep = json.loads(body)["deployments"]
    assert dep["count"] == 1, dep
    row = dep["rows"][0]
    assert row["artifact_kind"] == "ollama_digest"
    assert row["artifact"] != row["previous_artifact"] == first["artifact"]
    assert row["artifact_time_ms"] == pytest.approx(pulled * 1000, abs=1)
    # Verified by the first ok run after the change, a few hundred ms after it was seen.
    assert 60_000 <= row["lead_time_ms"] < 90_000


def test_deployments_of_a_real_onnx_model(tmp_path: Path) -> None:
    from tests import onnx_models

    model = onnx_models.linear(tmp_path / "clf.onnx")
    first = hashlib.sha256(model.read_bytes()).hexdigest()
    cfg = write_config(
        tmp_path,
        f"""
[[model]]
name = "clf"
protocol = "onnx"
url = "file://{model}"
interval = "200ms"
timeout = "10s"
jitter = "0s"
""",
    )
    with running_agent(cfg) as agent:

        def artifacts() -> list[dict[str, Any]]:
            return agent.get("/api/v1/events?kind=model.artifact")[1]["events"]

        wait_for(artifacts, 30, what="the first artifact event")
        # A new model version is published the way deploy tools do: written aside, renamed over.
        onnx_models.linear(tmp_path / "next.onnx", scale=2.0).replace(model)
        second = hashlib.sha256(model.read_bytes()).hexdigest()
        assert second != first
        wait_for(lambda: len(artifacts()) >= 2, 30, what="the new artifact seen")
        wait_for(
            lambda: agent.get("/api/v1/models")[1]["models"][0]["last_run"]["category"] == "ok",
            what="an ok run on the new model",
        )
        code, _, body = _request(agent, "/api/v1/report?since=1h")
        assert code == 200
        live = json.loads(body)
        assert agent.stop() == 0
    dep = live["deployments"]
    assert dep["count"] == 1 and dep["note"] is None
    row = dep["rows"][0]
    assert (row["model"], row["artifact"], row["previous_artifact"]) == ("clf", second, first)
    assert row["artifact_kind"] == "sha256"
    assert row["verified_ms"] >= row["ts_ms"] and row["lead_time_ms"] >= 0
    assert dep["median_lead_time_ms"] == row["lead_time_ms"]

    # The stopped agent's data dir, read directly: the same deployment, the host and the model
    # list from the events the agent recorded, and nothing written.
    assert not (agent.data_dir / "api.json").exists()
    db = agent.data_dir / "vigil.db"
    before = db.stat().st_mtime_ns
    out = _vigil("report", "--db", str(db), "--since", "1h", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert errors(doc, load_schema()) == []
    assert doc["host"] == "test-host"
    assert (doc["monitoring"]["source"], doc["monitoring"]["known_models"]) == ("events", ["clf"])
    assert doc["deployments"]["rows"] == dep["rows"]
    assert doc["models"][0]["runs"] >= live["models"][0]["runs"] and doc["audit"]["ok"]
    assert db.stat().st_mtime_ns == before  # read-only


def _chromium(*args: str, profile: Path) -> str:
    if CHROMIUM is None:
        pytest.skip(
            "Debian package chromium is not installed; scripts/debian-deps.sh installs it "
            "when run as root or with passwordless sudo"
        )
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


# Appended to a copy of the report (whose own CSP forbids scripts): after layout, it measures
# every chart and writes what it found into the DOM, which --dump-dom then prints. Positions and
# colours are the rendered ones (bounding boxes, computed styles), not the markup's numbers.
MEASURE = """<script>
const texts = (s, sel) => [...s.querySelectorAll(sel)].map((t) => t.textContent);
const boxes = (s, sel, side) => [...s.querySelectorAll(sel)].map(
  (e) => e.getBoundingClientRect()[side]);
const look = (e) => {
  const cs = getComputedStyle(e);
  const paint = e.tagName === "polyline" || e.tagName === "line" ? cs.stroke : cs.fill;
  return paint + "/" + (cs.strokeDasharray === "none" ? "" : cs.strokeDasharray);
};
const charts = [...document.querySelectorAll("svg.chart")].map((s) => {
  const box = s.getBoundingClientRect();
  return {label: s.getAttribute("aria-label"), width: box.width, height: box.height,
          lines: s.querySelectorAll("polyline.series, circle.series").length,
          bars: [...s.querySelectorAll("rect.bar")].map((b) => ({
            key: b.dataset.series, width: b.getBoundingClientRect().width})),
          yticks: texts(s, "text.ytick"), ymarks: boxes(s, ".ymark", "y"),
          xticks: texts(s, "text.xtick"), xmarks: boxes(s, ".xmark", "x"),
          styles: [...s.querySelectorAll("[data-series]")].map((e) => [e.dataset.series, look(e)])};
});
const headings = [...document.querySelectorAll("h2, h3")].map((h) => h.textContent);
const pre = document.createElement("pre");
pre.id = "measured";
pre.textContent = JSON.stringify({title: document.title, charts, headings,
  text: document.body.innerText});
document.body.appendChild(pre);
</script>"""


def _measure(page: Path, tmp_path: Path) -> dict[str, Any]:
    """Load a copy of ``page`` with MEASURE in headless Chromium; what MEASURE found."""
    original = page.read_text()
    measured = tmp_path / "measured.html"
    probe = original.replace(f'<meta http-equiv="Content-Security-Policy" content="{CSP}">', "")
    measured.write_text(probe.replace("</body>", MEASURE + "</body>"))
    dom = _chromium("--dump-dom", measured.as_uri(), profile=tmp_path / "profile")
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    result: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return result


def _even(positions: list[float]) -> bool:
    gaps = [b - a for a, b in itertools.pairwise(positions)]
    return bool(gaps) and min(gaps) > 0 and max(gaps) - min(gaps) <= 0.5


def _check_charts(charts: dict[str, dict[str, Any]]) -> None:
    """Every chart as rendered: distinct, evenly spaced ticks on both axes (the availability
    chart has model names for rows), every bar visible, one look per series key and one key
    per look across all charts."""
    looks: dict[str, set[str]] = {}
    keys: dict[str, set[str]] = {}
    for label, c in charts.items():
        assert c["width"] > 300 and c["height"] > 50, (label, c)
        axes = [("x", c["xticks"], c["xmarks"])]
        if not label.startswith("Availability"):
            axes.append(("y", c["yticks"], c["ymarks"]))
        for axis, ticks, marks in axes:
            assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), (label, axis, ticks)
            assert len(marks) == len(ticks), (label, axis, marks)
            assert len(ticks) >= 3 or axis == "x", (label, ticks)
            assert _even(sorted(marks)), (label, axis, marks)
        for bar in c["bars"]:
            assert bar["width"] >= 1.5, (label, bar)  # 0 % too is a visible mark
        for key, look in c["styles"]:
            looks.setdefault(key, set()).add(look)
            keys.setdefault(look, set()).add(key)
    assert all(len(v) == 1 for v in looks.values()), looks
    assert all(len(v) == 1 for v in keys.values()), keys


def test_html_report_loads_in_headless_chromium(
    cli_reports: dict[str, Path], tmp_path: Path
) -> None:
    page = cli_reports["html"]
    original = page.read_text()

    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert "<title>Vigil report: test-host</title>" in dom
    assert dom.count('<svg class="chart"') == original.count('<svg class="chart"') >= 3
    # A young agent's history fits one 5-minute bucket: a point rather than a line.
    assert ('class="series"' in dom) and "Availability per model" in dom

    result = _measure(page, tmp_path)
    assert result["title"] == "Vigil report: test-host"
    charts = {c["label"]: c for c in result["charts"]}
    _check_charts(charts)
    assert [b["key"] for b in charts["Availability per model"]["bars"]] == ["model:iris"]
    latency = next(c for label, c in charts.items() if label.startswith("e2e latency p95"))
    assert latency["lines"] == 1
    assert charts["Host CPU and memory (%)"]["lines"] == 2
    assert charts["Process CPU (%)"]["lines"] == 1  # the supervised iris-server
    assert "Process events" in result["headings"]
    assert "none in this window" not in result["text"]


def test_every_chart_of_a_full_report_in_headless_chromium(tmp_path: Path) -> None:
    # Models at 100 %, 50 % and 0 % and one never probed, two latency metrics, two GPUs,
    # a process at hundredths of a percent of CPU, and control characters in the texts.
    from agent.report import render
    from tests.report_samples import chart_report

    page = tmp_path / "full.html"
    page.write_text(render(chart_report(tmp_path), "html"), encoding="utf-8")
    result = _measure(page, tmp_path)
    charts = {c["label"]: c for c in result["charts"]}
    assert len(charts) == 7, list(charts)
    _check_charts(charts)
    bars = {b["key"]: b["width"] for b in charts["Availability per model"]["bars"]}
    assert set(bars) == {"model:dead", "model:flaky", "model:steady"}
    assert 1.5 <= bars["model:dead"] < 4 and abs(bars["model:flaky"] * 2 - bars["model:steady"]) < 1
    assert charts["Process CPU (%)"]["yticks"] == [
        "0.000 %",
        "0.005 %",
        "0.010 %",
        "0.015 %",
        "0.020 %",
    ]
    # A model's bar and its lines on both latency charts are drawn in one colour.
    look = {k: v for c in charts.values() for k, v in c["styles"]}
    bar_look = dict(charts["Availability per model"]["styles"])["model:steady"]
    assert look["model:steady"].split("/")[0] == bar_look.split("/")[0]
    assert result["title"] == "Vigil report: gpu?]0;pwned?-01"
    assert "Process events" in result["headings"]
