"""The deployments view (issue 16), driven by Pilot against the fake agent: it lists deploys
with their states coloured, shows a deploy in flight live (bake, canaries, the gate's checks)
and its model's versions (current, known-good), approves and rolls back after a confirmation
with the operator named, shows the agent's refusals as they are, and escapes what it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot

from tests.fakes.deploy_agent import (
    DeployAgent,
    fixed_deploy_agent,
    sample_deployments,
    sample_kpis,
)
from tests.fakes.triage_agent import FIXED_NOW_MS, READ_TOKEN
from tests.tui.test_host_screen import wait_for
from tests.tui.test_snapshots import Snap, shoot, utc  # noqa: F401 - utc is an autouse fixture
from tests.tui.test_triage_views import (
    cells,
    confirm,
    count,
    footer_keys,
    make_app,
    notes,
    ready,
    table,
    text_of,
)
from tui.app import VigilApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.deploys import DeploymentsScreen
from tui.screens.help import HelpScreen
from tui.screens.model import ModelScreen
from tui.view.deploys import (
    deployment_detail,
    deployment_row,
    kpi_text,
    progress_text,
    summary_text,
    version_row,
)

V1_HEX = "a" * 64
"""The hash of llama's version 1 in the fake agent (``_hash(1 + 9)``)."""


@pytest.fixture
async def deploy_agent() -> AsyncIterator[DeployAgent]:
    agent = DeployAgent()
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


async def open_deploys(pilot: Pilot[None], app: VigilApp) -> DeploymentsScreen:
    await ready(pilot, app)
    await pilot.press("d")
    await wait_for(pilot, lambda: count(app, "#deployments-table") > 0)
    await wait_for(pilot, lambda: count(app, "#versions-table") > 0)
    screen = app.screen
    assert isinstance(screen, DeploymentsScreen)
    return screen


# --- the view model, without an app ---------------------------------------------------------


def test_rows_colour_states_and_escape_text() -> None:
    deps = sample_deployments(FIXED_NOW_MS)
    rows = {d["id"]: deployment_row(d, FIXED_NOW_MS) for d in deps}
    assert [c.plain for c in rows[5]][:6] == [
        "#5",
        "llama",
        "promoted",
        "cccccccccccc",
        "2h",
        "alice@ci",
    ]
    assert str(rows[5][2].style) == "green"
    assert str(rows[4][2].style) == "bold red"  # rolled back
    assert str(rows[7][2].style) == "yellow"  # baking: in flight
    assert rows[4][-1].plain.startswith("the canary gate failed: golden")
    hostile = dict(deps[0], requested_by="[@click=app.quit]", error="\x1b[31m[red]x[/]\x07")
    cellz = [c.plain for c in deployment_row(hostile, FIXED_NOW_MS)]
    assert cellz[5] == "[@click=app.quit]" and cellz[-1] == "[red]x[/]"
    note = version_row({"id": 1, "hash": "sha256:ab", "notes": "[red]x[/]", "current": True})
    assert note[-1].plain == "[red]x[/]" and note[0].plain == "▶ "


def test_progress_of_a_bake_and_summary() -> None:
    agent = fixed_deploy_agent()
    baking = agent.deployments[0]
    live = progress_text(baking, agent._show(baking), FIXED_NOW_MS).plain
    assert live == (
        "bake ███████····· 3m of 5m · 7 canaries, 1 failed\n"
        "2/3 good in a row · gate canaries … golden ✓ incidents ✓ drift ✓"
    )
    header = deployment_detail(baking, agent._show(baking), FIXED_NOW_MS).plain.split("\n")[0]
    assert header == "#7 llama · in-place · baking 3m · v3 cccccccccccc → v4 dddddddddddd"
    # A finished deploy has no progress, but its error and the gate's verdict.
    rolled = agent.deployments[3]
    assert progress_text(rolled, {}, FIXED_NOW_MS).plain == ""
    detail = deployment_detail(rolled, agent._show(rolled), FIXED_NOW_MS).plain
    assert "v1 aaaaaaaaaaaa → v2 bbbbbbbbbbbb" in detail
    assert "✖ the canary gate failed: golden" in detail
    assert "gate canaries ✓ golden ✗ incidents ✓ drift ✓" in detail
    summary = summary_text(agent.deployments, FIXED_NOW_MS).plain
    assert summary == (
        "5 deploys · 2 promoted · 1 rolled back/failed (33%) · 2 in flight · last promoted 1h ago"
    )
    kpis = kpi_text(sample_kpis(FIXED_NOW_MS)).plain
    assert kpis == "30d: 3 changes (0.067/day) · lead time 2h30m · failure rate 33% · restore 6m"


# --- the screen ---------------------------------------------------------------------------


async def test_lists_deploys_progress_and_versions(deploy_agent: DeployAgent) -> None:
    app = make_app(deploy_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        rows = cells(app, "#deployments-table")
        assert [r[0] for r in rows] == ["#7", "#6", "#5", "#4", "#3"]
        assert [r[2] for r in rows] == [
            "baking",
            "awaiting_approval",
            "promoted",
            "rolled_back",
            "promoted",
        ]
        assert text_of(app, "#summary").startswith("30d: 3 changes (0.067/day) · lead time")
        await wait_for(pilot, lambda: "good in a row" in text_of(app, "#detail"))
        detail = text_of(app, "#detail")
        assert "#7 llama · in-place · baking" in detail
        assert "2/3 good in a row" in detail and "golden ✓" in detail
        versions = cells(app, "#versions-table")
        assert [v[1] for v in versions] == ["4", "3", "2", "1"]
        assert [v[0] for v in versions] == ["  ", "▶✓", "  ", " ✓"]
        assert versions[0][-1] == "int8 quantised"
        # The versions follow the deploy under the cursor.
        await pilot.press("j")
        await wait_for(pilot, lambda: cells(app, "#versions-table")[0][1] == "6")
        assert "waiting for an operator's approval" in text_of(app, "#detail")
        # The progress is refreshed on the poll.
        deploy_agent.progress[7]["good_in_a_row"] = 3
        await pilot.press("k")
        await wait_for(pilot, lambda: "3/3 good in a row" in text_of(app, "#detail"))


async def test_summary_without_the_kpi_route(deploy_agent: DeployAgent) -> None:
    """An agent before the KPI route: the listed deploys' own summary, the route asked once."""
    deploy_agent.kpis = None
    app = make_app(deploy_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        await wait_for(pilot, lambda: deploy_agent.hits.get("/api/v1/deployments", 0) >= 3)
        assert text_of(app, "#summary").startswith("5 deploys · 2 promoted")
        assert deploy_agent.hits["/api/v1/deployments/kpi"] == 1
        assert app.screen.query_one("#problem").has_class("-shown") is False


async def test_approve_sends_the_operator_after_confirmation(deploy_agent: DeployAgent) -> None:
    app = make_app(deploy_agent)
    app.client.operator = "bob@desk"
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_deploys(pilot, app)
        assert "Approve" not in footer_keys(app)  # the baking deploy needs no approval
        await pilot.press("j")
        await wait_for(pilot, lambda: "Approve" in footer_keys(app))
        await pilot.press("A")
        modal = await confirm(pilot, app, "y")
        assert modal.question.plain == "Approve deployment #6?"
        assert "embedder: version ffffffffffff (in-place), requested by carol@ci" in (
            modal.detail.plain
        )
        await wait_for(pilot, lambda: bool(deploy_agent.posted))
        assert deploy_agent.actions == [
            ("POST /api/v1/deployments/6/approve", "bob@desk", "operate")
        ]
        assert deploy_agent.posted == [("POST /api/v1/deployments/6/approve", None)]
        await wait_for(pilot, lambda: any("#6 approved: requested" in n for n in notes(app)))
        await wait_for(pilot, lambda: cells(app, "#deployments-table")[1][2] == "requested")
        assert screen.selected_deploy() is not None


async def test_agent_refusals_are_shown_verbatim(deploy_agent: DeployAgent) -> None:
    app = make_app(deploy_agent)
    app.client.operator = "carol@ci"  # who asked for #6: may not approve it
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        await wait_for(pilot, lambda: app.client.scope == "operate")
        await pilot.press("j", "A")
        await confirm(pilot, app, "y")
        await wait_for(pilot, lambda: any("approver_must_differ" in n for n in notes(app)))
        refused = next(n for n in notes(app) if "approver_must_differ" in n)
        assert refused == (
            "HTTP 403 from /api/v1/deployments/6/approve: carol@ci requested deployment 6; "
            "approver_must_differ: another operator must approve it"
        )
        # A refusal of the action is not a read-only token: the actions stay.
        assert app.client.scope == "operate"
        assert "Approve" in footer_keys(app)
        # A version chosen while a deploy of the model is in flight: 409 naming it.
        await pilot.press("k", "tab", "j", "j", "j", "B")
        modal = await confirm(pilot, app, "y")
        assert modal.question.plain == "Roll back model llama to version aaaaaaaaaaaa?"
        assert "version 1 aaaaaaaaaaaa (known-good), by alice@ci" in modal.detail.plain
        await wait_for(pilot, lambda: any("HTTP 409" in n for n in notes(app)))
        assert deploy_agent.posted[-1] == ("POST /api/v1/models/llama/rollback", {"to": V1_HEX})
        assert any(
            "already has deployment 7 in flight (state baking, requested by alice@ci)" in n
            for n in notes(app)
        )


async def test_rollback_to_last_known_good_or_a_chosen_version(deploy_agent: DeployAgent) -> None:
    app = make_app(deploy_agent)
    app.client.operator = "bob@desk"
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        # B on the baking deploy: no version, so the agent stops the bake and rolls back.
        await pilot.press("B")
        modal = await confirm(pilot, app, "y")
        assert modal.question.plain == "Roll back model llama to its last known-good version?"
        assert "deploy #7 is baking" in modal.detail.plain
        await wait_for(pilot, lambda: bool(deploy_agent.posted))
        assert deploy_agent.posted == [("POST /api/v1/models/llama/rollback", None)]
        assert deploy_agent.actions[0][1:] == ("bob@desk", "operate")
        await wait_for(pilot, lambda: any("deployment #7 rolling_back" in n for n in notes(app)))
        # Nothing in flight any more: a chosen version is deployed again.
        for dep in deploy_agent.deployments:
            dep.update(in_flight=False, state="promoted" if dep["id"] == 7 else dep["state"])
        await wait_for(pilot, lambda: cells(app, "#deployments-table")[0][2] == "promoted")
        await pilot.press("tab", "G", "B")
        await confirm(pilot, app, "y")
        await wait_for(pilot, lambda: len(deploy_agent.posted) == 2)
        assert deploy_agent.posted[1] == ("POST /api/v1/models/llama/rollback", {"to": V1_HEX})
        await wait_for(pilot, lambda: cells(app, "#deployments-table")[0][0] == "#8")
        assert cells(app, "#deployments-table")[0][2] == "requested"


async def test_cancel_sends_nothing(deploy_agent: DeployAgent) -> None:
    app = make_app(deploy_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        await pilot.press("B")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        focused = app.screen.focused
        assert focused is not None and focused.id == "no"  # Cancel has the focus
        await pilot.press("enter")  # out of habit: cancels
        await wait_for(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        await pilot.press("B")
        await confirm(pilot, app, "n")
        await pilot.press("j", "A")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        await wait_for(pilot, lambda: any("Approve cancelled" in n for n in notes(app)))
        assert deploy_agent.posted == [] and deploy_agent.actions == []


async def test_read_only_token_hides_and_refuses(deploy_agent: DeployAgent) -> None:
    app = make_app(deploy_agent, READ_TOKEN)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_deploys(pilot, app)
        await wait_for(pilot, lambda: app.client.scope == "read")
        await pilot.press("j")
        assert not {"Approve", "Roll back"} & footer_keys(app)
        await pilot.press("A", "B")
        await pilot.pause()
        assert isinstance(app.screen, DeploymentsScreen)
        screen.action_rollback()  # a way around the hidden key (the palette, a script)
        await wait_for(pilot, lambda: any("Roll back refused" in n for n in notes(app)))
        assert any("read-only" in n for n in notes(app))
        assert not isinstance(app.screen, ConfirmScreen)
        assert deploy_agent.posted == []


async def test_hostile_text_is_shown_literally(deploy_agent: DeployAgent) -> None:
    deploy_agent.versions["llama"][0]["notes"] = "[red]x[/]"
    deploy_agent.versions["llama"][0]["actor"] = "[@click=app.quit]"
    deploy_agent.deployments[0]["requested_by"] = "[b]eve[/b]\x1b[31m"
    app = make_app(deploy_agent)
    async with app.run_test(size=(160, 40)) as pilot:
        await open_deploys(pilot, app)
        assert cells(app, "#versions-table")[0][-1] == "[red]x[/]"
        assert cells(app, "#versions-table")[0][4] == "[@click=app.quit]"
        assert cells(app, "#deployments-table")[0][5] == "[b]eve[/b]"
        assert "requested by [b]eve[/b]" in text_of(app, "#detail")
        await pilot.click("#versions-table", offset=(60, 2))
        await pilot.pause()
        assert app.is_running


async def test_reached_from_the_palette_the_help_and_a_model(deploy_agent: DeployAgent) -> None:
    app = make_app(deploy_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "d         Deployments" in text_of(app, "#help-text")
        await pilot.press("escape", "colon")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"deployments")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        await wait_for(pilot, lambda: count(app, "#deployments-table") == 5)
        await pilot.press("escape", "enter")  # llama's model view, then d: its deploys only
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        await wait_for(pilot, lambda: count(app, "#deployments-table") == 3)
        assert {r[1] for r in cells(app, "#deployments-table")} == {"llama"}
        assert "model llama" in text_of(app, "#title")
        assert table(app, "#deployments-table").cursor_row == 0


@pytest.mark.usefixtures("utc")
def test_deployments_snapshot(snap_compare: Snap) -> None:
    """80x24: the deploy in flight, its bake and gate, llama's versions."""
    assert shoot(
        snap_compare,
        fixed_deploy_agent(),
        lambda app, host: host.open_deployments(),
        "#deployments-table",
        until=lambda app: "good in a row" in str(app.screen.query_one("#detail").render()),
    )
