"""The triage views and actions, driven by Pilot against the fake agent (fast and exact); the
same flows against real agents are in test_triage_real_*.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rich.text import Text
from textual.command import CommandPalette
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import DataTable, Log, Static

from storage.records import ModelStatus
from tests.fakes.triage_agent import READ_TOKEN, TOKEN, TriageAgent
from tests.tui.test_host_screen import wait_for
from tui.app import VigilApp
from tui.remote.client import AgentClient, operator_identity
from tui.screens.confirm import ConfirmScreen
from tui.screens.events import EventsScreen
from tui.screens.help import HelpScreen
from tui.screens.host import HostScreen
from tui.screens.incidents import IncidentsScreen
from tui.screens.model import ModelScreen
from tui.screens.process import ProcessScreen

REFRESH_S = 0.5
EVIL_NAMES = ("[@click=app.quit]", "\x1b[31mevil\x1b[0m")


def make_app(agent: TriageAgent, token: str = TOKEN) -> VigilApp:
    return VigilApp(AgentClient(agent.url, token, timeout_s=2.0), refresh_s=REFRESH_S)


def table(app: VigilApp, selector: str) -> DataTable[Text]:
    return app.screen.query_one(selector, DataTable)


def count(app: VigilApp, selector: str) -> int:
    """Rows of a table, 0 while the view is still being built."""
    try:
        return table(app, selector).row_count
    except NoMatches:
        return 0


def cells(app: VigilApp, selector: str) -> list[list[str]]:
    t = table(app, selector)
    return [[c.plain for c in t.get_row_at(i)] for i in range(t.row_count)]


def text_of(app: VigilApp, selector: str) -> str:
    content = app.screen.query_one(selector, Static).content
    return content.plain if isinstance(content, Text) else str(content)


def notes(app: VigilApp) -> list[str]:
    return [n.message for n in app._notifications]


def footer_keys(app: VigilApp) -> set[str]:
    """Descriptions of the bindings the footer shows now."""
    return {
        b.binding.description
        for b in app.screen.active_bindings.values()
        if b.binding.show and b.enabled
    }


async def ready(pilot: Pilot[None], app: VigilApp) -> HostScreen:
    await wait_for(pilot, lambda: count(app, "#models") > 0)
    screen = app.screen
    assert isinstance(screen, HostScreen)
    return screen


async def confirm(pilot: Pilot[None], app: VigilApp, key: str = "y") -> ConfirmScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    modal = app.screen
    assert isinstance(modal, ConfirmScreen)
    await pilot.press(key)
    await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
    return modal


async def test_enter_on_a_model_opens_its_view_and_esc_comes_back(
    triage_agent: TriageAgent,
) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")  # llama, the first row
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        await wait_for(pilot, lambda: count(app, "#runs-table") == 8)
        assert text_of(app, "#title").startswith("model llama · openai · up for 3m")
        summary = text_of(app, "#summary")
        assert summary.startswith("1h: 96.0% available · ok 96 · slow 2 · refused 1 · timeout 1")
        assert summary.endswith("no open incident")
        e2e = text_of(app, "#chart-e2e_ms .chart-stats")
        assert e2e == "p50   120 p95   360 p99   540 ms (5m)"
        runs = cells(app, "#runs-table")
        assert runs[0] == ["2s", "ok", "200", "100", "20.0", "5.0", "-"]
        assert runs[4][1:3] == ["timeout", "-"] and runs[4][-1] == "timeout after 1.0s"
        result = table(app, "#runs-table").get_row_at(4)[1]
        assert str(result.style) == "red"  # failures are red, slow yellow, ok green
        # j/k move the cursor, as in k9s.
        await pilot.press("j", "j", "k")
        assert table(app, "#runs-table").cursor_row == 1
        await pilot.press("3")
        await wait_for(pilot, lambda: count(app, "#deployments-table") == 1)
        assert cells(app, "#deployments-table")[0][1:] == ["abababababab", "cdcdcdcdcdcd", "ok"]
        await pilot.press("4")
        await wait_for(pilot, lambda: "onnxruntime" in text_of(app, "#info-text"))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))
        # The whisper model has an open incident: its view says so in red.
        await pilot.press("j", "j", "enter")
        await wait_for(pilot, lambda: "incident #3" in text_of(app, "#summary"))
        await pilot.press("2")
        await wait_for(pilot, lambda: count(app, "#incidents-table") == 1)
        assert cells(app, "#incidents-table")[0][:4] == ["#3", "open", "critical", "model:whisper"]


async def test_process_view_shows_state_history_and_a_literal_log(
    triage_agent: TriageAgent,
) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))
        log = app.screen.query_one(Log)
        await wait_for(pilot, lambda: log.line_count == 4)
        title = text_of(app, "#title")
        assert title.startswith("process vllm-server · running for 1h · pid 4242 · restarts 1")
        assert cells(app, "#history")[0][1:] == ["process.action", "restart by alice@laptop"]
        assert list(log.lines) == [
            "server starting",
            "[@click=app.quit] not a link",
            "red text and a bell",
            "listening on :8000",
        ]
        # New output is appended, not redrawn.
        triage_agent.logs = [*triage_agent.logs, "one more line"]
        await wait_for(pilot, lambda: log.line_count == 5)
        assert log.lines[-1] == "one more line"
        await pilot.click(Log, offset=(3, 2))  # on the [@click=...] line
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, ProcessScreen)


async def test_process_actions_ask_first_and_name_the_operator(
    triage_agent: TriageAgent,
) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))
        await pilot.press("R")
        modal = await confirm(pilot, app, "n")
        assert modal.question.plain == "Restart process vllm-server?"
        assert f"Recorded in the audit trail as {operator_identity()}." in modal.detail.plain
        await wait_for(pilot, lambda: "Restart cancelled" in notes(app))
        assert triage_agent.actions == []

        await pilot.press("R")
        await confirm(pilot, app, "y")
        await wait_for(pilot, lambda: len(triage_agent.actions) == 1)
        assert triage_agent.actions == [
            ("POST /api/v1/processes/vllm-server/restart", operator_identity(), "operate")
        ]
        await wait_for(pilot, lambda: "restart of vllm-server accepted (was running)" in notes(app))

        # The mouse works too: the buttons of the dialog.
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#no")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#yes")
        await wait_for(pilot, lambda: len(triage_agent.actions) == 2)
        assert triage_agent.actions[-1][0] == "POST /api/v1/processes/vllm-server/start"

        # An action that does not apply: the agent's reason, in an error notification.
        await pilot.press("u")
        await confirm(pilot, app)
        await wait_for(pilot, lambda: any("not quarantined" in n for n in notes(app)))
        assert triage_agent.actions[-1][0] == "POST /api/v1/processes/vllm-server/release"


async def test_host_row_actions_follow_the_focused_table(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        await wait_for(
            pilot, lambda: app.screen.query_one(HostScreen.__name__ + " #models").has_focus
        )
        assert {"Probe", "Report", "Incidents", "Events"} <= footer_keys(app)
        assert "Restart" not in footer_keys(app)
        await pilot.press("j", "p")  # the second model, embedder
        modal = await confirm(pilot, app)
        assert modal.question.plain == "Probe model embedder now?"
        await wait_for(pilot, lambda: len(triage_agent.actions) == 1)
        assert triage_agent.actions[0][0] == "POST /api/v1/models/embedder/probe"

        await pilot.press("tab")
        await wait_for(pilot, lambda: "Restart" in footer_keys(app))
        assert "Probe" not in footer_keys(app)
        await pilot.press("j", "R")  # llama-cpp
        await confirm(pilot, app)
        await wait_for(pilot, lambda: len(triage_agent.actions) == 2)
        assert triage_agent.actions[1][0] == "POST /api/v1/processes/llama-cpp/restart"


async def test_host_filter_narrows_both_tables(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("slash", *"llama")
        await wait_for(pilot, lambda: count(app, "#models") == 1)
        assert cells(app, "#models")[0][0] == "llama"
        assert [r[0] for r in cells(app, "#processes")] == ["llama-cpp"]
        await pilot.press("enter")  # keep the filter, back to the table
        assert app.screen.query_one("#models").has_focus
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))
        assert count(app, "#models") == 1
        await pilot.press("escape")  # esc clears the filter
        await wait_for(pilot, lambda: count(app, "#models") == 4)
        assert count(app, "#processes") == 2


async def test_incidents_view_by_state_filter_acknowledge_and_resolve(
    triage_agent: TriageAgent,
) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, IncidentsScreen))
        await wait_for(pilot, lambda: count(app, "#incidents-table") == 3)
        rows = cells(app, "#incidents-table")
        assert [r[1] for r in rows] == ["open", "acknowledged", "resolved"]
        styles = [str(table(app, "#incidents-table").get_row_at(i)[1].style) for i in range(3)]
        assert styles == ["bold red", "yellow", "green"]
        assert "connection refused (3 runs in a row)" in text_of(app, "#detail")

        await pilot.press("a")
        modal = await confirm(pilot, app)
        assert modal.question.plain == "Acknowledge incident #3?"
        await wait_for(pilot, lambda: triage_agent.incidents[0].state == "acknowledged")
        assert triage_agent.actions[-1][:2] == (
            "POST /api/v1/incidents/3/acknowledge",
            operator_identity(),
        )
        await wait_for(pilot, lambda: cells(app, "#incidents-table")[0][1] == "acknowledged")
        # Already acknowledged: "a" is shown dimmed and does nothing; "c" resolves.
        screen = app.screen
        assert screen.check_action("incident", ("acknowledge",)) is None
        await pilot.press("c")
        await confirm(pilot, app)
        await wait_for(pilot, lambda: triage_agent.incidents[0].state == "resolved")

        await pilot.press("4")  # resolved only
        await wait_for(pilot, lambda: triage_agent.last_query.get("state") == "resolved")
        await wait_for(pilot, lambda: count(app, "#incidents-table") == 2)
        await pilot.press("1", "slash", *"embedder", "enter")
        await wait_for(pilot, lambda: count(app, "#incidents-table") == 1)
        assert cells(app, "#incidents-table")[0][3] == "model:embedder"
        assert screen.check_action("incident", ("resolve",)) is None  # resolved: nothing to do


async def test_events_view_filters_by_kind_and_subject_and_searches(
    triage_agent: TriageAgent,
) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen))
        await wait_for(pilot, lambda: count(app, "#events-table") == 8)
        await pilot.press("f", *"process.", "enter")
        await wait_for(pilot, lambda: count(app, "#events-table") == 3)
        assert triage_agent.last_query["kind"] == "process."
        assert {r[1] for r in cells(app, "#events-table")} == {
            "process.restarting",
            "process.exited",
            "process.action",
        }
        await pilot.press("slash", *"ALICE")
        await wait_for(pilot, lambda: count(app, "#events-table") == 1)
        assert "restart by alice@laptop" in text_of(app, "#detail")
        await pilot.press("escape")  # clears the search, back on the table
        await wait_for(pilot, lambda: count(app, "#events-table") == 3)
        await pilot.press("f", "ctrl+u", "enter", "b", *"agent", "enter")
        await wait_for(pilot, lambda: count(app, "#events-table") == 2)
        assert triage_agent.last_query == {"limit": "500", "subject": "agent"}
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))


async def test_model_and_process_views_open_their_events(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("tab", "j", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen))
        await wait_for(pilot, lambda: count(app, "#events-table") == 2)
        assert triage_agent.last_query["subject"] == "process:llama-cpp"


async def test_colon_jumps_to_any_view_by_name(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("colon")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"whisper")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        assert app.screen.model_name == "whisper"  # type: ignore[attr-defined]
        # A jump replaces the view instead of stacking another one.
        await pilot.press("colon", *"incidents")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, IncidentsScreen))
        assert [type(s).__name__ for s in app.screen_stack] == ["HostScreen", "IncidentsScreen"]
        await pilot.press("colon", *"alerts")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "AlertsScreen")
        assert [type(s).__name__ for s in app.screen_stack] == ["HostScreen", "AlertsScreen"]
        await pilot.press("colon", *"host")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HostScreen))


async def test_question_mark_lists_the_keys_of_the_view(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        help_text = text_of(app, "#help-text")
        for line in (
            "R         Restart",
            "u         Release",
            "esc       Back",
            "/         filter",
        ):
            assert line in help_text
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))


async def test_a_read_only_token_hides_and_refuses_actions(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent, token=READ_TOKEN)
    async with app.run_test(size=(80, 24)) as pilot:
        host = await ready(pilot, app)
        await wait_for(pilot, lambda: host.client.scope == "read")
        assert "Probe" not in footer_keys(app)
        assert "Report" in footer_keys(app)  # an export only reads
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, HostScreen)
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))
        assert not {"Start", "Stop", "Restart", "Release"} & footer_keys(app)
        await pilot.press("R", "s", "t", "u")
        await pilot.pause()
        assert isinstance(app.screen, ProcessScreen)
        # A way around the hidden keys (the palette, a script) is refused before asking.
        app.screen.action_process("restart")  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: any("Restart refused" in n for n in notes(app)))
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "This token is read-only" in text_of(app, "#help-text")
        await pilot.press("escape", "escape", "i")
        await wait_for(pilot, lambda: count(app, "#incidents-table") == 3)
        assert not {"Acknowledge", "Resolve"} & footer_keys(app)
    assert [a for a in triage_agent.actions if a[0].startswith("POST")] == []


async def test_a_403_from_an_older_agent_hides_the_actions_from_then_on(
    triage_agent: TriageAgent,
) -> None:
    triage_agent.whoami_missing = True  # an agent without /whoami: the scope is unknown
    app = make_app(triage_agent, token=READ_TOKEN)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("tab", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProcessScreen))
        assert "Restart" in footer_keys(app)
        await pilot.press("R")
        await confirm(pilot, app)
        await wait_for(pilot, lambda: any("read-only" in n for n in notes(app)))
        await wait_for(pilot, lambda: "Restart" not in footer_keys(app))
        assert triage_agent.actions == []


async def test_names_with_markup_or_escape_codes_are_shown_as_text(
    triage_agent: TriageAgent,
) -> None:
    status = triage_agent.status
    evil = tuple(
        ModelStatus(name, "openai", "http://127.0.0.1:1", "down", status.now_ms)
        for name in EVIL_NAMES
    )
    triage_agent.status = replace(status, models=evil + status.models)
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        assert [r[0] for r in cells(app, "#models")][:2] == ["[@click=app.quit]", "evil"]
        # A click on the highlighted row opens it (a markup action would quit instead).
        await pilot.click("#models", offset=(4, 2))
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        await wait_for(pilot, lambda: "down" in text_of(app, "#title"))
        assert text_of(app, "#title").startswith("model [@click=app.quit] · openai · down")
        await pilot.click("#title", offset=(8, 0))
        await pilot.press("p")
        modal = await confirm(pilot, app)
        assert modal.question.plain == "Probe model [@click=app.quit] now?"
        await wait_for(pilot, lambda: len(triage_agent.actions) == 1)
        assert triage_agent.actions[0][0] == "POST /api/v1/models/[@click=app.quit]/probe"

        # The escape codes are gone, the name is still the agent's for the requests.
        await pilot.press("escape", "j", "enter")
        await wait_for(pilot, lambda: getattr(app.screen, "model_name", "") == EVIL_NAMES[1])
        await wait_for(pilot, lambda: "down" in text_of(app, "#title"))
        assert text_of(app, "#title").startswith("model evil · openai")
        # The palette shows the names literally and jumps to them.
        await pilot.press("colon", *"click")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "model_name", "") == EVIL_NAMES[0])
        assert app.is_running and app.return_code is None


async def test_export_report_saves_the_agents_report_under_home(
    triage_agent: TriageAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        await pilot.press("x")
        modal = await confirm(pilot, app)
        assert modal.question.plain == "Export the host report of gpu-host-01?"
        assert f"Saved to {tmp_path}/vigil-report-gpu-host-01-" in modal.detail.plain
        await wait_for(pilot, lambda: any(n.startswith("report saved to") for n in notes(app)))
        (saved,) = tmp_path.glob("vigil-report-gpu-host-01-*.html")
        assert saved.read_text() == "<html><body>report</body></html>"
        assert f"report saved to {saved}" in notes(app)
        assert triage_agent.actions == [
            ("GET /api/v1/report?format=html", operator_identity(), "operate")
        ]


async def test_every_view_fits_80x24(triage_agent: TriageAgent) -> None:
    app = make_app(triage_agent)
    async with app.run_test(size=(80, 24)) as pilot:
        host = await ready(pilot, app)
        views = (
            (lambda: host.open_model("llama"), "#runs-table"),
            (lambda: host.open_process("vllm-server"), "#history"),
            (host.open_incidents, "#incidents-table"),
            (host.open_events, "#events-table"),
        )
        for opener, table_id in views:
            opener()
            await wait_for(pilot, lambda table_id=table_id: count(app, table_id) > 0)
            await pilot.pause()
            region = table(app, table_id).region
            # The table shows its header and at least two rows, above the footer line.
            assert region.height >= 4 and region.bottom <= 23, table_id
            assert app.screen.query_one("#title").region.y == 0
            if table_id == "#history":
                assert app.screen.query_one(Log).region.height >= 4
