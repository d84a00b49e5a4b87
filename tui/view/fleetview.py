"""The fleet's state, one :class:`FleetMember` per agent, and what a fleet row shows.

No Textual here: a member polls its agent (its compact summary, ``/api/v1/summary``, with
the last ``ETag``; from an older agent its status each time, its models' latencies and open
incidents every few seconds, side by side; each request under the client's timeout), keeps
the last good answer as a :class:`~tui.view.fleetsummary.HostSummary`, and remembers when it
last succeeded, so the screen can show an unreachable or slow agent with the age of its data.
Sorting and filtering are plain functions over members, tested on their own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tui.fleet import FleetEntry
from tui.remote.client import AgentClient, AgentError
from tui.remote.transport import SshTunnel
from tui.view.fleetsummary import (
    Details,
    HostSummary,
    read_details,
    summarize,
    summarize_compact,
)

SPARK_LEN = 30
"""CPU samples kept per agent for the row's sparkline."""
SLOW_AFTER_S = 1.0
"""A poll still waiting after this long marks the agent ``slow`` (before its timeout)."""
DETAILS_EVERY_S = 5.0
"""Models' latency percentiles (over 5 minutes) and open incidents are asked for this often;
the status, which carries every model's and process's state, at every poll."""
RETRY_MAX_S = 30.0
"""Longest wait between two attempts to set up an ``ssh://`` agent that keeps failing."""


class FleetMember:
    """One agent of the fleet: how to reach it, and what we last learned from it.

    Args:
        entry: The fleet file's entry.
        clock: ``time.monotonic`` (tests pass their own).

    Attributes:
        summary: The last good answer, kept while the agent is unreachable.
        error: The last poll's failure; None after a success.
        last_ok_at: ``clock()`` of the last good answer.
        started_at: ``clock()`` when the poll in flight started; None when idle.
        finished_at: ``clock()`` when the last poll ended.
        cpu_history: Recent total-CPU values, oldest first: one per answer with news (a 304
            adds none).
    """

    def __init__(self, entry: FleetEntry, clock: Callable[[], float] = time.monotonic) -> None:
        self.entry = entry
        self.clock = clock
        self.tunnel: SshTunnel | None = None
        self._client: AgentClient | None = None
        if entry.is_ssh:
            self.tunnel = SshTunnel(
                entry.ssh_address(),
                token=entry.token,
                options=entry.ssh_options,
                timeout_s=entry.timeout_s,
                connect_timeout_s=entry.connect_timeout_s,
            )
        else:
            assert entry.token is not None  # the fleet file requires one for http(s)
            self._client = AgentClient(
                entry.url, entry.token, entry.timeout_s, ssl_context=entry.ssl_context
            )
        self.summary: HostSummary | None = None
        self.error: AgentError | None = None
        self.last_ok_at: float | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.polls = 0
        self.cpu_history: deque[float] = deque(maxlen=SPARK_LEN)
        self._failures = 0
        self._retry_at = 0.0
        self._details_at: float | None = None
        self._details = Details()
        self._compact: bool | None = None
        """Whether the agent serves ``/api/v1/summary``; None until it said."""
        self._etag: str | None = None
        self.changes = 0
        """Bumped when a poll may have changed what the row shows (a new summary, an error
        set or cleared, a poll that ran long enough to show as slow); a 304 does not."""

    def __repr__(self) -> str:
        return f"FleetMember({self.entry.name!r}, {self.entry.url!r})"

    @property
    def name(self) -> str:
        """The fleet file's name for the agent (the row key)."""
        return self.entry.name

    @property
    def client(self) -> AgentClient | None:
        """The agent's client, or None for an ``ssh://`` agent not connected yet."""
        if self.tunnel is not None:
            return self.tunnel.client
        return self._client

    @property
    def busy(self) -> bool:
        """Whether a poll is in flight."""
        return self.started_at is not None

    def due(self, now: float) -> bool:
        """Whether a new poll may start: none in flight, and no ssh back-off pending."""
        return self.started_at is None and now >= self._retry_at

    def retry_now(self) -> None:
        """Forget any back-off: the next round polls this agent too."""
        self._retry_at = 0.0

    def is_slow(self, now: float) -> bool:
        """Whether the poll in flight has waited longer than :data:`SLOW_AFTER_S`."""
        return self.started_at is not None and now - self.started_at > SLOW_AFTER_S

    def state(self, now: float) -> str:
        """The row's state word: a failure kind, ``slow``, ``connecting``, or the health."""
        if self.error is not None:
            return self.error.kind
        if self.is_slow(now):
            return "slow"
        if self.summary is None:
            return "connecting"
        return self.summary.health

    def data_age(self, now: float) -> float | None:
        """Seconds since the last good answer; None before the first one."""
        return None if self.last_ok_at is None else max(0.0, now - self.last_ok_at)

    async def poll(self) -> None:
        """Ask the agent for its row (``/api/v1/summary``, sent with the last ``ETag`` so an
        unchanged agent answers 304 and costs almost nothing); from an agent without that
        route (404), its status and, every :data:`DETAILS_EVERY_S`, its models' latencies
        and open incidents, side by side. Record what happened.

        Never raises :class:`AgentError` (it becomes :attr:`error`); every request is bounded
        by the client's timeout and the ssh set-up by the entry's connect timeout.
        """
        self.started_at = self.clock()
        was = (self.summary, self.error)
        try:
            client = await self._connect()
            summary = await self._read(client)
        except AgentError as exc:
            await self._failed(exc)
        else:
            if summary is not None:  # None: unchanged since the last answer (304)
                self.summary = summary
                if summary.cpu_percent is not None:
                    self.cpu_history.append(summary.cpu_percent)
            self.error = None
            self.last_ok_at = self.clock()
            self._failures = 0
            self._retry_at = 0.0
        finally:
            self.polls += 1
            self.finished_at = self.clock()
            # A poll long enough to have shown as slow changed the row too.
            if (self.summary, self.error) != was or self.is_slow(self.finished_at):
                self.changes += 1
            self.started_at = None

    async def _read(self, client: AgentClient) -> HostSummary | None:
        """The agent's row: from ``/api/v1/summary`` (None when unchanged), else, from an
        agent without it, from the documents it stands for."""
        if self._compact is not False:
            try:
                answer = await client.get_if_changed(
                    "/api/v1/summary", self._etag if self.summary is not None else None
                )
            except AgentError as exc:
                if exc.status != 404 or self._compact:
                    raise
                self._compact = False  # an older agent: asked again after a failure
            else:
                self._compact = True
                if answer is None:
                    return None
                body, self._etag = answer
                try:
                    return summarize_compact(body)
                except ValueError as exc:
                    raise AgentError(str(exc), "protocol") from None
        return await self._read_documents(client)

    async def _read_documents(self, client: AgentClient) -> HostSummary:
        """The row from ``/api/v1/status``, and every :data:`DETAILS_EVERY_S` from
        ``/api/v1/models`` and ``/api/v1/incidents`` too (an agent older than the summary)."""
        assert self.started_at is not None
        details = self._details_at is None or self.started_at - self._details_at >= (
            DETAILS_EVERY_S
        )
        requests = [client.get_json("/api/v1/status")]
        if details:
            requests += [
                client.get_json("/api/v1/models"),
                client.get_json("/api/v1/incidents", {"state": "open", "limit": "1000"}),
            ]
        answers: list[Any] = await asyncio.gather(*requests, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, AgentError):
                raise answer
        if isinstance(answers[0], AgentError):
            raise answers[0]
        if details:
            # An older agent without these routes still gets its row; the cells say "?".
            self._details = read_details(
                None if isinstance(answers[1], AgentError) else answers[1],
                None if isinstance(answers[2], AgentError) else answers[2],
            )
            self._details_at = self.started_at
        try:
            return summarize(answers[0], details=self._details)
        except ValueError as exc:
            raise AgentError(str(exc), "protocol") from None

    async def _connect(self) -> AgentClient:
        if self.tunnel is not None:
            return await self.tunnel.connect()
        assert self._client is not None
        return self._client

    async def _failed(self, exc: AgentError) -> None:
        self._failures += 1
        self._details_at = None  # ask again for everything once it answers
        self._compact = None  # it may have been upgraded (or replaced) meanwhile
        self._etag = None
        tunnel = self.tunnel
        if tunnel is None:
            self.error = exc
            return
        # ssh's own reason beats the client's "server disconnected" when the forward died.
        died = tunnel.forward_died()
        if died is not None:
            exc = died
        elif tunnel.is_up and not exc.message.startswith(str(tunnel.address)):
            exc = AgentError(f"{tunnel.address}: {exc.message}", exc.kind)
        self.error = exc
        # Set everything up again next time: the agent may have restarted on another port.
        if exc.kind in ("unreachable", "timeout", "protocol", "config"):
            await tunnel.reset()
        # Back off: do not spawn ssh every second towards a host that is down.
        if self._failures > 1:
            delay = min(RETRY_MAX_S, 2.0 ** (self._failures - 1))
            self._retry_at = self.clock() + delay

    async def aclose(self) -> None:
        """Close the client and stop any ssh child."""
        if self.tunnel is not None:
            await self.tunnel.aclose()
        elif self._client is not None:
            await self._client.aclose()


STATE_SEVERITY = {
    "unreachable": 0,
    "timeout": 0,
    "rejected": 1,
    "forbidden": 1,
    "config": 1,
    "http": 2,
    "protocol": 2,
    "failing": 3,
    "slow": 4,
    "degraded": 5,
    "connecting": 6,
    "ok": 7,
}
"""Worst first: the order of the ``status`` sort."""

SORT_KEYS = ("name", "status", "alerts", "ttft", "gpu", "incidents", "cpu", "age")
"""What the fleet can be sorted by, in the order the ``s`` key cycles through them."""


def _missing_last(value: float | None, descending: bool = True) -> tuple[int, float]:
    if value is None:
        return (1, 0.0)
    return (0, -value if descending else value)


def sort_members(
    members: Iterable[FleetMember], key: str, now: float, reverse: bool = False
) -> list[FleetMember]:
    """Order members for display; the name breaks ties, and unknown values go last.

    Args:
        members: The members to order.
        key: One of :data:`SORT_KEYS`. ``name`` is A-Z; ``status`` worst first; ``alerts``
            the most critical alerts first, then the most firing, then the most muted; the
            measures highest (or, for ``age``, stalest) first.
        now: The clock's now, for ``status`` (slow) and ``age``.
        reverse: Reverse the order (unknown values still last).

    Returns:
        The sorted members.
    """

    def measure(m: FleetMember) -> float | None:
        s = m.summary
        if key == "alerts":
            a = None if s is None else s.alerts
            # Paging hosts first: critical, then firing; muted ones only break ties.
            return None if a is None else a.critical * 1e6 + a.firing + a.muted / 1e6
        if key == "ttft":
            return None if s is None else s.latency_p95_ms
        if key == "gpu":
            return None if s is None else s.gpu_util_percent
        if key == "incidents":
            return None if s is None or s.open_incidents is None else float(s.open_incidents)
        if key == "cpu":
            return None if s is None else s.cpu_percent
        if key == "age":
            return m.data_age(now)
        raise ValueError(f"unknown sort key {key!r}")

    items = list(members)
    items.sort(key=lambda m: m.name.lower())
    if key == "name":
        return items[::-1] if reverse else items
    if key == "status":
        ranked = sorted(items, key=lambda m: STATE_SEVERITY.get(m.state(now), 2))
        return ranked[::-1] if reverse else ranked
    known = [m for m in items if measure(m) is not None]
    unknown = [m for m in items if measure(m) is None]
    known.sort(key=lambda m: _missing_last(measure(m)), reverse=reverse)
    return known + unknown


def matches(member: FleetMember, words: Sequence[str], now: float) -> bool:
    """Whether every word (lower case) is in the member's name, URL, host, state or problem."""
    if not words:
        return True
    s = member.summary
    haystack = " ".join(
        (
            member.name,
            member.entry.url,
            s.host if s else "",
            member.state(now),
            member.error.message if member.error else "",
            " ".join(s.reasons) if s else "",
        )
    ).lower()
    return all(w in haystack for w in words)


def filter_words(text: str) -> list[str]:
    """Split a filter into lower-case words (all must match)."""
    return text.lower().split()
