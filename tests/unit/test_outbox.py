"""The durable outbox and its sender: written before sent, retried with backoff, Retry-After and
rate limits honoured, order kept per channel, at-least-once across restarts and crashes, and a
channel that is down degrading to undelivered with its error, never a crash. A fake clock drives
the sender (``run_once``); receivers are real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.alerting.channels.base import Channel, SendResult
from agent.alerting.channels.http import parse_retry_after
from agent.alerting.channels.settings import ChannelSettings, WebhookSettings
from agent.alerting.channels.webhook import WebhookChannel
from agent.alerting.model import AlertNotice, NoticeKind, NotificationRequest
from agent.alerting.outbox import Sender
from agent.alerting.outbox_store import OutboxStore
from agent.alerting.ratelimit import RetryPolicy, TokenBucket
from storage import outbox as sql
from storage.db import open_database
from storage.outbox import DeliveryState, OutboxEntry
from storage.writer import Writer
from tests.fakes.notify_receiver import Answer, free_port, receiver

T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, s: float) -> None:
        self.now += int(s * 1000)


def request(
    n: int, kind: NoticeKind = NoticeKind.FIRING, channel: str = "hook", created_ms: int = T0 - 100
) -> NotificationRequest:
    alert = AlertNotice(
        fingerprint=f"fp{n}",
        rule="ModelDown",
        status="resolved" if kind == NoticeKind.RESOLVED else "firing",
        severity="critical",
        labels=(("model", "llama"),),
        summary="llama does not answer",
        starts_ms=T0,
    )
    return NotificationRequest(
        channel=channel,
        notification_id=f"n{n}-{kind}",
        dedup_key=f"fp{n}",
        kind=kind,
        created_ms=created_ms + n,
        title="ModelDown llama",
        alerts=(alert,),
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "vigil.db"


@pytest.fixture
def writer(db: Path) -> Iterator[Writer]:
    w = Writer(db, flush_interval_s=0.05)
    w.start()
    yield w
    w.close()


def rows(db: Path) -> dict[str, OutboxEntry]:
    conn = sqlite3.connect(db)
    try:
        return {e.id: e for e in sql.list_entries(conn)}
    finally:
        conn.close()


class Scripted(Channel):
    """A channel answering from a script; records what it was given."""

    kind = "fake"

    def __init__(self, results: list[SendResult], name: str = "hook", rate: float = 100.0) -> None:
        super().__init__(ChannelSettings(name=name, rate_per_s=rate, burst=100))
        self.results = results
        self.sent: list[str] = []

    async def send(self, request: NotificationRequest) -> SendResult:
        self.sent.append(request.notification_id)
        return self.results.pop(0) if self.results else SendResult.accepted()


def webhook(url: str, clock: Clock, **kw: object) -> WebhookChannel:
    settings = WebhookSettings(name="hook", url=url, secret="s3cret", timeout_s=2.0, **kw)  # type: ignore[arg-type]
    return WebhookChannel(settings, clock=clock)


OPEN: list[Sender] = []


@pytest.fixture(autouse=True)
async def close_senders() -> AsyncIterator[None]:
    yield
    while OPEN:
        await OPEN.pop().close()


def sender(store: OutboxStore, channel: Channel, clock: Clock) -> Sender:
    policy = RetryPolicy(base_s=2.0, max_s=60.0, jitter=0.5, max_attempts=5)
    s = Sender(store, [channel], policy=policy, clock=clock, rng=random.Random(1))
    OPEN.append(s)
    return s


def test_migration_and_enqueue_is_idempotent(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "v.db")
    e = OutboxEntry(
        id="a", channel="c", kind="firing", dedup_key="k", payload={"x": 1}, created_ms=5
    )
    assert sql.enqueue(conn, [e, e]) == 1
    assert sql.enqueue(conn, [e]) == 0
    [got] = sql.list_entries(conn)
    assert (
        got.state == DeliveryState.PENDING and got.next_attempt_ms == 5 and got.payload == {"x": 1}
    )
    sql.mark_delivered(conn, got.key, attempts=1, delivered_ms=9)
    assert sql.counts(conn) == {("c", "delivered"): 1}
    assert sql.prune(conn, before_ms=6) == 1


async def test_written_before_sent_and_delivered_once(writer: Writer, db: Path) -> None:
    clock = Clock()
    store = OutboxStore(writer)
    ch = Scripted([])
    assert await store.enqueue([request(1)]) == 1
    # Committed by the time enqueue returns: another connection sees it.
    assert rows(db)["n1-firing"].state == DeliveryState.PENDING
    await sender(store, ch, clock).run_once()
    assert ch.sent == ["n1-firing"]
    row = rows(db)["n1-firing"]
    assert (row.state, row.attempts, row.delivered_ms) == (DeliveryState.DELIVERED, 1, T0)
    await sender(store, ch, clock).run_once()
    assert ch.sent == ["n1-firing"]


async def test_receiver_down_then_up_gets_it_later(writer: Writer, db: Path) -> None:
    clock = Clock()
    store = OutboxStore(writer)
    port = free_port()
    s = sender(store, webhook(f"http://127.0.0.1:{port}/hook", clock), clock)
    await store.enqueue([request(1)])
    await s.run_once()
    row = rows(db)["n1-firing"]
    assert row.state == DeliveryState.PENDING and row.attempts == 1
    assert row.last_error is not None and "connection refused" in row.last_error
    # Backoff: 2 s with up to half taken off by jitter.
    assert T0 + 1000 <= row.next_attempt_ms <= T0 + 2000
    assert s.health["hook"].ok is False
    async with receiver(port) as r:
        await s.run_once()  # not due yet
        assert r.requests == []
        clock.advance(2)
        await s.run_once()
        assert [q.headers["X-Vigil-Id"] for q in r.requests] == ["n1-firing"]
    row = rows(db)["n1-firing"]
    assert (row.state, row.attempts, row.last_error) == (DeliveryState.DELIVERED, 2, None)
    assert s.health["hook"].ok is True


async def test_500_then_200_same_id_one_delivered_mark(writer: Writer, db: Path) -> None:
    clock = Clock()
    store = OutboxStore(writer)
    async with receiver() as r:
        r.script = [Answer(500, body="busy")]
        s = sender(store, webhook(r.url + "/hook", clock), clock)
        await store.enqueue([request(1)])
        await s.run_once()
        assert rows(db)["n1-firing"].last_error == "HTTP 500: busy"
        clock.advance(60)
        await s.run_once()
        await s.run_once()
        ids = [q.headers["X-Vigil-Id"] for q in r.requests]
        assert ids == ["n1-firing", "n1-firing"]
        assert {q.json()["id"] for q in r.requests} == {"n1-firing"}
    row = rows(db)["n1-firing"]
    assert (row.state, row.attempts, row.delivered_ms) == (DeliveryState.DELIVERED, 2, T0 + 60_000)


async def test_retry_after_seconds_is_honoured(writer: Writer, db: Path) -> None:
    clock = Clock()
    store = OutboxStore(writer)
    async with receiver() as r:
        r.script = [Answer(429, {"Retry-After": "7"}, "slow down")]
        s = sender(store, webhook(r.url, clock), clock)
        await store.enqueue([request(1)])
        await s.run_once()
        assert rows(db)["n1-firing"].next_attempt_ms == T0 + 7000  # exact: no jitter on it
        clock.advance(6.9)
        await s.run_once()
        assert len(r.requests) == 1
        clock.advance(0.1)
        await s.run_once()
        assert len(r.requests) == 2
    assert rows(db)["n1-firing"].state == DeliveryState.DELIVERED


def test_retry_after_http_date_and_garbage() -> None:
    now = 1_445_412_480_000  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now) == 0.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


async def test_rate_limit_per_channel(writer: Writer, db: Path) -> None:
    clock = Clock()
    store = OutboxStore(writer)
    ch = Scripted([])
    ch.settings = ChannelSettings(name="hook", rate_per_s=0.5, burst=2)
    s = sender(store, ch, clock)
    await store.enqueue([request(i) for i in range(5)])
    await s.run_once()
    assert len(ch.sent) == 2  # the burst
    clock.advance(1.9)
    await s.run_once()
    assert len(ch.sent) == 2
    clock.advance(0.1)
    await s.run_once()
    assert len(ch.sent) == 3  # one token per 2 s
    clock.advance(10)
    await s.run_once()
    assert ch.sent == [f"n{i}-firing" for i in range(5)]  # in order, none twice


def test_token_bucket_ready_time() -> None:
    b = TokenBucket(rate_per_s=2.0, burst=1, now_ms=0)
    assert b.take(0) and not b.take(0)
    assert b.ready_at_ms(0) == 500
    assert b.take(500)


async def test_order_kept_behind_a_failing_head(writer: Writer, db: Path) -> None:
    clock = Clock()
    store = OutboxStore(writer)
    ch = Scripted([SendResult.failed("down")])
    s = sender(store, ch, clock)
    await store.enqueue([request(1), request(1, NoticeKind.RESOLVED)])
    await s.run_once()
    assert ch.sent == ["n1-firing"]  # the resolution waits behind its firing
    clock.advance(60)
    await s.run_once()
    assert ch.sent == ["n1-firing", "n1-firing", "n1-resolved"]


async def test_refused_message_is_undelivered_with_error(writer: Writer, db: Path) -> None:
    clock = Clock()
    store = OutboxStore(writer)
    async with receiver() as r:
        r.script = [Answer(400, body="invalid_payload")]
        s = sender(store, webhook(r.url, clock), clock)
        await store.enqueue([request(1), request(2)])
        await s.run_once()
        assert len(r.requests) == 2  # a refused message holds up nothing behind it
    got = rows(db)
    assert got["n1-firing"].state == DeliveryState.UNDELIVERED
    assert got["n1-firing"].last_error == "HTTP 400: invalid_payload"
    assert got["n2-firing"].state == DeliveryState.DELIVERED
    assert s.health["hook"].given_up == 1


async def test_gives_up_after_max_attempts(writer: Writer, db: Path) -> None:
    clock = Clock()
    store = OutboxStore(writer)
    ch = Scripted([SendResult.failed("down")] * 10)
    s = sender(store, ch, clock)
    await store.enqueue([request(1)])
    for _ in range(8):
        await s.run_once()
        clock.advance(120)
    row = rows(db)["n1-firing"]
    assert (row.state, row.attempts, row.last_error) == (DeliveryState.UNDELIVERED, 5, "down")


async def test_a_crashing_channel_is_a_failed_send(writer: Writer, db: Path) -> None:
    class Broken(Scripted):
        async def send(self, request: NotificationRequest) -> SendResult:
            raise RuntimeError("bug")

    clock = Clock()
    store = OutboxStore(writer)
    s = sender(store, Broken([]), clock)
    await store.enqueue([request(1)])
    await s.run_once()
    assert rows(db)["n1-firing"].last_error == "RuntimeError: bug"


async def test_restart_picks_up_pending_rows(db: Path) -> None:
    clock = Clock()
    w1 = Writer(db, flush_interval_s=0.05)
    w1.start()
    await OutboxStore(w1).enqueue([request(1), request(2)])
    w1.close()  # the agent stops before sending anything
    w2 = Writer(db, flush_interval_s=0.05)
    w2.start()
    try:
        ch = Scripted([])
        await sender(OutboxStore(w2), ch, clock).run_once()
        assert ch.sent == ["n1-firing", "n2-firing"]
    finally:
        w2.close()
    assert {r.state for r in rows(db).values()} == {DeliveryState.DELIVERED}


class Crash(BaseException):
    """The process dying, here between the receiver's acceptance and the delivered mark."""


class CrashingStore(OutboxStore):
    async def mark_delivered(self, key: tuple[str, str], *, attempts: int, at_ms: int) -> None:
        raise Crash


async def test_crash_between_send_and_mark_sends_again_with_same_id(db: Path) -> None:
    clock = Clock()
    async with receiver() as r:
        w1 = Writer(db, flush_interval_s=0.05)
        w1.start()
        await OutboxStore(w1).enqueue([request(1)])
        with pytest.raises(Crash):
            await sender(CrashingStore(w1), webhook(r.url, clock), clock).run_once()
        w1.close()
        assert rows(db)["n1-firing"].state == DeliveryState.PENDING
        w2 = Writer(db, flush_interval_s=0.05)
        w2.start()
        try:
            await sender(OutboxStore(w2), webhook(r.url, clock), clock).run_once()
        finally:
            w2.close()
        assert [q.headers["X-Vigil-Id"] for q in r.requests] == ["n1-firing", "n1-firing"]
    row = rows(db)["n1-firing"]
    assert (row.state, row.attempts) == (DeliveryState.DELIVERED, 1)


async def test_outcome_kept_while_storage_fails_and_not_sent_twice(
    writer: Writer, db: Path
) -> None:
    from agent.alerting.outbox_store import OutboxUnavailable

    class Failing(OutboxStore):
        fail = True

        async def mark_delivered(self, key: tuple[str, str], *, attempts: int, at_ms: int) -> None:
            if self.fail:
                raise OutboxUnavailable("disk full")
            await super().mark_delivered(key, attempts=attempts, at_ms=at_ms)

    clock = Clock()
    store = Failing(writer)
    ch = Scripted([])
    s = sender(store, ch, clock)
    await store.enqueue([request(1)])
    await s.run_once()
    clock.advance(10)
    await s.run_once()  # still failing: nothing sent again
    assert ch.sent == ["n1-firing"]
    store.fail = False
    clock.advance(10)
    await s.run_once()
    assert ch.sent == ["n1-firing"]
    assert rows(db)["n1-firing"].state == DeliveryState.DELIVERED


async def test_run_loop_delivers_on_wake_and_after_backoff(writer: Writer, db: Path) -> None:
    """The real loop with the real clock: a wake sends at once; a retry comes by itself."""
    store = OutboxStore(writer)
    async with receiver() as r:
        r.script = [Answer(503, {"Retry-After": "1"})]
        settings = WebhookSettings(name="hook", url=r.url, secret="key1")
        s = Sender(store, [WebhookChannel(settings)], rng=random.Random(1))
        task = asyncio.create_task(s.run())
        try:
            await store.enqueue([request(1, created_ms=time.time_ns() // 1_000_000)])
            s.wake()
            await r.wait_for_requests(2, timeout=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await s.close()
    assert writer.flush()
    assert rows(db)["n1-firing"].state == DeliveryState.DELIVERED


async def test_secrets_stay_out_of_errors_and_reprs(writer: Writer, db: Path) -> None:
    clock = Clock()
    port = free_port()
    url = f"http://127.0.0.1:{port}/T000/B000/XXXXsecrettoken"
    ch = webhook(url, clock)
    s = sender(OutboxStore(writer), ch, clock)
    await OutboxStore(writer).enqueue([request(1)])
    await s.run_once()
    error = rows(db)["n1-firing"].last_error or ""
    assert "connection refused" in error and "secrettoken" not in error
    assert "secrettoken" not in repr(ch.settings) and "s3cret" not in repr(ch.settings)
    assert "secrettoken" not in repr(ch)
    assert ch.redact(f"boom {url}") == "boom <secret>"


async def test_add_writes_then_sends_from_the_run_loop(writer: Writer, db: Path) -> None:
    store = OutboxStore(writer)
    ch = Scripted([])
    s = Sender(store, [ch])
    task = asyncio.create_task(s.run())
    try:
        s.add([request(1, created_ms=time.time_ns() // 1_000_000)])
        for _ in range(200):
            if ch.sent:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert ch.sent == ["n1-firing"]
    assert writer.flush()
    assert rows(db)["n1-firing"].state == DeliveryState.DELIVERED


async def test_send_test_reports_the_answer_without_secrets() -> None:
    from agent.alerting.outbox import send_test

    async with receiver() as r:
        r.script = [Answer(403, body="invalid_token for /hooks/SECRETPATH")]
        ch = WebhookChannel(WebhookSettings(name="hook", url=r.url + "/hooks/SECRETPATH"))
        try:
            result = await send_test(ch, host="gpu1")
        finally:
            await ch.close()
        body = r.requests[0].json()
    assert body["kind"] == "test" and body["title"] == "Vigil test notification from gpu1"
    assert not result.ok and result.status == 403
    assert "SECRETPATH" not in result.detail
