"""``GET /api/v1/remote_write``: the forwarder's state, counters and lag (``read``).

The forwarder (:mod:`agent.forward`) is reached through the agent, never imported: the API
serves a stand-in agent in tests, and an agent without ``[remote_write]`` answers
``{"configured": false}``. :func:`register` adds the route (one line in ``build_app``).
"""

from __future__ import annotations

from typing import Any, Protocol

from agent.serve.httpmessages import Request, Response, json_response
from agent.serve.routing import Router

__all__ = ["ForwardView", "register"]


class ForwardView(Protocol):
    """What the route reads of the forwarder (:class:`agent.forward.RemoteWrite`)."""

    def state(self) -> dict[str, Any]:
        """Its state as JSON."""
        ...


def register(app: Router, agent: object) -> None:
    """Add ``GET /api/v1/remote_write`` for ``agent`` (its ``remote_write``, if it has one)."""

    async def remote_write(request: Request) -> Response:
        forward: ForwardView | None = getattr(agent, "remote_write", None)
        return json_response(forward.state() if forward is not None else {"configured": False})

    app.add_get("/api/v1/remote_write", remote_write)
