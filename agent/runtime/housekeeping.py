"""Retention as a job of the agent: one pass at a time, in small steps on the writer thread
between its batches, so purging a backlog never holds up the samples and events behind it."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator

from agent.config import AgentConfig
from probes.base import now_ms
from storage.retention import RetentionPolicy, RetentionResult, retention_steps
from storage.writer import Writer

log = logging.getLogger("vigil.agent")


class Retention:
    """Queues retention passes on the writer; never two at once."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.running = False

    def run(self, a: AgentConfig) -> None:
        """Queue a pass with ``a``'s retention settings (nothing while one is still going)."""
        if self.running:
            return  # a long first pass (a backlog) is still going: never run two at once
        policy = RetentionPolicy(
            raw_ms=int(a.retention_s * 1000),
            rollup_1m_ms=int(a.retention_1m_s * 1000),
            rollup_1h_ms=int(a.retention_1h_s * 1000),
            events_ms=None if a.retention_events_s is None else int(a.retention_events_s * 1000),
        )
        now = now_ms()
        result = RetentionResult()
        started = time.monotonic()

        def steps(conn: sqlite3.Connection) -> Iterator[None]:
            return retention_steps(conn, now, policy, result)

        def done() -> None:
            self.running = False
            if result.deleted:
                log.info(
                    "retention purged %s steps=%d max_step_ms=%.1f total_s=%.2f",
                    " ".join(f"{k}={v}" for k, v in sorted(result.deleted.items())),
                    result.steps,
                    result.max_step_s * 1000,
                    time.monotonic() - started,
                )

        self.running = True
        self.writer.run_steps(steps, on_done=done)
