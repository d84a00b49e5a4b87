"""Prometheus and Grafana: a real Prometheus server (Debian's package) scrapes a real agent on
loopback and answers with the agent's values; the shipped alert rules pass promtool's check and
its rule unit tests; every metric the Grafana dashboard queries is one the agent exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, RunningAgent, fake_llm, running_agent, wait_for, write_config

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's prometheus package is not installed (scripts/debian-deps.sh installs it)",
)


@contextmanager
def agent_with_llm(tmp_path: Path) -> Iterator[RunningAgent]:
    with fake_llm("--ttft-ms", "30", "--itl-ms", "5", "--tokens", "8", "--model", "llama") as url:
        cfg = write_config(
            tmp_path,
            f"""
[[model]]
name = "llama"
protocol = "openai"
url = "{url}"
interval = "300ms"
jitter = "0s"
timeout = "5s"
""",
            sample_interval="300ms",
        )
        with running_agent(cfg) as agent:
            yield agent


def scrape(agent: RunningAgent) -> dict[str, Any]:
    req = urllib.request.Request(
        agent.url + "/metrics", headers={"Authorization": f"Bearer {agent.token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


@contextmanager
def prometheus(tmp_path: Path, agent: RunningAgent) -> Iterator[str]:
    assert PROMETHEUS is not None
    token_file = agent.data_dir / "api-token.read"
    target = urllib.parse.urlsplit(agent.url).netloc
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        f"""
global:
  scrape_interval: 500ms
  evaluation_interval: 1s
rule_files:
  - {DEPLOY / "prometheus" / "alerts.yml"}
scrape_configs:
  - job_name: vigil
    authorization:
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
"""
    )
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                "--web.listen-address=127.0.0.1:0",  # the bound port is read from its log
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:

        def bound() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log.read_text()}")
            m = re.search(r'msg="Listening on" address=(127\.0\.0\.1:\d+)', log.read_text())
            return f"http://{m.group(1)}" if m else None

        base = wait_for(bound, 30, what="prometheus to listen")

        def ready() -> bool:
            # Queries get 503 until the TSDB is open.
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(ready, 30, what="prometheus to be ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_metrics_have_consistent_names_and_types(tmp_path: Path) -> None:
    with agent_with_llm(tmp_path) as agent:

        def observed_twice() -> dict[str, Any] | None:
            fams = scrape(agent)
            ttft = fams.get("vigil_probe_ttft_seconds")
            counts = [s.value for s in ttft.samples if s.name.endswith("_count")] if ttft else []
            collected = "vigil_host_cpu_percent" in fams  # the first host collection is in
            return fams if counts and counts[0] >= 2 and collected else None

        fams = wait_for(observed_twice, what="two TTFT observations")
    types = {name: fam.type for name, fam in fams.items()}
    assert types["vigil_probe_ttft_seconds"] == "histogram"
    assert types["vigil_probe_itl_seconds"] == "histogram"
    assert types["vigil_probe_e2e_seconds"] == "histogram"
    assert types["vigil_probe_runs"] == "counter"
    assert types["vigil_model_up"] == "gauge"
    assert types["vigil_host_cpu_percent"] == "gauge"
    assert all(name.startswith("vigil_") for name in fams)
    # The fake answers its first token after 30 ms: nothing under 25 ms, everything by 50 ms.
    buckets = {
        s.labels.get("le"): s.value
        for s in fams["vigil_probe_ttft_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.025"] == 0 and buckets["+Inf"] >= 2
    up = [s for s in fams["vigil_model_up"].samples if s.labels["model"] == "llama"]
    assert up and up[0].value == 1.0 and up[0].labels["protocol"] == "openai"
    runs = {
        s.labels["category"]: s.value
        for s in fams["vigil_probe_runs"].samples
        if s.name == "vigil_probe_runs_total"
    }
    assert runs.get("ok", 0) >= 2


def test_supervised_processes_are_exported(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        """
[[process]]
name = "sleeper"
command = ["sleep", "300"]
restart = "always"
backoff_initial = "50ms"
backoff_jitter = 0.0
stop_timeout = "2s"
""",
        sample_interval="200ms",
    )

    def samples(fams: dict[str, Any], family: str, name: str | None = None) -> dict[str, Any]:
        """The family's samples about process "sleeper", by their other labels."""
        return {
            tuple(sorted((k, v) for k, v in s.labels.items() if k != "process")): s.value
            for s in fams[family].samples
            if s.labels.get("process") == "sleeper" and s.name == (name or family)
        }

    def exported(pid: int) -> dict[str, Any] | None:
        """The families once they describe the incarnation ``pid`` (running, measured)."""
        fams = scrape(agent)
        if not {"vigil_process_up", "vigil_process_rss_bytes"} <= set(fams):
            return None
        status = {p["name"]: p for p in agent.status()["processes"]}.get("sleeper")
        if not status or status["pid"] != pid or not samples(fams, "vigil_process_rss_bytes"):
            return None
        return fams if samples(fams, "vigil_process_up") == {(): 1.0} else None

    def running_pid(not_pid: int | None = None) -> int:
        def check() -> int | None:
            procs = {p["name"]: p for p in agent.status()["processes"]}
            p = procs.get("sleeper")
            ok = p and p["state"] == "running" and p["pid"] not in (None, not_pid)
            return p["pid"] if ok else None

        return wait_for(check, what="sleeper running")

    with running_agent(cfg) as agent:
        pid = running_pid()
        fams = wait_for(lambda: exported(pid), what="the process's metrics")
        types = {name: fams[name].type for name in fams if name.startswith("vigil_process_")}
        assert types["vigil_process_up"] == "gauge"
        assert types["vigil_process_restarts"] == "counter"
        assert types["vigil_process_state"] == "gauge"
        assert types["vigil_process_rss_bytes"] == "gauge"
        assert samples(fams, "vigil_process_restarts", "vigil_process_restarts_total") == {(): 0.0}
        states = samples(fams, "vigil_process_state")
        assert {k[0][1] for k, v in states.items() if v == 1.0} == {"running"}
        assert len(states) > 1 and set(states.values()) == {0.0, 1.0}
        ((_, rss),) = samples(fams, "vigil_process_rss_bytes").items()
        actual = psutil.Process(pid).memory_info().rss
        assert actual / 2 <= rss <= actual * 2, (rss, actual)  # `sleep`'s, a few MB

        # A crash and the supervisor's restart: the counter counts it.
        os.kill(pid, signal.SIGKILL)
        new = running_pid(not_pid=pid)
        fams = wait_for(lambda: exported(new), what="the restarted process's metrics")
        assert samples(fams, "vigil_process_restarts", "vigil_process_restarts_total") == {(): 1.0}


@needs_prometheus
def test_alert_rules_check_and_unit_tests() -> None:
    assert PROMTOOL is not None
    rules = DEPLOY / "prometheus"
    check = subprocess.run(
        [PROMTOOL, "check", "rules", "alerts.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout + test.stderr


@needs_prometheus
def test_prometheus_scrapes_the_agent_and_returns_its_values(tmp_path: Path) -> None:
    with agent_with_llm(tmp_path) as agent, prometheus(tmp_path, agent) as prom:
        up = wait_for(lambda: query(prom, 'up{job="vigil"} == 1') or None, 30, what="a scrape")
        assert up[0]["metric"]["job"] == "vigil"
        model = wait_for(
            lambda: query(prom, 'vigil_model_up{model="llama"}') or None, 30, what="vigil_model_up"
        )
        assert model[0]["value"][1] == "1"
        assert model[0]["metric"]["protocol"] == "openai"
        # Host memory total: Prometheus holds the number the agent reports.
        direct = (
            wait_for(lambda: scrape(agent).get("vigil_host_mem_total_bytes"), what="host memory")
            .samples[0]
            .value
        )
        via = wait_for(lambda: query(prom, "vigil_host_mem_total_bytes") or None, 30, what="mem")
        assert float(via[0]["value"][1]) == direct
        # Quantiles over the TTFT histogram work: the fake's 30 ms first token.
        expr = (
            "histogram_quantile(0.5, sum by (le) "
            '(rate(vigil_probe_ttft_seconds_bucket{model="llama"}[5s])))'
        )
        p50 = wait_for(
            lambda: [r for r in query(prom, expr) if r["value"][1] != "NaN"] or None,
            30,
            what="a TTFT quantile",
        )
        assert 0.025 <= float(p50[0]["value"][1]) <= 0.1
        # The rules loaded into the real server, not just into promtool.
        with urllib.request.urlopen(f"{prom}/api/v1/rules", timeout=10) as resp:
            groups = json.loads(resp.read())["data"]["groups"]
        names = {r["name"] for g in groups for r in g["rules"]}
        assert {"VigilModelDown", "VigilProcessQuarantined", "VigilAgentDown"} <= names


def test_grafana_dashboard_queries_only_exported_metrics(tmp_path: Path) -> None:
    dash = json.loads((DEPLOY / "grafana" / "vigil.json").read_text())
    assert dash["uid"] and dash["panels"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b(vigil_[a-z0-9_]+)", expr):
            used.add(re.sub(r"_(bucket|count|sum|total)$", "", name))
    with agent_with_llm(tmp_path) as agent:
        # Probe results and the first host collection arrive independently: wait for both.
        exported = wait_for(
            lambda: (
                names
                if {"vigil_probe_ttft_seconds", "vigil_host_cpu_percent"}
                <= (names := set(scrape(agent)))
                else None
            ),
            what="probe and host metrics",
        )
    # GPU and process series exist only on hosts with a GPU or supervised processes.
    optional = {n for n in used if n.startswith(("vigil_gpu_", "vigil_process_"))}
    missing = used - exported - optional
    assert not missing, f"dashboard queries metrics the agent does not export: {missing}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
