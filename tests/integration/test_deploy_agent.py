"""Deploys in a real agent: a real model server reading its model through the ``current``
symlink, switched, restarted, baked through the canary gate, promoted or rolled back.

The server is the demo KServe V2 server (``tests/fakes/versioned_server.py``: a version's
directory may hold ``delay_ms``, a slower version). Versions are directories holding a real
ONNX model (``tests/onnx_models.linear``): the same weights in two directories with different
notes are two versions with equal answers; other weights answer differently.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.deploy_support import (
    ALICE,
    BOB,
    call,
    deploy_events,
    deployment,
    ended,
    events,
    free_port,
    in_state,
    model_up,
    reaper,
    srv_model_toml,
    srv_pid,
    version,
    vigil,
)
from tests.helpers import running_agent, wait_for, write_config

pytestmark = pytest.mark.integration


def config(
    tmp: Path, link: Path, port: int, deploy: str = "", extra: str = "", bake: str = "1500ms"
) -> Path:
    return write_config(tmp, srv_model_toml(link, port, bake) + f"{deploy}\n{extra}\n")


@contextmanager
def growing(directory: Path) -> Iterator[Path]:
    """A version directory whose weights are still being written (a copy in progress)."""
    directory.mkdir(parents=True)
    weights = directory / "weights.bin"
    weights.write_bytes(b"\0" * (8 << 20))
    stop = threading.Event()

    def append() -> None:
        with weights.open("ab") as f:
            while not stop.is_set():
                f.write(b"\1" * 65536)
                f.flush()
                time.sleep(0.001)

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    size = weights.stat().st_size
    wait_for(lambda: weights.stat().st_size > size, 5, what="the copy to be under way")
    try:
        yield directory
    finally:
        stop.set()
        writer.join(5)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path, int]:
    """(tmp, link, port): v1 in place behind the link before the agent starts."""
    v1 = version(tmp_path, "v1")
    link = tmp_path / "current"
    link.symlink_to(v1)
    return tmp_path.resolve(), link, free_port()


def test_promote_golden_and_latency_rollbacks_and_an_operators_rollback(
    site: tuple[Path, Path, int],
) -> None:
    tmp, link, port = site
    v1 = link.resolve()
    v2 = version(tmp, "v2")  # same weights: same answers
    bad = version(tmp, "v3-other-weights", scale=2.0)
    slow = version(tmp, "v4-slow", delay_ms=400)
    cfg = config(tmp, link, port)
    with reaper(tmp), running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 30, what="clf up")
        # What was there before Vigil deployed anything: recorded, so it is known-good.
        out = vigil(cfg, "deploy", "record", "clf", "--artifact", str(v1), "--actor", "setup")
        assert out.returncode == 0, out.stderr
        pid_before = srv_pid(agent)

        # 1. A good version is promoted (--wait exits 0), through a planned restart.
        out = vigil(cfg, "deploy", "clf", "--artifact", str(v2), "--wait", "--notes", "same")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "promoted" in out.stdout.splitlines()[-1]
        assert link.resolve() == v2
        code, listed = call(agent, "GET", "/api/v1/deployments?model=clf")
        promoted = listed["deployments"][0]
        assert promoted["state"] == "promoted" and promoted["strategy"] == "in-place"
        dep = deployment(agent, promoted["id"])
        assert dep["versions"]["to"]["path"] == str(v2) and dep["versions"]["to"]["known_good"]
        assert dep["versions"]["from"]["path"] == str(v1)
        gate = {c["check"]: c for c in dep["checks"]["verdict"]["checks"]}
        assert gate["golden"]["ok"] is True and gate["canaries"]["ok"] is True
        assert dep["checks"]["baseline"]["answer_sha256"] == gate["golden"]["sha256"]
        assert deploy_events(agent, dep["id"]) == [
            "deploy.requested",
            "deploy.switching",
            "deploy.starting",
            "deploy.baking",
            "deploy.promoting",
            "deploy.promoted",
        ]
        new_pid = srv_pid(agent)
        assert new_pid is not None and new_pid != pid_before
        action = [e for e in events(agent, "process.action") if e["data"].get("reason")][-1]
        assert action["data"]["reason"] == f"deploy #{dep['id']} by {dep['requested_by']}"
        # The restart was planned: the model was "starting", never down, no incident.
        planned = [
            e
            for e in events(agent, "model.state_changed")
            if e["data"].get("planned") == action["data"]["reason"]
        ]
        assert planned and planned[0]["data"]["to"] == "starting"
        code, inc = agent.get("/api/v1/incidents")
        assert not [i for i in inc["incidents"] if i["kind"] == "model_down"]

        # 2. Other weights answer differently: the golden check fails, back to v2, paged.
        out = vigil(cfg, "deploy", "clf", "--artifact", str(bad), "--wait")
        assert out.returncode == 1, out.stdout + out.stderr
        assert "rolled_back" in out.stdout.splitlines()[-1]
        assert link.resolve() == v2
        code, listed = call(agent, "GET", "/api/v1/deployments?model=clf&limit=1")
        failed = deployment(agent, listed["deployments"][0]["id"])
        assert failed["state"] == "rolled_back"
        assert failed["versions"]["rollback"]["path"] == str(v2)
        assert "golden" in failed["error"]
        verdict = failed["checks"]["verdict"]["checks"]
        golden = next(c for c in verdict if c["check"] == "golden")
        assert golden["ok"] is False and golden["got_sha256"] != golden["expected_sha256"]
        assert failed["checks"]["canaries"]  # the answers it gave, kept as evidence
        code, inc = agent.get("/api/v1/incidents?state=open")
        paged = [i for i in inc["incidents"] if i["kind"] == "deploy_failed"]
        assert len(paged) == 1 and paged[0]["id"] == failed["incident_id"]
        assert paged[0]["severity"] == "critical" and paged[0]["subject"] == "model:clf"
        assert paged[0]["evidence"]["verdict"]["outcome"] == "fail"
        alert = wait_for(
            lambda: [
                a
                for a in call(agent, "GET", "/api/v1/alerts?state=firing")[1]["alerts"]
                if a["rule"] == "deploy_failed"
            ],
            15,
            what="the deploy_failed alert firing",
        )
        assert alert[0]["severity"] == "critical"
        wait_for(lambda: srv_pid(agent) is not None and model_up(agent), 30, what="v2 serving")

        # 3. A slower version: the latency check fails (p95 against v2's own baseline).
        code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(slow)})
        assert code == 202, body
        done = ended(agent, body["deployment"]["id"])
        assert done["state"] == "rolled_back", done
        latency = next(c for c in done["checks"]["verdict"]["checks"] if c["check"] == "latency")
        assert latency["ok"] is False and latency["e2e_ms"]["p95"] > 350
        # Requested a moment after v2 came back: v2 was probed for a baseline of its own.
        assert latency["baseline_runs"] == done["checks"]["baseline"]["runs"] >= 3
        assert link.resolve() == v2
        # The older deploy_failed incident is superseded by this one.
        code, inc = agent.get("/api/v1/incidents?state=open")
        assert [i["id"] for i in inc["incidents"] if i["kind"] == "deploy_failed"] == [
            done["incident_id"]
        ]

        # 4. An operator's rollback deploys the last known-good version other than v2: v1.
        wait_for(lambda: model_up(agent), 30, what="v2 serving again")
        out = vigil(cfg, "rollback", "clf", "--wait")
        assert out.returncode == 0, out.stdout + out.stderr
        assert link.resolve() == v1
        out = vigil(cfg, "deploy", "versions", "clf", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        by_path = {v["path"]: v for v in doc["versions"]}
        assert by_path[str(v1)]["current"] and by_path[str(v1)]["known_good"]
        assert not by_path[str(v2)]["known_good"]  # rolled back from by an operator
        assert by_path[str(bad)]["outcome"] == "rolled_back"
        # The promotion resolved the deploy_failed incident: the model is fine again.
        code, inc = agent.get("/api/v1/incidents?state=open")
        assert not [i for i in inc["incidents"] if i["kind"] == "deploy_failed"]
        out = vigil(cfg, "deploy", "list")
        assert out.returncode == 0 and len(out.stdout.splitlines()) == 5, out.stdout


def test_approval_flow_and_a_second_deploy_refused(site: tuple[Path, Path, int]) -> None:
    tmp, link, port = site
    v1 = link.resolve()
    v2 = version(tmp, "v2")
    cfg = config(tmp, link, port, deploy="require_approval = true")
    with reaper(tmp), running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 30, what="clf up")
        code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
        assert code == 202, body
        dep = body["deployment"]
        assert dep["state"] == "awaiting_approval" and dep["approval_required"]
        # A second deploy while one is in flight is refused, naming it.
        code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)}, BOB)
        assert code == 409
        assert f"deployment {dep['id']} in flight" in body["error"]
        assert "awaiting_approval" in body["error"] and ALICE in body["error"]
        out = vigil(cfg, "deploy", "clf", "--artifact", str(v2))
        assert out.returncode == 2 and "refused" in out.stderr and "in flight" in out.stderr
        # Nothing moves until approved, and not by the requester.
        assert link.resolve() == v1
        code, body = call(agent, "POST", f"/api/v1/deployments/{dep['id']}/approve")
        assert code == 403 and "approver_must_differ" in body["error"]
        code, body = call(agent, "POST", f"/api/v1/deployments/{dep['id']}/approve", None, BOB)
        assert code == 200, body
        done = ended(agent, dep["id"])
        assert done["state"] == "promoted", done
        assert done["approved_by"] == BOB and done["requested_by"] == ALICE
        assert done["approved_ms"] >= done["requested_ms"]
        assert link.resolve() == v2
        kinds = deploy_events(agent, dep["id"])
        assert kinds[:3] == ["deploy.requested", "deploy.awaiting_approval", "deploy.approved"]
        approved = next(e for e in events(agent, "deploy.approved"))
        assert approved["data"]["evidence"]["by"] == BOB
        code, body = call(agent, "POST", f"/api/v1/deployments/{dep['id']}/approve", None, BOB)
        assert code == 409 and "not awaiting approval" in body["error"]


def test_an_agent_killed_during_the_bake_resumes_it(site: tuple[Path, Path, int]) -> None:
    """The documented rule: the new version serves (the link points at it, the process was
    started after the switch), so the next agent resumes the bake from its stored start,
    without restarting the process, and promotes it."""
    tmp, link, port = site
    v2 = version(tmp, "v2")
    cfg = config(tmp, link, port, bake="8s")
    with reaper(tmp):
        with running_agent(cfg) as agent:
            wait_for(lambda: model_up(agent), 30, what="clf up")
            code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
            assert code == 202, body
            dep_id = body["deployment"]["id"]
            baking = in_state(agent, dep_id, "baking")
            pid = srv_pid(agent)
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(10)
            (agent.data_dir / "api.json").unlink()  # left by the killed agent
        assert pid is not None and psutil.pid_exists(pid)  # the server outlives the agent
        with running_agent(cfg) as agent:
            done = ended(agent, dep_id)
            assert done["state"] == "promoted", done
            assert done["checks"]["bake_started_ms"] == baking["checks"]["bake_started_ms"]
            assert srv_pid(agent) == pid  # adopted, never restarted
            assert "deploy.resumed" in deploy_events(agent, dep_id)
            assert link.resolve() == v2


def test_bad_inputs_are_refused_and_nothing_is_switched(site: tuple[Path, Path, int]) -> None:
    tmp, link, port = site
    v1 = link.resolve()
    crash_port = free_port()
    crashy = [sys.executable, "-c", "import sys; sys.exit(3)"]
    other_link = tmp / "other-current"
    other_link.symlink_to(v1)
    not_a_link = tmp / "plain-dir"
    not_a_link.mkdir()
    extra = f"""
[[process]]
name = "crashy"
command = {json.dumps(crashy)}
quarantine_after = 1
backoff_initial = "50ms"
backoff_jitter = 0.0

[[model]]
name = "q"
protocol = "tcp"
url = "tcp://127.0.0.1:{crash_port}"
process = "crashy"
interval = "1s"
[model.deploy]
link = "{other_link}"
bake = "3s"

[[model]]
name = "loose"
protocol = "tcp"
url = "tcp://127.0.0.1:{crash_port}"

[[model]]
name = "plain"
protocol = "tcp"
url = "tcp://127.0.0.1:{crash_port}"
interval = "1s"
[model.deploy]
link = "{not_a_link}"
process = "srv"
bake = "3s"
"""
    cfg = config(tmp, link, port, extra=extra)
    unreadable = version(tmp, "v-unreadable")
    (unreadable / "model.onnx").chmod(0)
    with reaper(tmp), running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 30, what="clf up")

        def refused(model: str, artifact: str, status: int, words: str) -> None:
            code, body = call(
                agent, "POST", f"/api/v1/models/{model}/deploy", {"artifact": artifact}
            )
            assert code == status and words in body["error"], (code, body)

        refused("clf", str(tmp / "nope"), 400, "expected a readable model file or directory")
        if os.geteuid() != 0:  # root reads anything
            refused("clf", str(unreadable), 400, "model.onnx")
        refused("clf", "relative/path", 400, "expected the absolute path")
        with growing(tmp / "versions" / "v-being-copied") as copying:
            refused("clf", str(copying), 400, "changed while it was hashed")
        refused("nobody", str(v1), 404, "no model named 'nobody'")
        refused("loose", str(v1), 400, "has no supervised process")
        refused("plain", str(v1), 400, "is not a symlink")
        wait_for(
            lambda: any(
                p["name"] == "crashy" and p["state"] == "quarantined"
                for p in agent.get("/api/v1/processes")[1]["processes"]
            ),
            30,
            what="crashy quarantined",
        )
        refused("q", str(v1), 409, "is quarantined: release it first")
        out = vigil(cfg, "deploy", "clf", "--artifact", str(tmp / "nope"))
        assert out.returncode == 2 and "no such file" in out.stderr, out.stderr
        out = vigil(cfg, "deploy", "loose", "--artifact", str(v1))
        assert out.returncode == 2 and "has no supervised process" in out.stderr, out.stderr
        code, body = call(
            agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v1), "bake": "500ms"}
        )
        assert code == 400 and "at least min_good_canaries x interval" in body["error"]
        code, body = call(agent, "POST", "/api/v1/models/clf/rollback")
        assert code == 409 and "no known-good version" in body["error"]
        # Nothing was stored, switched or restarted.
        assert link.resolve() == v1 and other_link.resolve() == v1
        code, body = call(agent, "GET", "/api/v1/deployments")
        assert body["deployments"] == []
        assert not events(agent, "deploy.")
