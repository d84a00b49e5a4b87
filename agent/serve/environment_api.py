"""``GET /api/v1/environment``: the agent's serving-environment fingerprint.

The answer (``read`` scope)::

    {"hash": "sha256:1a2b3c4d5e6f7a8b", "collected_ms": 1733900000000,
     "sections": {"host": {"kernel": "6.1.0-18-amd64", ...}, "gpu": {...},
                  "process:vllm": {"python": "3.11.7", "pkg:torch": "2.4.0", ...},
                  "model:llama": {"server.version": "0.6.3", ...}},
     "last_change": {"ts_ms": ..., "message": "...", "changes": [
         {"section": "process:vllm", "item": "pkg:torch", "old": "2.3.0", "new": "2.4.0"}]}}

``?history=N`` (1-1000) adds ``history``: the newest N item changes from the database, newest
first, each ``{"ts_ms", "section", "item", "old", "new"}``. ``GET /api/v1/status`` carries the
``hash`` as ``environment_hash`` (:func:`environment_hash`), so a fleet view polling status
learns without another request whether a host's environment moved or differs from its peers.
See :mod:`agent.runtime.environment` for what is collected and when.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from agent.serve.httpmessages import Request, Response, json_response, whole_number
from agent.serve.params import error
from agent.serve.routing import Router
from storage import environment as envstore
from storage.db import DB_FILENAME, connect

__all__ = ["MAX_HISTORY", "environment_hash", "register"]

MAX_HISTORY = 1000


class EnvironmentView(Protocol):
    """The agent's fingerprint job (:class:`agent.runtime.environment.EnvironmentJob`)."""

    hash: str | None

    def state(self) -> dict[str, Any]:
        """The current fingerprint, its hash, when it was read and its last change."""
        ...


def _job(agent: object) -> EnvironmentView | None:
    # A stand-in agent in a test may have none.
    job = getattr(agent, "environment", None)
    return job if job is not None and hasattr(job, "state") else None


def environment_hash(agent: object) -> str | None:
    """The fingerprint's compact hash, None before the first collection."""
    job = _job(agent)
    return job.hash if job is not None else None


def register(app: Router, agent: object) -> None:
    """Add the route to ``app``."""

    async def environment(request: Request) -> Response:
        job = _job(agent)
        if job is None:
            return error(503, "this agent records no serving environment")
        body = job.state()
        raw = request.query.get("history")
        if raw is not None:
            limit = whole_number(raw)
            if limit is None or not 1 <= limit <= MAX_HISTORY:
                return error(
                    400, f"history: expected a whole number from 1 to {MAX_HISTORY}, got {raw!r}"
                )
            data_dir = getattr(agent, "data_dir", None)
            if data_dir is None:
                return error(503, "this agent has no database to read history from")
            path = data_dir / DB_FILENAME

            def read() -> list[dict[str, Any]]:
                conn = connect(path, readonly=True)
                try:
                    rows = envstore.history(conn, limit)
                finally:
                    conn.close()
                return [{"ts_ms": ts, **change.to_json()} for ts, change in rows]

            body = {**body, "history": await asyncio.to_thread(read)}
        return json_response(body)

    app.add_get("/api/v1/environment", environment)
