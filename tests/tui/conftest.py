"""Fixtures for TUI tests: fake agents on loopback (see :mod:`tests.fakes.agent_api`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.agent_api import FakeAgent
from tests.fakes.triage_agent import TriageAgent


@pytest.fixture(autouse=True)
def _private_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the TUI remembers between runs (tui.view.uistate) goes to a temporary directory,
    never the developer's own ``~/.local/state``."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
async def fake_agent() -> AsyncIterator[FakeAgent]:
    agent = FakeAgent()
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


@pytest.fixture
async def triage_agent() -> AsyncIterator[FakeAgent]:
    """The fake agent with every route of the triage views (see tests/fakes/triage_agent.py)."""
    agent = TriageAgent()
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()
