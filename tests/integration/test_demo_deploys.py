"""`vigil demo` shows deploys (issue 16): the demo agent's model server reads its model through
the `current` link; deploying the bundled broken version rolls back (the golden check fails),
paging through the demo's receiver, and the model keeps answering as v1; deploying v3 (v1
re-exported) is promoted. The DORA four keys then say exactly that, alike in the API, /metrics
and the report: one change promoted, one failed, a rate of 0.5, the lead time and the time to
restore of those two deploys."""

from __future__ import annotations

import json
import shlex
import subprocess
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import build_parser
from agent.cli.api_client import ApiClient
from agent.cli.demo import (
    MODEL_NAME,
    NOTIFICATIONS_FILE,
    deploy_instructions,
    start_demo_agent,
    stop_agent,
)
from tests.helpers import child_env, vigil_cmd, wait_for

pytestmark = pytest.mark.integration

CANARY = {
    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}


def infer(model_url: str) -> list[float] | None:
    """The model's answer to the demo's canary input, None while it does not answer."""
    req = urllib.request.Request(
        f"{model_url}/v2/models/{MODEL_NAME}/infer",
        data=json.dumps(CANARY).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return list(json.loads(resp.read())["outputs"][0]["data"])
    except OSError:
        return None


def deploy(workdir: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vigil_cmd(
            "deploy",
            MODEL_NAME,
            "--artifact",
            str(workdir / "versions" / version),
            "--wait",
            "--config",
            str(workdir / "vigil.toml"),
        ),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )


def notifications(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def ok_runs(client: ApiClient) -> int:
    runs = client.get(f"/api/v1/probe_runs?model={MODEL_NAME}&limit=20")["probe_runs"]
    return sum(1 for r in runs if r["category"] == "ok")


def test_a_broken_version_rolls_back_a_good_one_is_promoted_and_the_keys_say_so(
    tmp_path: Path,
) -> None:
    proc, url, token = start_demo_agent(tmp_path)
    inbox = tmp_path / NOTIFICATIONS_FILE
    link = tmp_path / "current"
    config = tomllib.loads((tmp_path / "vigil.toml").read_text(encoding="utf-8"))
    model_url = config["model"][0]["url"]
    try:
        client = ApiClient(url, token)
        # Enough answers for a baseline: the golden check compares with v1's own answers.
        wait_for(lambda: ok_runs(client) >= 3, 60, what="three ok runs of the demo model")
        v1_answer = infer(model_url)
        assert v1_answer is not None
        assert link.resolve() == (tmp_path / "versions" / "v1.onnx").resolve()

        # The printed commands name this demo's paths, and each parses as the CLI's.
        text = deploy_instructions(tmp_path, url)
        commands = [ln.strip() for ln in text.splitlines() if ln.startswith("  vigil ")]
        assert len(commands) == 3 and str(tmp_path / "versions" / "v2-broken.onnx") in text
        for line in commands:
            build_parser().parse_args(shlex.split(line)[1:])

        # v2 answers differently: rolled back (exit 1), v1 serves and answers as before.
        out = deploy(tmp_path, "v2-broken.onnx")
        assert out.returncode == 1, out.stdout + out.stderr
        assert "rolled_back" in out.stdout.splitlines()[-1], out.stdout
        assert link.resolve() == (tmp_path / "versions" / "v1.onnx").resolve()
        assert wait_for(lambda: infer(model_url), 30, what="v1 answering again") == v1_answer
        failed = client.get(f"/api/v1/deployments?model={MODEL_NAME}&limit=1")["deployments"][0]
        assert failed["state"] == "rolled_back" and "golden" in failed["error"]
        sent = wait_for(
            lambda: [
                n
                for n in notifications(inbox)
                if n["kind"] == "firing"
                and any(a["labels"].get("alertname") == "deploy_failed" for a in n["alerts"])
            ],
            30,
            what="the deploy_failed notification at the demo's receiver",
        )
        assert sent

        # v3 is v1 re-exported: same answers, promoted (exit 0).
        wait_for(lambda: ok_runs(client) >= 3, 60, what="v1 probed ok again")
        out = deploy(tmp_path, "v3.onnx")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "promoted" in out.stdout.splitlines()[-1], out.stdout
        assert link.resolve() == (tmp_path / "versions" / "v3.onnx").resolve()
        assert wait_for(lambda: infer(model_url), 30, what="v3 answering") == v1_answer
        promoted = client.get(f"/api/v1/deployments?model={MODEL_NAME}&limit=1")["deployments"][0]
        assert promoted["state"] == "promoted"

        # The four keys, from the two deploys' own records.
        v3 = client.get(f"/api/v1/deployments/{promoted['id']}")["deployment"]
        lead_ms = v3["finished_ms"] - v3["versions"]["to"]["created_ms"]
        mtime_ms = (tmp_path / "versions" / "v3.onnx").stat().st_mtime_ns // 1_000_000
        assert v3["versions"]["to"]["created_ms"] == mtime_ms  # the copy's creation
        restore_ms = failed["checks"]["restored_ms"] - failed["checks"]["failed_ms"]
        assert 0 < restore_ms < 60_000
        kpi = client.get(f"/api/v1/deployments/kpi?model={MODEL_NAME}&since=1d")
        host = kpi["host"]
        assert (host["changes"], host["promoted"], host["failed_changes"]) == (2, 1, 1)
        assert host["change_failure_rate"] == 0.5 and host["per_day"] == 1.0
        assert host["lead_time_median_ms"] == lead_ms
        assert host["time_to_restore_median_ms"] == restore_ms
        assert host["restored"] == 1 and host["not_restored"] == 0
        assert [m["model"] for m in kpi["models"]] == [MODEL_NAME]
        rows = {r["id"]: r for r in kpi["deployments"]}
        assert rows[failed["id"]]["failure"] == "rolled back"
        assert (
            rows[failed["id"]]["requested_by"] and rows[promoted["id"]]["lead_time_ms"] == lead_ms
        )

        metrics = _get(url, token, "/metrics")
        got = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(metrics)
            for s in f.samples
        }

        def value(name: str, **labels: str) -> float | None:
            return got.get((name, tuple(sorted({"model": MODEL_NAME, **labels}.items()))))

        total = "vigil_deployments_total"
        assert value(total, operation="deploy", outcome="promoted") == 1
        assert value(total, operation="deploy", outcome="rolled_back") == 1
        assert value("vigil_deploy_change_failure_ratio") == 0.5
        assert value("vigil_deploy_lead_time_seconds", quantile="0.5") == lead_ms / 1000
        assert value("vigil_deploy_time_to_restore_seconds", quantile="0.5") == restore_ms / 1000
        assert value("vigil_deploy_in_progress", state="baking") == 0

        report = json.loads(_get(url, token, "/api/v1/report?since=1d&format=json"))
        assert report["schema_version"] == 5
        assert report["deploys"]["host"] == host
        assert [r["state"] for r in report["deploys"]["rows"]] == ["rolled_back", "promoted"]
    finally:
        stop_agent(proc)
    assert proc.returncode == 0


def _get(url: str, token: str, path: str) -> str:
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()
