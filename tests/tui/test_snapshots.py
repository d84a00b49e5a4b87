"""Snapshots (pytest-textual-snapshot) of every triage view at 80x24 against the fake agent.

The fake agent's clock is fixed and the time zone is UTC, so the pictures are the same on
every run; ``pytest --snapshot-update tests/tui/test_snapshots.py`` rewrites them after an
intended change (look at them first: ``__snapshots__/test_snapshots/*.svg``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import DataTable

from storage.records import ModelStatus
from tests.fakes.triage_agent import READ_TOKEN, TOKEN, TriageAgent, agent_in_thread, fixed_agent
from tests.tui.test_host_screen import wait_for
from tui.app import VigilApp
from tui.remote.client import AgentClient
from tui.screens.host import HostScreen

SIZE = (80, 24)
Snap = Callable[..., bool]


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clock times in the views are local: make local UTC for these pictures."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def rows(app: VigilApp, selector: str) -> int:
    try:
        return app.screen.query_one(selector, DataTable).row_count
    except NoMatches:
        return 0


def shoot(
    snap_compare: Snap,
    agent: TriageAgent,
    then: Callable[[VigilApp, HostScreen], Any] | None = None,
    table: str = "#models",
    token: str = TOKEN,
    press: tuple[str, ...] = (),
    until: Callable[[VigilApp], bool] | None = None,
) -> bool:
    """Open the app on ``agent``, do ``then`` on the host screen, wait for ``table`` to fill,
    press keys, and compare the picture."""
    with agent_in_thread(agent):
        client = AgentClient(agent.url, token)
        client.operator = "alice@laptop"  # not whoever runs the tests
        # One fetch per view: a later one would only repeat it, and timing must not matter.
        app = VigilApp(client, refresh_s=3600)

        async def run_before(pilot: Pilot[None]) -> None:
            await wait_for(pilot, lambda: rows(app, "#models") > 0)
            host = app.screen
            assert isinstance(host, HostScreen)
            await wait_for(pilot, lambda: client.scope is not None)
            # The CPU history answers on its own: a picture taken before it lands differs.
            await wait_for(pilot, lambda: host.history_done)
            if then is not None:
                then(app, host)
            await wait_for(pilot, lambda: rows(app, table) > 0)
            if press:
                await pilot.press(*press)
            if until is not None:
                await wait_for(pilot, lambda: until(app))
            await pilot.pause()

        return snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_host(snap_compare: Snap) -> None:
    assert shoot(snap_compare, fixed_agent())


def test_host_read_only(snap_compare: Snap) -> None:
    """No probe or process actions in the footer; the report stays."""
    assert shoot(snap_compare, fixed_agent(), token=READ_TOKEN)


def test_host_with_markup_and_escape_codes_in_names(snap_compare: Snap) -> None:
    agent = fixed_agent()
    now = agent.status.now_ms
    evil = (
        ModelStatus("[@click=app.quit]", "openai", "[link=x]u", "down", now - 5000),
        ModelStatus("\x1b[31mred\x1b[0m\x07", "http", "http://x", "degraded", now - 5000),
    )
    agent.status = replace(agent.status, models=evil + agent.status.models[:2])
    assert shoot(snap_compare, agent)


def test_model(snap_compare: Snap) -> None:
    assert shoot(
        snap_compare, fixed_agent(), lambda app, host: host.open_model("llama"), "#runs-table"
    )


def test_process(snap_compare: Snap) -> None:
    assert shoot(
        snap_compare,
        fixed_agent(),
        lambda app, host: host.open_process("vllm-server"),
        "#history",
        until=lambda app: "4 lines" in str(app.screen.query_one("#log").border_subtitle),
    )


def test_confirm_restart(snap_compare: Snap) -> None:
    assert shoot(
        snap_compare,
        fixed_agent(),
        lambda app, host: host.open_process("vllm-server"),
        "#history",
        press=("R",),
        until=lambda app: type(app.screen).__name__ == "ConfirmScreen",
    )


def test_incidents(snap_compare: Snap) -> None:
    assert shoot(
        snap_compare, fixed_agent(), lambda app, host: host.open_incidents(), "#incidents-table"
    )


def test_events(snap_compare: Snap) -> None:
    assert shoot(snap_compare, fixed_agent(), lambda app, host: host.open_events(), "#events-table")


def test_help(snap_compare: Snap) -> None:
    """The host's keys, ``a`` (alerts, issue 15) and ``d`` (deployments, issue 16), both hidden
    from the footer, included."""
    assert shoot(
        snap_compare,
        fixed_agent(),
        press=("question_mark",),
        until=lambda app: type(app.screen).__name__ == "HelpScreen",
    )
