"""The sender: takes due notifications from the durable outbox and delivers them.

At-least-once: a notification is in the outbox (committed) before it is sent, and marked
delivered only after its receiver accepted it, so a crash between the two sends it again on the
next start, with the same id. Each channel sends its notifications one at a time, oldest first
(a resolution never overtakes its firing), paced by the channel's token bucket; a failed send is
retried with exponential backoff and jitter, or when the receiver's ``Retry-After`` says, and
given up as undelivered (with its error kept) when the receiver refuses the message itself or
the retry limit passes. A channel that is down or a failing database degrades delivery only:
nothing here raises into the agent, and the loop never waits on a receiver or on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from agent.alerting.channels.base import Channel, SendResult, wall_ms
from agent.alerting.model import NoticeKind, NotificationRequest
from agent.alerting.outbox_store import OutboxStore, OutboxUnavailable, request_of
from agent.alerting.ratelimit import RetryPolicy, TokenBucket
from storage.outbox import OutboxEntry

log = logging.getLogger("vigil.notify")

STORAGE_RETRY_MS = 5000
"""How soon to look again when the outbox could not be read or a mark not written."""


@dataclass
class ChannelHealth:
    """A channel's delivery state, for the API, ``/metrics`` and ``vigil status``."""

    name: str
    kind: str
    ok: bool = True
    last_error: str | None = None
    last_ok_ms: int | None = None
    last_failure_ms: int | None = None
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0


class Sender:
    """Delivers the outbox's notifications through their channels.

    Args:
        store: the outbox.
        channels: the configured channels (by their names); rows for other names wait.
        policy: retries and giving up.
        clock: UTC epoch milliseconds; tests pass a fake one and call :meth:`run_once`.
        rng: jitter's random source.
        batch: how many rows one channel takes per turn.
    """

    def __init__(
        self,
        store: OutboxStore,
        channels: Iterable[Channel],
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], int] = wall_ms,
        rng: random.Random | None = None,
        batch: int = 20,
    ) -> None:
        self.store = store
        self.channels = {c.name: c for c in channels}
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self.batch = batch
        now = clock()
        self.health = {n: ChannelHealth(n, c.kind) for n, c in self.channels.items()}
        self._buckets = {
            n: TokenBucket(c.settings.rate_per_s, c.settings.burst, now)
            for n, c in self.channels.items()
        }
        self._ready_ms: dict[str, int] = {}
        """A channel held back by its rate limit or a storage failure: not before then."""
        self._unrecorded: dict[str, list[Callable[[], Awaitable[None]]]] = {}
        """Per channel, outcomes sent but not yet written (storage failing): written first."""
        self._tasks: dict[str, asyncio.Task[bool]] = {}
        self._wake = asyncio.Event()

    def set_channels(self, channels: Iterable[Channel]) -> list[Channel]:
        """Take a new set of channels (config reload); returns the ones replaced or removed,
        for the caller to close. A channel kept as it was keeps its health and pacing; rows of
        a removed channel wait in the outbox (a channel of that name later sends them)."""
        old = self.channels
        self.channels = {c.name: c for c in channels}
        now = self.clock()
        for name, channel in self.channels.items():
            if old.get(name) is channel:
                continue
            if name not in self.health or self.health[name].kind != channel.kind:
                self.health[name] = ChannelHealth(name, channel.kind)
            s = channel.settings
            self._buckets[name] = TokenBucket(s.rate_per_s, s.burst, now)
        for name in [n for n in self.health if n not in self.channels]:
            del self.health[name]
            self._buckets.pop(name, None)
            self._ready_ms.pop(name, None)
        self._wake.set()
        return [c for n, c in old.items() if self.channels.get(n) is not c]

    # --- driving ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the outbox now (new notifications were written)."""
        self._wake.set()

    def add(self, requests: Iterable[NotificationRequest]) -> None:
        """Write notifications to the outbox and send them once written; never blocks.

        Call from the event loop (the alert notifier's step). The rows are committed by the
        writer thread first; only then can the sender see them, so nothing is sent unwritten.
        """
        batch = list(requests)
        if not batch:
            return
        loop = asyncio.get_running_loop()

        def written() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the next start sends
                loop.call_soon_threadsafe(self._wake.set)

        self.store.enqueue_nowait(batch, on_written=written)

    async def run_once(self) -> None:
        """One turn: every channel sends what is due now; returns when they are done."""
        await asyncio.gather(*(self._drain(name) for name in self.channels))

    async def run(self) -> None:
        """Deliver until cancelled: send what is due, then sleep until the next thing is."""
        try:
            while True:
                self._wake.clear()
                timeout = await self._start_due()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks.clear()

    async def close(self) -> None:
        """Release the channels' connections."""
        for channel in self.channels.values():
            with contextlib.suppress(Exception):
                await channel.close()

    async def _start_due(self) -> float | None:
        """Start a turn for each idle channel with something due; return the seconds until the
        next one may be (None: nothing pending, sleep until woken)."""
        idle = [n for n in self.channels if n not in self._tasks or self._tasks[n].done()]
        now = self.clock()
        try:
            heads = await self.store.heads(idle)
        except OutboxUnavailable:
            return STORAGE_RETRY_MS / 1000
        later: list[int] = []
        for name in idle:
            if name in heads or name in self._unrecorded:
                at = max(heads.get(name, now), self._ready_ms.get(name, 0))
                if at <= now:
                    self._tasks[name] = asyncio.create_task(
                        self._drain_then_wake(name), name=f"notify-{name}"
                    )
                else:
                    later.append(at)
        return max(0.0, (min(later) - now) / 1000) if later else None

    async def _drain_then_wake(self, name: str) -> bool:
        try:
            return await self._drain(name)
        finally:
            self._wake.set()  # the channel's next time changed; look again

    # --- one channel ------------------------------------------------------------------------

    async def _drain(self, name: str) -> bool:
        """Send what is due on one channel, in order. Returns whether anything was sent."""
        channel = self.channels[name]
        now = self.clock()
        if self._ready_ms.get(name, 0) > now:
            return False
        if not await self._write_unrecorded(name):
            self._ready_ms[name] = now + STORAGE_RETRY_MS
            return False
        try:
            entries = await self.store.due(name, now, self.batch)
        except OutboxUnavailable as exc:
            log.warning("notify outbox unreadable channel=%s error=%r", name, str(exc))
            self._ready_ms[name] = now + STORAGE_RETRY_MS
            return False
        worked = False
        bucket = self._buckets[name]
        for entry in entries:
            now = self.clock()
            if not bucket.take(now):
                self._ready_ms[name] = bucket.ready_at_ms(now)
                break
            worked = True
            if not await self._deliver(channel, entry):
                break  # waits for its retry; the rows behind it wait with it
        return worked

    async def _deliver(self, channel: Channel, entry: OutboxEntry) -> bool:
        """Send one row and record the outcome. Returns False when it is to be retried."""
        attempts = entry.attempts + 1
        result = await self._attempt(channel, entry)
        at = self.clock()
        health = self.health[channel.name]
        if result.ok:
            health.ok, health.last_ok_ms, health.last_error = True, at, None
            health.delivered += 1
            log.info(
                "notification delivered channel=%s id=%s kind=%s attempts=%d answer=%r",
                channel.name,
                entry.id,
                entry.kind,
                attempts,
                result.detail,
            )
            await self._record(
                channel.name,
                lambda: self.store.mark_delivered(entry.key, attempts=attempts, at_ms=at),
            )
            return True
        error = channel.redact(result.detail) or "failed"
        give_up = not result.retryable or self.policy.gives_up(attempts, entry.created_ms, at)
        next_ms = None
        if not give_up:
            next_ms = at + int(self.policy.delay_s(attempts, self.rng, result.retry_after_s) * 1000)
        health.ok, health.last_failure_ms, health.last_error = False, at, error
        health.failed_attempts += 1
        if give_up:
            health.given_up += 1
            log.error(
                "notification undelivered channel=%s id=%s kind=%s attempts=%d error=%r",
                channel.name,
                entry.id,
                entry.kind,
                attempts,
                error,
            )
        else:
            log.warning(
                "notification failed channel=%s id=%s attempts=%d error=%r retry_in_s=%.1f",
                channel.name,
                entry.id,
                attempts,
                error,
                ((next_ms or at) - at) / 1000,
            )
        await self._record(
            channel.name,
            lambda: self.store.mark_failed(
                entry.key, attempts=attempts, at_ms=at, error=error, next_attempt_ms=next_ms
            ),
        )
        return give_up

    async def _attempt(self, channel: Channel, entry: OutboxEntry) -> SendResult:
        """One send that never raises (but for cancellation): a bug is a failed send."""
        try:
            request = request_of(entry)
        except (KeyError, ValueError, TypeError) as exc:
            return SendResult.failed(f"unreadable notification: {exc!r}", retryable=False)
        try:
            # The channel bounds its own send; this bounds a channel that does not.
            return await asyncio.wait_for(channel.send(request), channel.settings.timeout_s + 5)
        except TimeoutError:
            return SendResult.failed(f"no answer in {channel.settings.timeout_s + 5:g}s")
        except Exception as exc:
            log.exception("notify channel crashed channel=%s", channel.name)
            return SendResult.failed(channel.redact(f"{type(exc).__name__}: {exc}"))

    async def _record(self, name: str, write: Callable[[], Awaitable[None]]) -> None:
        """Write an outcome; when storage fails, keep it and write it before the next send."""
        try:
            await write()
        except OutboxUnavailable as exc:
            log.warning("notify outcome not recorded channel=%s error=%r", name, str(exc))
            self._unrecorded.setdefault(name, []).append(write)

    async def _write_unrecorded(self, name: str) -> bool:
        """Write outcomes kept while storage failed. Returns whether none is left."""
        pending = self._unrecorded.get(name)
        while pending:
            try:
                await pending[0]()
            except OutboxUnavailable:
                return False
            pending.pop(0)
        self._unrecorded.pop(name, None)
        return True


def test_notification(channel: str, now_ms: int, host: str) -> NotificationRequest:
    """What ``vigil notify test CHANNEL`` sends: a test notice with no alert behind it."""
    return NotificationRequest(
        channel=channel,
        notification_id=f"test-{channel}-{now_ms}",
        dedup_key=f"test-{channel}",
        kind=NoticeKind.TEST,
        created_ms=now_ms,
        title=f"Vigil test notification from {host}",
        group_labels=(("host", host),),
    )


async def send_test(channel: Channel, host: str) -> SendResult:
    """Send a test notification straight through ``channel`` (not the outbox) and return the
    receiver's answer, secrets scrubbed, for ``vigil notify test``."""
    result = await _send_direct(channel, test_notification(channel.name, channel.clock(), host))
    return SendResult(
        result.ok,
        channel.redact(result.detail),
        result.retryable,
        result.retry_after_s,
        result.status,
    )


async def _send_direct(channel: Channel, request: NotificationRequest) -> SendResult:
    try:
        return await asyncio.wait_for(channel.send(request), channel.settings.timeout_s + 5)
    except TimeoutError:
        return SendResult.failed(f"no answer in {channel.settings.timeout_s + 5:g}s")
    except Exception as exc:
        return SendResult.failed(f"{type(exc).__name__}: {exc}")
