"""The deploy engine, made on first need (issue 14).

The engine and the modules it loads (strategies, blue-green copies, proxies, config diffs,
canary statistics: ~40 modules, ~2.3 MB of the agent's memory) serve only hosts whose models
deploy. :class:`LazyDeploys` makes it at start when a model has ``[model.deploy]`` or a
deployment was left in flight by a previous agent, at a reload that brings such a model, or at
the first deploy request to the API (which then answers as before: 'cannot deploy' and why).
Until then the agent's hooks (probe answers, config resolution, reload planning) cost nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import Config

if TYPE_CHECKING:
    from agent.deploy.engine import DeployEngine, DeployHost
    from storage.writer import Writer

__all__ = ["LazyDeploys", "left_in_flight"]


class LazyDeploys:
    """One agent's deploy engine, or not yet."""

    def __init__(self, host: DeployHost, writer: Writer, db_path: Path) -> None:
        self._host = host
        self._writer = writer
        self._db_path = db_path
        self.running: DeployEngine | None = None
        """The engine once made (the hooks that only feed it skip while it is None)."""
        self.in_flight_at_start = False
        """A deployment a previous agent left in flight: the engine resumes or rolls it back."""

    @property
    def engine(self) -> DeployEngine:
        """The engine, made now if it was not yet."""
        if self.running is None:
            from agent.deploy.engine import DeployEngine

            self.running = DeployEngine(self._host, self._writer, self._db_path)
        return self.running

    def needed(self, config: Config) -> bool:
        """Whether ``config`` (or what already runs) needs the engine."""
        return (
            self.running is not None
            or self.in_flight_at_start
            or any(m.deploy is not None for m in config.models)
        )


def left_in_flight(conn: sqlite3.Connection) -> bool:
    """Whether the database holds a deployment in flight (an unreadable one: True, so that the
    engine looks and says why)."""
    try:
        row = conn.execute("SELECT 1 FROM deployments WHERE in_flight = 1 LIMIT 1").fetchone()
    except sqlite3.Error:
        return True
    return row is not None
