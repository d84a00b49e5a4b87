"""The alerts view (issue 15), driven by Pilot against the fake agent: it lists alerts firing
first, escapes what the agent sends, silences an alert's labels after a dialog that asks why,
expires a silence after a confirmation, and shows channels that fail to deliver."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.fakes.triage_agent import READ_TOKEN, TriageAgent, fixed_agent
from tests.tui.test_host_screen import wait_for
from tests.tui.test_snapshots import Snap, shoot, utc  # noqa: F401 - utc is an autouse fixture
from tests.tui.test_triage_views import cells, confirm, count, make_app, notes, ready, text_of
from tui.app import VigilApp
from tui.screens.alerts import AlertsScreen, SilenceScreen
from tui.view.alerts import counts, delivery_line, silence_matchers, sort_alerts


async def open_alerts(pilot: Pilot[None], app: VigilApp) -> AlertsScreen:
    await ready(pilot, app)
    await pilot.press("a")
    await wait_for(pilot, lambda: count(app, "#alerts-table") > 0)
    screen = app.screen
    assert isinstance(screen, AlertsScreen)
    return screen


def test_view_model_orders_firing_first_and_counts() -> None:
    agent = fixed_agent()
    ordered = [a["rule"] for a in sort_alerts(agent.alerts)]
    assert ordered == ["model_down", "process_restart_loop", "disk_filling", "model_degraded"]
    assert counts(agent.alerts) == {"firing": 1, "silenced": 1, "pending": 1, "resolved": 1}
    assert silence_matchers(agent.alerts[1]) == [
        'rule="model_down"',
        'subject="model:whisper"',
    ]
    line = delivery_line(agent.channels).plain
    assert "pager" in line and "HTTP 503" in line and "ops-webhook" not in line


async def test_lists_alerts_and_delivery_failures(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_alerts(pilot, app)
        rows = cells(app, "#alerts-table")
        assert [r[0] for r in rows] == ["firing", "silenced", "pending", "resolved"]
        assert rows[0][2] == "model_down"
        assert "1 firing" in text_of(app, "#title")
        assert "delivery failing" in text_of(app, "#delivery")
        assert cells(app, "#silences-table")[0][0] == "#7"


async def test_escapes_hostile_text(triage_agent: TriageAgent) -> None:
    triage_agent.alerts[1]["summary"] = "[@click=app.quit]boom \x1b[31mred\x1b[0m\x07"
    triage_agent.alerts[1]["subject"] = "[b]model[/b]"
    app = make_app(triage_agent)
    async with app.run_test(size=(160, 40)) as pilot:
        await open_alerts(pilot, app)
        row = cells(app, "#alerts-table")[0]
        assert row[3] == "[b]model[/b]"
        assert row[5] == "[@click=app.quit]boom red"
        await pilot.click("#detail")
        assert app.is_running


async def test_silence_posts_matchers_duration_and_comment(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    app.client.operator = "bob@desk"
    async with app.run_test(size=(120, 40)) as pilot:
        await open_alerts(pilot, app)
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, SilenceScreen))
        await pilot.press("enter")  # no comment: refused in the dialog
        assert isinstance(app.screen, SilenceScreen)
        app.screen.query_one("#duration", Input).value = "30m"
        await pilot.press(*"deploy")
        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(triage_agent.bodies))
        assert triage_agent.bodies == [
            {
                "matchers": ['rule="model_down"', 'subject="model:whisper"'],
                "duration": "30m",
                "comment": "deploy",
            }
        ]
        assert triage_agent.actions[-1] == ("POST /api/v1/silences", "bob@desk", "operate")
        await wait_for(pilot, lambda: any("silence #8 created" in n for n in notes(app)))


async def test_silence_cancelled_sends_nothing(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_alerts(pilot, app)
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, SilenceScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, AlertsScreen))
        assert triage_agent.actions == []


async def test_expire_deletes_after_confirmation(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_alerts(pilot, app)
        await pilot.press("j")  # the silenced alert: X expires the silence muting it
        await pilot.press("X")
        await confirm(pilot, app, "y")
        await wait_for(pilot, lambda: bool(triage_agent.actions))
        assert triage_agent.actions[0][0] == "DELETE /api/v1/silences/7"
        await wait_for(pilot, lambda: count(app, "#silences-table") == 0)


async def test_read_only_token_hides_actions(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent, READ_TOKEN)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_alerts(pilot, app)
        await wait_for(pilot, lambda: app.client.scope == "read")
        await pilot.press("S")
        await pilot.pause()
        assert not isinstance(app.screen, SilenceScreen)
        assert triage_agent.actions == []


@pytest.mark.usefixtures("utc")
def test_alerts_snapshot(snap_compare: Snap) -> None:
    assert shoot(
        snap_compare,
        fixed_agent(),
        lambda app, host: host.open_alerts(),
        "#alerts-table",
        until=lambda app: "delivery failing" in str(app.screen.query_one("#delivery").render()),
    )
