"""``vigil deploy --fleet``: one version rolled over three real agents, each supervising the
versioned demo server. Host 2 runs other weights before, so the new version answers
differently there and its golden check rolls it back: the rollout stops there."""

from __future__ import annotations

import functools
import json
import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import call, events, free_port, model_up, reaper, srv_model_toml, version
from tests.helpers import child_env, running_agent, vigil_cmd, wait_for, write_config

pytestmark = pytest.mark.integration


def test_a_rollout_stops_at_a_failing_host_and_rolls_back_the_done(tmp_path: Path) -> None:
    tmp = tmp_path.resolve()
    shared = tmp / "shared"
    v2 = version(shared, "v2")  # the same weights as hosts 1 and 3 run, other notes
    v3 = version(shared, "v3")
    with reaper(tmp), ExitStack() as stack:
        agents, links = [], []
        for i, scale in enumerate((1.0, 2.0, 1.0), 1):
            d = tmp / f"h{i}"
            link = d / "current"
            link.parent.mkdir()
            link.symlink_to(version(d, "v1", scale=scale))
            cfg = write_config(d, srv_model_toml(link, free_port(), "1500ms"))
            agents.append(stack.enter_context(running_agent(cfg)))
            links.append(link)
        for a in agents:
            wait_for(functools.partial(model_up, a), 60, what="clf up")
        for a in agents[:2]:
            code, _ = call(
                a,
                "POST",
                "/api/v1/models/clf/record",
                {"artifact": str(links[agents.index(a)].resolve())},
            )
            assert code in (200, 201)
        fleet = tmp / "fleet.toml"
        members = "".join(
            f'[[agent]]\nname = "h{i}"\nurl = "{a.url}"\ntoken = "{a.token}"\n'
            'labels = { region = "eu-west" }\n'
            for i, a in enumerate(agents, 1)
        )
        members += (
            '[[agent]]\nname = "us"\nurl = "http://127.0.0.1:1"\ntoken = "x"\n'
            'labels = { region = "us-east" }\n'
        )
        fleet.write_text(members)

        def rollout(artifact: Path, *extra: str) -> tuple[int, dict[str, Any]]:
            out = subprocess.run(
                vigil_cmd(
                    "deploy",
                    "--fleet",
                    str(fleet),
                    "--group",
                    "region=eu-west",
                    "clf",
                    "--artifact",
                    str(artifact),
                    "--json",
                    *extra,
                ),
                capture_output=True,
                text=True,
                env=child_env(),
                timeout=240,
            )
            return out.returncode, json.loads(out.stdout)

        code, summary = rollout(v2)
        assert code == 1, summary
        hosts = {h["name"]: h for h in summary["hosts"]}
        assert set(hosts) == {"h1", "h2", "h3"}  # us-east not selected, never contacted
        assert hosts["h1"]["outcome"] == "promoted" and links[0].resolve() == v2
        assert hosts["h2"]["outcome"] == "rolled_back" and links[1].resolve() != v2
        assert hosts["h3"]["outcome"] == "not_started"
        code, body = call(agents[2], "GET", "/api/v1/deployments")
        assert body["deployments"] == []
        code, dep = call(agents[0], "GET", f"/api/v1/deployments/{hosts['h1']['deployment']}")
        assert summary["rollout"] in dep["deployment"]["notes"]
        assert dep["deployment"]["pipeline_id"] == summary["rollout"]
        requested = [
            e
            for e in events(agents[0], "deploy.requested")
            if e["data"]["deployment"] == hosts["h1"]["deployment"]
        ]
        assert requested[0]["data"]["evidence"]["pipeline_id"] == summary["rollout"]
        assert "wave 1/3" in requested[0]["data"]["evidence"]["notes"]

        code, summary = rollout(v3, "--rollback-done", "--waves", "1,100%")
        assert code == 1, summary
        hosts = {h["name"]: h for h in summary["hosts"]}
        assert hosts["h1"]["outcome"] == "promoted" and hosts["h1"]["rollback"] == "rolled_back"
        assert links[0].resolve() == v2  # back to what it ran before this rollout
