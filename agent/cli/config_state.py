"""What ``vigil status`` says when the config that runs is not the file's: a config deploy
rolled back (the file still holds the change), or a change held while a deploy is in flight
(``GET /api/v1/config``, :mod:`agent.deploy.configdeploy`)."""

from __future__ import annotations

from typing import Any

from agent.cli.alerts_cmd import BadRequest, call
from agent.cli.api_client import AgentUnreachable, ApiClient
from storage.text import printable

__all__ = ["config_lines", "config_state"]


def config_state(client: ApiClient) -> dict[str, Any] | None:
    """The agent's config state; None when it does not say (an older agent, or none now)."""
    try:
        doc = call(client, "GET", "/api/v1/config")
    except (AgentUnreachable, BadRequest):
        return None
    return doc if isinstance(doc, dict) else None


def config_lines(state: dict[str, Any] | None) -> list[str]:
    """``config rolled back, file differs: ...`` lines (none when the file says what runs)."""
    if not state or not state.get("file_differs"):
        return []
    path = printable(state.get("path") or "the config file")
    out = []
    for r in state.get("rolled_back") or []:
        out.append(
            f"config rolled back, file differs: {printable(r['what'])} (config deploy "
            f"#{r['deployment']}: {printable(r['reason'])}); the previous config runs until "
            f"{path} is changed"
        )
    for h in state.get("held") or []:
        out.append(
            f"config change held: {printable(h['what'])} waits for deploy #{h['waits_for']} "
            f"of {printable(h['model'])} to end"
        )
    return out
