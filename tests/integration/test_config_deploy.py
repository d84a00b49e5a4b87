"""Config deploys in a real agent: a changed ``[[process]]`` or ``[model.canary]`` of a model
with ``[model.deploy]`` is a deployment of kind ``config``, gated like an artifact deploy.

The server is the demo KServe V2 server (``tests/fakes/versioned_server.py``), whose
environment variable ``DELAY_MS`` makes every inference slower: a config change that the
latency gate must roll back. The config file is rewritten and the agent sent SIGHUP, as an
operator (or a config-management run) would.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import (
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
)
from tests.helpers import RunningAgent, child_env, running_agent, vigil_cmd, wait_for

pytestmark = pytest.mark.integration

SECRET_1, SECRET_2 = "hf_topsecret_one", "hf_topsecret_two"


def write(
    tmp: Path, link: Path, port: int, env: dict[str, str], canary: str = "", bake: str = "1500ms"
) -> Path:
    """The agent's config (written atomically, as config management should)."""
    env_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in env.items())
    srv = srv_model_toml(link, port, bake, f"\n[process.env]\n{env_lines}")
    text = f"""
[agent]
host = "test-host"
data_dir = "{tmp / "data"}"
listen = "127.0.0.1:0"
sample_interval = "200ms"
on_exit = "stop"
{srv}
[model.canary]
{canary}
"""
    cfg = tmp / "vigil.toml"
    part = tmp / ".vigil.toml.tmp"
    part.write_text(text, encoding="utf-8")
    os.replace(part, cfg)
    return cfg


def reload(agent: RunningAgent) -> None:
    agent.proc.send_signal(signal.SIGHUP)


def config_deploys(agent: RunningAgent) -> list[dict[str, Any]]:
    code, body = call(agent, "GET", "/api/v1/deployments?model=clf")
    assert code == 200, body
    return [d for d in body["deployments"] if d["kind"] == "config"]


def next_config_deploy(agent: RunningAgent, before: int) -> dict[str, Any]:
    """The config deployment after the ``before`` ones, once it ended."""
    found = wait_for(
        lambda: len(config_deploys(agent)) > before and config_deploys(agent)[0],
        30,
        what="a config deployment",
    )
    return ended(agent, found["id"], timeout=90)


def config_state(agent: RunningAgent) -> dict[str, Any]:
    code, body = call(agent, "GET", "/api/v1/config")
    assert code == 200, body
    return body


def vigil(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vigil_cmd(*args, "--config", str(cfg)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path, int]:
    v1 = version(tmp_path, "v1")
    link = tmp_path / "current"
    link.symlink_to(v1)
    return tmp_path.resolve(), link, free_port()


def test_a_harmless_env_change_is_promoted_and_a_slow_one_rolled_back(
    site: tuple[Path, Path, int],
) -> None:
    tmp, link, port = site
    cfg = write(tmp, link, port, {"FOO": "1", "HF_TOKEN": SECRET_1})
    with reaper(tmp), running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 30, what="clf up")
        pid = srv_pid(agent)

        # 1. A harmless change (and a rotated secret): a config deploy, promoted.
        write(tmp, link, port, {"FOO": "2", "HF_TOKEN": SECRET_2})
        reload(agent)
        dep = next_config_deploy(agent, 0)
        assert dep["state"] == "promoted", dep
        assert dep["strategy"] == "in-place" and dep["process"] == "srv"
        assert dep["checks"]["operation"] == "config"
        diff = dep["config_diff"]
        assert '-FOO = "1"' in diff and '+FOO = "2"' in diff
        assert '-HF_TOKEN = "(secret)"' in diff and '+HF_TOKEN = "(secret, changed)"' in diff
        assert "--- process srv (running)" in diff and f"+++ process srv ({cfg})" in diff
        gate = {c["check"]: c for c in dep["checks"]["verdict"]["checks"]}
        assert gate["golden"]["ok"] is True and gate["canaries"]["ok"] is True
        assert deploy_events(agent, dep["id"]) == [
            "deploy.requested",
            "deploy.switching",
            "deploy.starting",
            "deploy.baking",
            "deploy.promoting",
            "deploy.promoted",
        ]
        new_pid = srv_pid(agent)
        assert new_pid is not None and new_pid != pid
        # The restart was planned, under the deploy's name: no outage.
        planned = [
            e
            for e in events(agent, "model.state_changed")
            if e["data"].get("planned") == f"config deploy #{dep['id']}"
        ]
        assert planned and planned[0]["data"]["to"] == "starting"
        assert config_state(agent)["file_differs"] is False
        out = vigil(cfg, "deploy", "show", str(dep["id"]))
        assert out.returncode == 0 and '+FOO = "2"' in out.stdout, out.stdout + out.stderr

        # 2. DELAY_MS makes every inference 400 ms slower: the latency gate rolls it back.
        write(tmp, link, port, {"FOO": "2", "HF_TOKEN": SECRET_2, "DELAY_MS": "400"})
        reload(agent)
        bad = next_config_deploy(agent, 1)
        assert bad["state"] == "rolled_back", bad
        assert '+DELAY_MS = "400"' in bad["config_diff"]
        latency = next(c for c in bad["checks"]["verdict"]["checks"] if c["check"] == "latency")
        assert latency["ok"] is False and latency["e2e_ms"]["p95"] > 350
        assert bad["checks"]["file_differs"] is True
        # The previous config runs again: fast answers from a fresh process.
        wait_for(lambda: model_up(agent), 30, what="clf up after the rollback")
        code, runs = agent.get("/api/v1/probe_runs?model=clf&limit=1")
        assert runs["probe_runs"][0]["e2e_ms"] < 200
        state = config_state(agent)
        assert state["file_differs"] is True and state["path"] == str(cfg)
        assert [(r["what"], r["deployment"]) for r in state["rolled_back"]] == [
            ("process srv", bad["id"])
        ]
        rolled = events(agent, "config.rolled_back")
        assert rolled and "the file" in rolled[-1]["message"] and "differs" in rolled[-1]["message"]
        code, inc = agent.get("/api/v1/incidents?state=open")
        failed = [i for i in inc["incidents"] if i["kind"] == "deploy_failed"]
        assert failed and '+DELAY_MS = "400"' in failed[0]["evidence"]["config_diff"]
        out = vigil(cfg, "status")
        assert "config rolled back, file differs: process srv" in out.stdout, out.stdout
        out = vigil(cfg, "status", "--json")
        assert json.loads(out.stdout)["config"]["rolled_back"][0]["deployment"] == bad["id"]

        # 3. Reloading the same file deploys nothing again; the file back as it runs agrees.
        reload(agent)
        wait_for(
            lambda: "config unchanged but for changes held or rolled back" in agent.log(),
            15,
            what="the reload of the rolled-back file",
        )
        assert len(config_deploys(agent)) == 2
        write(tmp, link, port, {"FOO": "2", "HF_TOKEN": SECRET_2})
        reload(agent)
        wait_for(lambda: not config_state(agent)["file_differs"], 15, what="the file agreeing")
        assert len(config_deploys(agent)) == 2

    # No secret reached the database or the audit trail (diffs, events, evidence).
    for path in (tmp / "data").iterdir():
        if path.is_file():
            data = path.read_bytes()
            assert SECRET_1.encode() not in data and SECRET_2.encode() not in data, path
    conn = sqlite3.connect(tmp / "data" / "vigil.db")
    try:
        for (diff,) in conn.execute("SELECT config_diff FROM deployments"):
            assert "topsecret" not in diff
    finally:
        conn.close()


def test_a_change_during_an_artifact_deploy_is_held_and_a_canary_change_is_gated(
    site: tuple[Path, Path, int],
) -> None:
    tmp, link, port = site
    v2 = version(tmp, "v2")
    cfg = write(tmp, link, port, {"FOO": "1"}, bake="6s")
    with reaper(tmp), running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 30, what="clf up")
        code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
        assert code == 202, body
        artifact = body["deployment"]["id"]
        in_state(agent, artifact, "baking")

        # The process changes while the artifact deploy bakes: held, then deployed after it.
        write(tmp, link, port, {"FOO": "2"}, bake="6s")
        reload(agent)
        held = wait_for(lambda: config_state(agent)["held"], 15, what="the change held")
        assert held == [{"model": "clf", "what": "process srv", "waits_for": artifact}]
        assert events(agent, "deploy.config_held")
        # An artifact deploy is refused while a config deploy is in flight, and vice versa.
        assert ended(agent, artifact)["state"] == "promoted"
        dep = wait_for(lambda: config_deploys(agent), 30, what="the held change deployed")[0]
        code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
        if deployment(agent, dep["id"])["in_flight"]:
            assert code == 409 and f"deployment {dep['id']} in flight" in body["error"]
        done = ended(agent, dep["id"], timeout=90)
        assert done["state"] == "promoted" and '+FOO = "2"' in done["config_diff"]
        assert not config_state(agent)["file_differs"]

        # A canary change with no restart: gated on its own (no golden answer to compare with).
        wait_for(
            lambda: (
                not call(agent, "GET", "/api/v1/deployments?model=clf")[1]["deployments"][0][
                    "in_flight"
                ]
            ),
            60,
        )
        pid = srv_pid(agent)
        write(
            tmp, link, port, {"FOO": "2"}, canary='expect_output = { name = "y", shape = [1, 3] }'
        )
        reload(agent)
        good = next_config_deploy(agent, 1)
        assert good["state"] == "promoted", good
        assert "+expect_output" in good["config_diff"] and srv_pid(agent) == pid
        golden = next(c for c in good["checks"]["verdict"]["checks"] if c["check"] == "golden")
        assert golden["ok"] is None  # the previous canary asked something else

        # A canary that fails: rolled back to the previous canary; the model stays up.
        write(
            tmp, link, port, {"FOO": "2"}, canary='expect_output = { name = "y", shape = [1, 4] }'
        )
        reload(agent)
        bad = next_config_deploy(agent, 2)
        assert bad["state"] == "rolled_back" and "wrong_output" in bad["error"], bad
        state = config_state(agent)
        assert [r["what"] for r in state["rolled_back"]] == ["the canary of model clf"]
        wait_for(lambda: model_up(agent), 30, what="clf up with the previous canary")


def test_an_agent_killed_during_a_config_bake_resumes_it(site: tuple[Path, Path, int]) -> None:
    """The file still holds the table the deploy applied: the next agent adopts the server
    (started with it) and resumes the bake from its stored start, without a restart."""
    tmp, link, port = site
    cfg = write(tmp, link, port, {"FOO": "1"}, bake="8s")
    with reaper(tmp):
        with running_agent(cfg) as agent:
            wait_for(lambda: model_up(agent), 30, what="clf up")
            write(tmp, link, port, {"FOO": "2"}, bake="8s")
            reload(agent)
            dep = wait_for(lambda: config_deploys(agent), 30, what="the config deploy")[0]
            baking = in_state(agent, dep["id"], "baking")
            pid = srv_pid(agent)
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(10)
            (agent.data_dir / "api.json").unlink()  # left by the killed agent
        with running_agent(cfg) as agent:
            done = ended(agent, dep["id"], timeout=90)
            assert done["state"] == "promoted", done
            assert done["checks"]["bake_started_ms"] == baking["checks"]["bake_started_ms"]
            assert srv_pid(agent) == pid  # adopted, never restarted
            assert "deploy.resumed" in deploy_events(agent, dep["id"])
