"""The deploy engine is made on first need (issue 14, agent.runtime.deploying): an agent whose
models do not deploy runs without it, answers the config route as before, and a reload that
adds a ``[model.deploy]`` makes it, after which the model deploys as any other."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.deploy_support import call, free_port, model_up, reaper, srv_model_toml, version, vigil
from tests.helpers import running_agent, wait_for, write_config

pytestmark = pytest.mark.integration


def test_a_reload_that_adds_a_deploy_table_makes_the_engine(tmp_path: Path) -> None:
    v1 = version(tmp_path, "v1")
    v2 = version(tmp_path, "v2")  # same weights: same answers
    link = tmp_path / "current"
    link.symlink_to(v1)
    port = free_port()
    with_deploy = srv_model_toml(link, port, "1500ms")
    without = with_deploy[: with_deploy.index("[model.deploy]")]
    cfg = write_config(tmp_path, without)
    with reaper(tmp_path), running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 30, what="clf up")
        code, state = call(agent, "GET", "/api/v1/config")
        assert code == 200, state
        assert state["file_differs"] is False and state["held"] == []

        cfg.write_text(cfg.read_text() + with_deploy[len(without) :])
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: call(agent, "GET", "/api/v1/models/clf/versions")[1].get("deploy"),
            30,
            what="the reload to bring clf's [model.deploy]",
        )
        out = vigil(cfg, "deploy", "clf", "--artifact", str(v2), "--wait")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "promoted" in out.stdout.splitlines()[-1]
        assert link.resolve() == v2


def test_a_model_without_a_deploy_table_is_refused_as_before(tmp_path: Path) -> None:
    v1 = version(tmp_path, "v1")
    link = tmp_path / "current"
    link.symlink_to(v1)
    port = free_port()
    toml = srv_model_toml(link, port, "1500ms")
    cfg = write_config(tmp_path, toml[: toml.index("[model.deploy]")])
    with reaper(tmp_path), running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 30, what="clf up")
        code, refused = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v1)})
        assert code == 400 and "has no [model.deploy] link" in refused["error"], refused
        code, listed = call(agent, "GET", "/api/v1/deployments")
        assert code == 200 and listed["deployments"] == []
