"""What the forwarder reports: its state, counters and lag, as ``/metrics`` families and as the
API's JSON (``GET /api/v1/remote_write``)."""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.serve.exposition import Family, add_total, counter, gauge


class ForwardState(enum.StrEnum):
    """Where the forwarder stands with its receiver."""

    STARTING = "starting"
    """Nothing sent yet since the agent (or the config) started."""
    OK = "ok"
    """Everything stored up to the last send was accepted: caught up."""
    CATCHING_UP = "catching_up"
    """Sending a backlog (after an outage or a restart), batch after batch."""
    RETRYING = "retrying"
    """The last request failed (the receiver down, 5xx, 429, refusing our credentials): the
    same samples are sent again after a backoff; nothing moves past them meanwhile."""


FAILURE_REASONS = ("connect", "timeout", "5xx", "429", "4xx")
"""``vigil_remote_write_requests_failed_total{reason}``: no connection (refused, unreachable,
TLS), no answer in time, or the receiver's answer by class."""


@dataclass(slots=True)
class ForwardStats:
    """The forwarder's numbers since the agent started."""

    url: str = ""
    """The receiver, without credentials or query."""
    state: ForwardState = ForwardState.STARTING
    samples_sent: int = 0
    samples_rejected: int = 0
    """Refused by the receiver with 400/409/413/422 and skipped (see docs/fleet.md)."""
    samples_dropped: int = 0
    """Removed by retention before they could be sent."""
    requests: int = 0
    requests_failed: dict[str, int] = field(default_factory=dict)
    last_success_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    sent_through_ms: int | None = None
    """Everything stored before this time was sent (set when a read found nothing more)."""
    started_ms: int = 0
    """When forwarding started (the agent's start, or the reload that turned it on)."""

    def failed(self, reason: str, error: str, at_ms: int) -> None:
        """Count a failed request."""
        self.requests_failed[reason] = self.requests_failed.get(reason, 0) + 1
        self.last_error = error
        self.last_error_ms = at_ms

    def lag_s(self, now_ms: int) -> float:
        """How far behind the receiver is: now minus the time up to which everything stored
        was sent (since forwarding started, when nothing was caught up yet)."""
        through = self.sent_through_ms if self.sent_through_ms is not None else self.started_ms
        return max(0.0, (now_ms - through) / 1000)

    def as_json(self, now_ms: int | None = None) -> dict[str, Any]:
        """``GET /api/v1/remote_write``."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return {
            "configured": True,
            "url": self.url,
            "state": str(self.state),
            "lag_s": round(self.lag_s(now), 3),
            "sent_through_ms": self.sent_through_ms,
            "last_success_ms": self.last_success_ms,
            "last_error": self.last_error,
            "last_error_ms": self.last_error_ms,
            "samples_sent": self.samples_sent,
            "samples_rejected": self.samples_rejected,
            "samples_dropped": self.samples_dropped,
            "requests": self.requests,
            "requests_failed": {r: self.requests_failed.get(r, 0) for r in FAILURE_REASONS},
        }

    def families(self, now_ms: int | None = None) -> Iterator[Family]:
        """The ``vigil_remote_write_*`` families."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        for name, doc, value in (
            ("samples_sent", "Samples the receiver accepted", self.samples_sent),
            (
                "samples_rejected",
                "Samples the receiver refused (400/409/413/422) and that were skipped",
                self.samples_rejected,
            ),
            (
                "samples_dropped",
                "Samples retention removed before they could be sent",
                self.samples_dropped,
            ),
            ("requests", "Remote-write requests sent", self.requests),
        ):
            fam = counter(f"vigil_remote_write_{name}", doc)
            add_total(fam, [], float(value))
            yield fam
        failed = counter(
            "vigil_remote_write_requests_failed",
            "Failed remote-write requests by reason (connect, timeout, 5xx, 429, 4xx)",
            labels=["reason"],
        )
        for reason in FAILURE_REASONS:
            add_total(failed, [reason], float(self.requests_failed.get(reason, 0)))
        yield failed
        yield gauge(
            "vigil_remote_write_lag_seconds",
            "Now minus the time up to which every stored sample was sent",
            value=self.lag_s(now),
        )
        yield gauge(
            "vigil_remote_write_last_success_timestamp_seconds",
            "When the receiver last accepted a request (0: not yet)",
            value=(self.last_success_ms or 0) / 1000,
        )
        state = gauge(
            "vigil_remote_write_state", "1 for the forwarder's current state", labels=["state"]
        )
        for s in ForwardState:
            state.add([str(s)], 1.0 if s == self.state else 0.0)
        yield state
