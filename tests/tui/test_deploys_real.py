"""The deployments view against a real ``vigil agent run`` with a real model server behind a
``current`` symlink (the harness of tests/integration/test_deploy_agent.py): a recorded version
and a deploy baking are shown, with the bake's live progress and the gate's checks as the agent
judges them, and ``B`` rolls the bake back through the agent, audited with the operator; ``N``
deploys a real second version from the view, which is selected, baked and promoted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Select

from tests.deploy_support import call, ended, in_state, model_up, reaper, version
from tests.helpers import running_agent
from tests.helpers import wait_for as wait_until
from tests.integration.test_deploy_agent import (
    config,
    site,  # noqa: F401 - the fixture
)
from tests.tui.test_host_screen import wait_for
from tests.tui.test_triage_views import cells, confirm, count, notes, text_of
from tui.app import VigilApp
from tui.remote.client import AgentClient
from tui.screens.deployform import DeployScreen
from tui.screens.deploys import DeploymentsScreen

pytestmark = pytest.mark.integration

OPERATOR = "tui-op@desk"


def events(agent: Any, kind: str) -> list[dict[str, Any]]:
    code, body = agent.get(f"/api/v1/events?limit=200&kind={kind}")
    assert code == 200, body
    return list(body["events"])


async def test_a_real_bake_is_shown_live_and_rolled_back_from_the_view(
    site: tuple[Path, Path, int],  # noqa: F811 - the fixture imported above
) -> None:
    tmp, link, port = site
    v1 = link.resolve()
    v2 = version(tmp, "v2")
    cfg = config(tmp, link, port, bake="120s")
    with reaper(tmp), running_agent(cfg) as agent:
        wait_until(lambda: model_up(agent), 30, what="clf up")
        code, body = call(
            agent,
            "POST",
            "/api/v1/models/clf/record",
            {"artifact": str(v1), "actor": "setup", "notes": "[red]x[/] first"},
        )
        assert code == 201, body
        code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
        assert code == 202, body
        dep_id = body["deployment"]["id"]
        in_state(agent, dep_id, "baking")

        client = AgentClient(agent.url, agent.token, timeout_s=10.0)
        client.operator = OPERATOR
        app = VigilApp(client, refresh_s=0.3)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: count(app, "#models") > 0, timeout_s=15)
            await pilot.press("d")
            await wait_for(pilot, lambda: count(app, "#deployments-table") == 2, timeout_s=15)
            assert isinstance(app.screen, DeploymentsScreen)
            rows = cells(app, "#deployments-table")
            assert [r[0] for r in rows] == [f"#{dep_id}", f"#{dep_id - 1}"]
            assert [r[2] for r in rows] == ["baking", "promoted"]
            assert rows[1][6] == "record"
            # The DORA keys as the agent computes them: the record is a promoted change.
            summary = text_of(app, "#summary")
            assert summary.startswith("30d: 1 change (0.033/day) · lead time "), summary
            assert "failure rate 0%" in summary, summary
            # The live bake, and the gate's checks as the agent judges them now.
            await wait_for(pilot, lambda: "good in a row" in text_of(app, "#detail"), 15)
            detail = text_of(app, "#detail")
            assert f"#{dep_id} clf · in-place · baking" in detail
            assert "of 2m" in detail and "gate canaries" in detail
            assert "incidents ✓" in detail and "drift ✓" in detail
            versions = cells(app, "#versions-table")
            assert [v[0] for v in versions] == ["  ", "▶✓"]  # v1 serves until v2 is promoted
            assert versions[1][-1] == "[red]x[/] first"
            assert versions[1][4] == "setup"

            # B: no version chosen, a bake in flight: the agent stops it and rolls back.
            await pilot.press("B")
            modal = await confirm(pilot, app, "y")
            assert modal.question.plain == "Roll back model clf to its last known-good version?"
            await wait_for(
                pilot,
                lambda: cells(app, "#deployments-table")[0][2] == "rolled_back",
                timeout_s=60,
            )
        done = ended(agent, dep_id)
        assert done["state"] == "rolled_back"
        assert link.resolve() == v1
        rolled = [e for e in events(agent, "deploy.") if e["data"].get("deployment") == dep_id]
        assert any(OPERATOR in e["message"] for e in rolled), [e["message"] for e in rolled]


async def test_a_deploy_started_from_the_view_is_baked_and_promoted(
    site: tuple[Path, Path, int],  # noqa: F811 - the fixture imported above
) -> None:
    """N on the real agent: the dialog offers clf with its configured strategy; the agent's
    refusals (another strategy, a path not on its host) come back as it words them; a real
    second version is then deployed from the view, selected, seen baking and promoted."""
    tmp, link, port = site
    v1 = link.resolve()
    v2 = version(tmp, "v2")  # same weights: same answers, so the gate passes
    cfg = config(tmp, link, port)
    with reaper(tmp), running_agent(cfg) as agent:
        wait_until(lambda: model_up(agent), 30, what="clf up")
        code, body = call(
            agent, "POST", "/api/v1/models/clf/record", {"artifact": str(v1), "actor": "setup"}
        )
        assert code == 201, body
        client = AgentClient(agent.url, agent.token, timeout_s=10.0)
        client.operator = OPERATOR
        app = VigilApp(client, refresh_s=0.3)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: count(app, "#models") > 0, timeout_s=15)
            await pilot.press("d")
            await wait_for(pilot, lambda: count(app, "#deployments-table") == 1, timeout_s=15)

            async def send(artifact: str, strategy: str | None = None, bake: str = "") -> None:
                await pilot.press("N")
                await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), 10)
                form = app.screen
                assert isinstance(form, DeployScreen)
                # The agent says clf deploys in-place (its [model.deploy] strategy).
                assert form.query_one("#model", Select).value == "clf"
                assert form.query_one("#strategy", Select).value == "in-place"
                if strategy:
                    form.query_one("#strategy", Select).value = strategy
                form.query_one("#artifact", Input).value = artifact
                form.query_one("#bake", Input).value = bake
                form.query_one("#notes", Input).value = "from the [b]TUI[/b]"
                await pilot.press("enter")
                await confirm(pilot, app, "y")

            def said(text: str) -> bool:
                return any(text in n for n in notes(app))

            await send(str(v2), strategy="blue-green")
            await wait_for(pilot, lambda: said("HTTP 400"), 15)
            assert said(
                "strategy: model 'clf' deploys in-place (its [model.deploy] strategy), not "
                "blue-green"
            )
            missing = tmp / "versions" / "[red]v9[/]"
            await send(str(missing))
            await wait_for(pilot, lambda: said(f"artifact {missing}"), 15)
            assert said("expected a readable model file or directory")
            assert count(app, "#deployments-table") == 1  # nothing was started

            await send(str(v2), bake="4s")
            await wait_for(pilot, lambda: said("deploy of clf: deployment #"), 15)
            await wait_for(pilot, lambda: count(app, "#deployments-table") == 2, 15)
            new = cells(app, "#deployments-table")[0][0]
            # Selected: its detail follows it, in flight, then its bake, live; then promoted.
            await wait_for(pilot, lambda: text_of(app, "#detail").startswith(f"{new} clf"), 15)
            await wait_for(pilot, lambda: "good in a row" in text_of(app, "#detail"), 30)
            assert "of 4s" in text_of(app, "#detail")
            await wait_for(
                pilot, lambda: cells(app, "#deployments-table")[0][2] == "promoted", timeout_s=60
            )
            assert cells(app, "#deployments-table")[0][5] == OPERATOR
            await wait_for(pilot, lambda: cells(app, "#versions-table")[0][0] == "▶✓", 15)
            assert cells(app, "#versions-table")[0][-1] == "from the [b]TUI[/b]"
        assert link.resolve() == v2
        done = ended(agent, int(new.lstrip("#")))
        assert done["state"] == "promoted" and done["requested_by"] == OPERATOR
        assert done["bake_s"] == 4.0 and done["notes"] == "from the [b]TUI[/b]"
        code, listed = call(agent, "GET", "/api/v1/deployments?model=clf")
        assert code == 200 and len(listed["deployments"]) == 2  # the refused ones left nothing
