"""Starting a deploy from the deployments view (issue 16), driven by Pilot against the fake
agent: ``N`` opens a dialog (the models that have a ``[model.deploy]``, the one in view
preselected with its strategy; artifact path, bake, notes), a confirmation summarises it, and
``POST /api/v1/models/{name}/deploy`` carries the body and the operator; the new deploy is then
selected with its progress. Cancelling either step sends nothing; the agent's refusals (409 a
deploy in flight, 400 a missing artifact or another strategy) are shown as it words them,
escaped; a read-only token is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from tests.fakes.deploy_agent import DeployAgent, fixed_deploy_agent, sample_progress
from tests.fakes.triage_agent import FIXED_NOW_MS, READ_TOKEN
from tests.tui.test_deploys_view import open_deploys
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
from tui.screens.deployform import DeployScreen
from tui.screens.deploys import DeploymentsScreen
from tui.screens.help import HelpScreen
from tui.screens.host import HostScreen
from tui.screens.model import ModelScreen
from tui.view.deployform import (
    DeployChoice,
    DeployDraft,
    deploy_choices,
    deploy_summary,
    draft_problem,
)

V5 = "/srv/models/llama/v5"
"""The artifact the fake host has."""


@pytest.fixture
async def deploy_agent() -> AsyncIterator[DeployAgent]:
    agent = DeployAgent()
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def finish_llama(agent: DeployAgent) -> None:
    """llama's bake (#7) promoted: nothing of llama in flight, so a deploy may start."""
    agent.deployments[0].update(state="promoted", in_flight=False, finished_ms=FIXED_NOW_MS)


async def open_form(pilot: Pilot[None], app: VigilApp) -> DeployScreen:
    await pilot.press("N")
    await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen))
    form = app.screen
    assert isinstance(form, DeployScreen)
    await wait_for(pilot, lambda: form.focused is not None and form.focused.id == "artifact")
    return form


def fill(form: DeployScreen, **fields: str) -> None:
    for name, value in fields.items():
        form.query_one(f"#{name}", Input).value = value


# --- the form's model, without an app ---------------------------------------------------------


def test_choices_validation_and_summary() -> None:
    docs = {
        "llama": {"versions": [], "deploy": {"strategy": "in-place", "bake_s": 300.0}},
        "embedder": {"versions": [], "deploy": {"strategy": "blue-green"}},
        "whisper": {"versions": [], "deploy": None},
        "old": {"versions": []},  # an agent that does not say: offered, the agent decides
        "gone": None,  # 404: the agent no longer knows it
    }
    offered, left_out = deploy_choices(["llama", "embedder", "whisper", "old", "gone"], docs)
    assert [(c.model, c.strategy) for c in offered] == [
        ("llama", "in-place"),
        ("embedder", "blue-green"),
        ("old", "in-place"),
    ]
    assert left_out == ["whisper", "gone"]
    ok = DeployDraft("llama", "/srv/v5", bake="90s")
    assert draft_problem(ok) is None
    assert draft_problem(DeployDraft("llama", " ")) == (
        "artifact: expected the path of the new version on the agent's host"
    )
    assert draft_problem(DeployDraft("llama", "/x", bake="soon")) == (
        "bake: expected a duration such as '10m' or '90s', got 'soon'"
    )
    assert draft_problem(DeployDraft("llama", "/x", bake="8d")) == (
        "bake: expected a duration above 0 and at most 7d, got '8d'"
    )
    assert draft_problem(DeployDraft("llama", "/x", strategy="canary")) == (
        "strategy: expected in-place or blue-green, got 'canary'"
    )
    hostile = DeployDraft(
        "llama",
        "/srv/[red]x[/]\x1b[31m",
        notes="[@click=app.quit]",
        settings={"bake_s": 300.0, "require_approval": True},
        host="[b]h[/b]",
    )
    assert deploy_summary(hostile).plain.split("\n") == [
        "artifact /srv/[red]x[/]",
        "         (on [b]h[/b])",
        "strategy in-place",
        "bake     the model's, 5m",
        "approval required (by someone else): it waits until approved",
        "notes    [@click=app.quit]",
    ]
    assert DeployChoice("m", {"strategy": "nonsense"}).strategy == "in-place"


# --- the dialog ---------------------------------------------------------------------------


async def test_fill_confirm_and_send_selects_the_new_deploy(deploy_agent: DeployAgent) -> None:
    finish_llama(deploy_agent)
    app = make_app(deploy_agent)
    app.client.operator = "bob@desk"
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_deploys(pilot, app)
        await wait_for(pilot, lambda: "Deploy" in footer_keys(app))
        form = await open_form(pilot, app)
        # The model under the cursor (llama's #7), its strategy; whisper and fresh have no
        # [model.deploy] and are not offered.
        assert form.query_one("#model", Select).value == "llama"
        assert form.query_one("#strategy", Select).value == "in-place"
        assert "Not offered (no [model.deploy]): whisper, fresh." in text_of(app, "#detail")
        assert form.query_one("#bake", Input).placeholder.startswith("the model's: 5m")
        await pilot.press("enter")  # nothing typed: refused in the dialog, nothing sent
        assert isinstance(app.screen, DeployScreen)
        assert "artifact: expected the path" in text_of(app, "#why")
        fill(form, bake="soon")
        await pilot.press(*V5, "enter")  # typed, as a person does
        assert form.query_one("#artifact", Input).value == V5
        assert isinstance(app.screen, DeployScreen)
        assert "bake: expected a duration such as '10m'" in text_of(app, "#why")
        fill(form, bake="90s", notes="int8 [b]re[/b]-export")
        await pilot.press("enter")
        modal = await confirm(pilot, app, "y")
        assert modal.question.plain == "Deploy a new version of model llama?"
        summary = modal.detail.plain
        assert f"artifact {V5}\n         (on gpu-host-01)" in summary
        assert "strategy in-place\nbake     90s\nnotes    int8 [b]re[/b]-export" in summary
        assert "switches the model's link to it and restarts the server" in summary
        assert "Recorded in the audit trail as bob@desk." in summary
        await wait_for(pilot, lambda: bool(deploy_agent.posted))
        assert deploy_agent.posted == [
            (
                "POST /api/v1/models/llama/deploy",
                {
                    "artifact": V5,
                    "strategy": "in-place",
                    "bake": "90s",
                    "notes": "int8 [b]re[/b]-export",
                },
            )
        ]
        assert deploy_agent.actions == [("POST /api/v1/models/llama/deploy", "bob@desk", "operate")]
        await wait_for(
            pilot, lambda: any("deploy of llama: deployment #8" in n for n in notes(app))
        )
        # The new deploy is listed, selected, and its detail shows; then its bake, live.
        await wait_for(pilot, lambda: cells(app, "#deployments-table")[0][0] == "#8")
        await wait_for(pilot, lambda: "#8 llama · in-place · requested" in text_of(app, "#detail"))
        assert table(app, "#deployments-table").cursor_row == 0
        assert screen.focused is not None and screen.focused.id == "deployments-table"
        assert cells(app, "#versions-table")[0][-1] == "int8 [b]re[/b]-export"
        deploy_agent.deployments[0].update(state="baking")
        deploy_agent.progress[8] = sample_progress(FIXED_NOW_MS)
        await wait_for(pilot, lambda: "2/3 good in a row" in text_of(app, "#detail"))


async def test_cancel_at_either_step_sends_nothing(deploy_agent: DeployAgent) -> None:
    finish_llama(deploy_agent)
    app = make_app(deploy_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        await open_form(pilot, app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        await wait_for(pilot, lambda: any("New deploy cancelled" in n for n in notes(app)))
        form = await open_form(pilot, app)
        fill(form, artifact=V5)
        await pilot.click("#no")
        await wait_for(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        # Past the dialog, the confirmation: Cancel has the focus, n and esc cancel too.
        for key in ("enter", "n", "escape"):
            form = await open_form(pilot, app)
            fill(form, artifact=V5)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            app.clear_notifications()
            await pilot.press(key)
            await wait_for(pilot, lambda: any("Deploy cancelled" in n for n in notes(app)))
            assert isinstance(app.screen, DeploymentsScreen)
        assert deploy_agent.posted == [] and deploy_agent.actions == []


async def test_agent_refusals_are_shown_verbatim_and_escaped(deploy_agent: DeployAgent) -> None:
    hostile = "/srv/[red]v9[/]\x1b[31m"
    app = make_app(deploy_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        # 409: llama's #7 is baking.
        form = await open_form(pilot, app)
        fill(form, artifact=V5)
        await pilot.press("enter")
        await confirm(pilot, app, "y")
        await wait_for(pilot, lambda: any("HTTP 409" in n for n in notes(app)))
        assert (
            "HTTP 409 from /api/v1/models/llama/deploy: model 'llama' already has deployment 7 "
            "in flight (state baking, requested by alice@ci)"
        ) in notes(app)
        # 400: the artifact is not on the agent's host (its path, hostile, shown literally).
        finish_llama(deploy_agent)
        form = await open_form(pilot, app)
        fill(form, artifact=hostile)
        await pilot.press("enter")
        await confirm(pilot, app, "y")
        await wait_for(pilot, lambda: any("HTTP 400" in n for n in notes(app)))
        assert (
            "HTTP 400 from /api/v1/models/llama/deploy: artifact /srv/[red]v9[/]: No such file or "
            "directory; expected a readable model file or directory"
        ) in notes(app)
        # 400: a strategy the model is not configured for (embedder deploys blue-green).
        await pilot.press("j")  # embedder's #6 under the cursor: preselected, blue-green
        form = await open_form(pilot, app)
        assert form.query_one("#model", Select).value == "embedder"
        assert form.query_one("#strategy", Select).value == "blue-green"
        form.query_one("#strategy", Select).value = "in-place"
        fill(form, artifact=V5)
        await pilot.press("enter")
        modal = await confirm(pilot, app, "y")
        assert "approval required (by someone else)" in modal.detail.plain
        await wait_for(pilot, lambda: any("HTTP 400" in n and "strategy" in n for n in notes(app)))
        assert any(
            "strategy: model 'embedder' deploys blue-green (its [model.deploy] strategy), not "
            "in-place" in n
            for n in notes(app)
        )
        assert len(deploy_agent.posted) == 3
        assert app.is_running and app.client.scope == "operate"  # refusals hide nothing


async def test_the_model_choice_and_its_strategy(deploy_agent: DeployAgent) -> None:
    """Choosing another model brings its strategy; the one that waits for approval is sent
    and lands in awaiting_approval."""
    finish_llama(deploy_agent)
    deploy_agent.deployments[1].update(state="cancelled", in_flight=False)  # embedder's #6
    deploy_agent.artifacts.add("/srv/e/v7")
    app = make_app(deploy_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        form = await open_form(pilot, app)
        form.query_one("#model", Select).value = "embedder"
        await wait_for(pilot, lambda: form.query_one("#strategy", Select).value == "blue-green")
        assert form.query_one("#bake", Input).placeholder.startswith("the model's: 10m")
        fill(form, artifact="/srv/e/v7")
        await pilot.press("enter")
        modal = await confirm(pilot, app, "y")
        assert "starts it beside the serving copy" in modal.detail.plain
        await wait_for(pilot, lambda: bool(deploy_agent.posted))
        assert deploy_agent.posted[0] == (
            "POST /api/v1/models/embedder/deploy",
            {"artifact": "/srv/e/v7", "strategy": "blue-green"},
        )
        await wait_for(pilot, lambda: cells(app, "#deployments-table")[0][2] == "awaiting_approval")
        assert "waiting for an operator's approval" in text_of(app, "#detail")


async def test_from_a_model_view_and_an_older_agent(deploy_agent: DeployAgent) -> None:
    """From llama's view only llama is offered; an agent that does not say which models have
    a [model.deploy] offers them all (and refuses one that has none, as it words it)."""
    deploy_agent.settings_known = False
    app = make_app(deploy_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")  # llama's model view
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        await pilot.press("d")
        await wait_for(pilot, lambda: count(app, "#deployments-table") == 3)
        form = await open_form(pilot, app)
        assert [v for _label, v in form.query_one("#model", Select)._options] == ["llama"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        await pilot.press("escape", "escape")  # the model view, the host
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))
        await pilot.press("d")
        await wait_for(pilot, lambda: count(app, "#deployments-table") == 5)
        form = await open_form(pilot, app)
        models = [v for _label, v in form.query_one("#model", Select)._options]
        assert models == ["llama", "embedder", "whisper", "fresh"]
        assert "Not offered" not in text_of(app, "#detail")
        form.query_one("#model", Select).value = "whisper"
        fill(form, artifact=V5)
        await pilot.press("enter")
        await confirm(pilot, app, "y")
        await wait_for(pilot, lambda: any("HTTP 400" in n for n in notes(app)))
        assert any("model 'whisper' has no [model.deploy] link" in n for n in notes(app))


async def test_read_only_token_hides_and_refuses(deploy_agent: DeployAgent) -> None:
    app = make_app(deploy_agent, READ_TOKEN)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_deploys(pilot, app)
        await wait_for(pilot, lambda: app.client.scope == "read")
        assert "Deploy" not in footer_keys(app)
        await pilot.press("N")
        await pilot.pause()
        assert isinstance(app.screen, DeploymentsScreen)
        screen.action_new_deploy()  # a way around the hidden key (the palette, a script)
        await wait_for(pilot, lambda: any("Deploy refused" in n for n in notes(app)))
        assert any("read-only" in n for n in notes(app))
        assert not isinstance(app.screen, DeployScreen | ConfirmScreen)
        assert deploy_agent.posted == []


async def test_no_deployable_model_says_so(deploy_agent: DeployAgent) -> None:
    deploy_agent.deploy_settings.clear()
    app = make_app(deploy_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_deploys(pilot, app)
        await pilot.press("N")
        await wait_for(pilot, lambda: any("Nothing to deploy" in n for n in notes(app)))
        assert isinstance(app.screen, DeploymentsScreen)
        assert any("no model has a [model.deploy] link on gpu-host-01" in n for n in notes(app))


@pytest.mark.usefixtures("utc")
def test_deploy_dialog_snapshot(snap_compare: Snap) -> None:
    """80x24: the dialog fits, llama preselected with its strategy and bake."""

    def typed(app: VigilApp) -> bool:
        if not isinstance(app.screen, DeployScreen):
            return False
        app.screen.query_one("#artifact", Input).value = V5
        return "Not offered" in str(app.screen.query_one("#detail", Static).render())

    assert shoot(
        snap_compare,
        fixed_deploy_agent(),
        lambda app, host: host.open_deployments(),
        "#deployments-table",
        press=("N",),
        until=typed,
    )


async def test_help_lists_the_key(deploy_agent: DeployAgent) -> None:
    """``?`` on the deployments view lists N beside A and B, and ``/`` (out of the footer)."""
    app = make_app(deploy_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_deploys(pilot, app)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        listed = text_of(app, "#help-text")
        for line in ("N         Deploy", "B         Roll back", "/         Filter"):
            assert line in listed, listed


@pytest.mark.usefixtures("utc")
def test_deployments_help_snapshot(snap_compare: Snap) -> None:
    """80x24: the deployments view's keys (A dimmed: the deploy under the cursor is baking)."""
    assert shoot(
        snap_compare,
        fixed_deploy_agent(),
        lambda app, host: host.open_deployments(),
        "#deployments-table",
        press=("question_mark",),
        until=lambda app: isinstance(app.screen, HelpScreen),
    )
