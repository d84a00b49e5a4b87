"""The forwarder against a receiver on loopback that decodes what it is sent: batches, the
cursor kept in the database, retries after 5xx, 401 and no connection, a refused sample skipped
alone, samples retention removed reported as dropped, the last send at stop, and its state on
/metrics and in the API."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from agent.config.remotewrite import RemoteWriteConfig
from agent.forward import ForwardState, RemoteWrite, wire
from agent.serve.exposition import render
from storage import forwardcursor as fc
from storage.db import connect, open_database
from storage.ingest import SampleStore
from storage.records import Event, Sample, make_labels
from storage.retention import RetentionPolicy, run_retention
from storage.writer import Writer

T0 = int(time.time() * 1000) - 3_600_000
Key = tuple[tuple[str, str], ...]


@dataclass
class Receiver:
    """A remote-write receiver: decodes each body; ``answer`` picks the status."""

    url: str = ""
    got: dict[Key, list[tuple[int, float]]] = field(default_factory=dict)
    requests: list[int] = field(default_factory=list)
    """Samples per request, in order (refused ones too)."""
    headers: list[dict[str, str]] = field(default_factory=list)
    answer: Callable[[list[tuple[Key, list[tuple[int, float]]]]], int] = lambda _: 204

    def samples(self) -> int:
        return sum(len(v) for v in self.got.values())


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def write(request: web.Request) -> web.Response:
        series = wire.decode(await request.read())
        rec.requests.append(sum(len(p) for _, p in series))
        rec.headers.append(dict(request.headers))
        status = rec.answer(series)
        if 200 <= status < 300:
            for labels, points in series:
                rec.got.setdefault(labels, []).extend(points)
        return web.Response(status=status, text="" if status < 300 else f"refused ({status})")

    app = web.Application()
    app.router.add_post("/api/v1/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/api/v1/write"
    yield rec
    await runner.cleanup()


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    w = Writer(tmp_path / "vigil.db", flush_interval_s=0.02)
    w.start()
    yield w
    w.close()


def settings(url: str, **kw: Any) -> RemoteWriteConfig:
    base: dict[str, Any] = {
        "interval_s": 0.05,
        "max_samples": 100,
        "timeout_s": 5.0,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    return RemoteWriteConfig(url=url, **{**base, **kw})


def stored(writer: Writer, series: int, n: int, start: int = 0) -> None:
    writer.submit(
        Sample(f"test.s{s}", make_labels(i=str(s)), T0 + (start + i) * 1000, float(start + i))
        for s in range(series)
        for i in range(n)
    )
    assert writer.flush()


async def until(pred: Callable[[], object], timeout: float = 10.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def forwarder(writer: Writer, events: list[Event]) -> RemoteWrite:
    return RemoteWrite(writer, Path(writer.path), events.append, started_ms=T0 - 1)


async def test_everything_stored_arrives_once_in_batches(
    writer: Writer, receiver: Receiver
) -> None:
    stored(writer, 3, 250)
    events: list[Event] = []
    rw = forwarder(writer, events)
    await rw.apply(settings(receiver.url), "gpu-1")
    await until(lambda: receiver.samples() == 750, what="750 samples")
    await until(lambda: rw.stats.state == ForwardState.OK, what="caught up")
    assert max(receiver.requests) <= 100 and len(receiver.requests) >= 8
    for labels, points in receiver.got.items():
        d = dict(labels)
        assert d["instance"] == "gpu-1" and d["job"] == "vigil"
        assert d["__name__"] == f"vigil_test_s{d['i']}"
        assert points == [(T0 + i * 1000, float(i)) for i in range(250)]
    h = receiver.headers[0]
    assert h["Content-Encoding"] == "snappy" and h["Content-Type"] == "application/x-protobuf"
    assert h["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    # New samples are sent at the next turn, after the cursor.
    stored(writer, 3, 10, start=250)
    await until(lambda: receiver.samples() == 780, what="the next 30")
    await rw.stop()
    assert rw.stats.samples_sent == 780 and rw.stats.samples_rejected == 0
    assert writer.flush()
    state = fc.load_target(connect(writer.path, readonly=True), fc.TARGET)
    assert state is not None and sorted(state.cursors.values()) == [T0 + 259_000] * 3
    # A new forwarder (the agent restarted) starts at the stored cursors: nothing twice.
    rw2 = forwarder(writer, events)
    await rw2.apply(settings(receiver.url), "gpu-1")
    stored(writer, 3, 1, start=260)
    await until(lambda: receiver.samples() == 783, what="one more each")
    await rw2.stop()
    assert all(len(p) == len(set(p)) for p in receiver.got.values())


async def test_the_hosts_labels_go_on_every_series(writer: Writer, receiver: Receiver) -> None:
    stored(writer, 1, 5)
    rw = forwarder(writer, [])
    agent_labels = (("env", "prod"), ("region", "eu-west"), ("team", "search"))
    await rw.apply(settings(receiver.url, labels=(("team", "ml"),)), "gpu-1", agent_labels)
    await until(lambda: receiver.samples() == 5, what="the samples")
    [labels] = receiver.got
    assert dict(labels) == {
        "__name__": "vigil_test_s0",
        "i": "0",
        "instance": "gpu-1",
        "job": "vigil",
        "env": "prod",
        "region": "eu-west",
        "team": "ml",  # [remote_write] labels over [agent] labels
    }
    # A reload changing the host's labels applies them to what is sent from then on.
    await rw.apply(settings(receiver.url, labels=(("team", "ml"),)), "gpu-1", ())
    stored(writer, 1, 1, start=5)
    await until(lambda: receiver.samples() == 6, what="one more")
    await rw.stop()
    assert len(receiver.got) == 2


async def test_an_outage_is_replayed_from_the_cursor(writer: Writer, receiver: Receiver) -> None:
    stored(writer, 2, 50)
    events: list[Event] = []
    rw = forwarder(writer, events)
    down = {"on": True}
    receiver.answer = lambda _: 503 if down["on"] else 204
    await rw.apply(settings(receiver.url), "h")
    await until(lambda: len(receiver.requests) >= 3, what="retries")
    assert rw.stats.state == ForwardState.RETRYING and receiver.samples() == 0
    assert rw.stats.requests_failed["5xx"] >= 3 and "HTTP 503" in (rw.stats.last_error or "")
    stored(writer, 2, 50, start=50)  # stored while the receiver is down
    down["on"] = False
    await until(lambda: receiver.samples() == 200, what="the replay")
    await until(lambda: rw.stats.state == ForwardState.OK, what="caught up")
    await rw.stop()
    kinds = [e.kind for e in events]
    assert kinds.count("remote_write.failing") == 1 and kinds.count("remote_write.recovered") == 1
    for points in receiver.got.values():
        assert points == [(T0 + i * 1000, float(i)) for i in range(100)]


async def test_no_connection_is_retried_and_a_new_url_picks_up(
    writer: Writer, receiver: Receiver
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/api/v1/write"
    stored(writer, 1, 30)
    events: list[Event] = []
    rw = forwarder(writer, events)
    await rw.apply(settings(closed), "h")
    await until(lambda: rw.stats.requests_failed.get("connect", 0) >= 2, what="failed connects")
    assert rw.stats.state == ForwardState.RETRYING
    assert rw.state()["state"] == "retrying" and rw.state()["lag_s"] > 0
    await rw.apply(settings(receiver.url), "h")  # a reload fixing the URL
    await until(lambda: receiver.samples() == 30, what="the samples")
    await rw.stop()


async def test_401_is_retried_not_skipped(writer: Writer, receiver: Receiver) -> None:
    stored(writer, 1, 20)
    answers = [401, 401, 403]
    receiver.answer = lambda _: answers.pop(0) if answers else 204
    rw = forwarder(writer, [])
    await rw.apply(settings(receiver.url, bearer_token="t0k"), "h")
    await until(lambda: receiver.samples() == 20, what="the samples")
    await rw.stop()
    assert rw.stats.requests_failed["4xx"] == 3 and rw.stats.samples_rejected == 0
    assert receiver.headers[-1]["Authorization"] == "Bearer t0k"


async def test_a_refused_sample_is_skipped_alone(writer: Writer, receiver: Receiver) -> None:
    writer.submit(
        Sample("test.x", (), T0 + i * 1000, 666.0 if i == 37 else float(i)) for i in range(100)
    )
    assert writer.flush()
    receiver.answer = lambda series: (
        400 if any(v == 666.0 for _, p in series for _, v in p) else 204
    )
    events: list[Event] = []
    rw = forwarder(writer, events)
    await rw.apply(settings(receiver.url, username="u", password="p"), "h")
    await until(lambda: rw.stats.samples_rejected == 1 and receiver.samples() == 99, what="99")
    await rw.stop()
    [points] = receiver.got.values()
    assert [t for t, _ in points] == [T0 + i * 1000 for i in range(100) if i != 37]
    [rejected] = [e for e in events if e.kind == "remote_write.rejected"]
    assert rejected.data["samples"] == 1 and rejected.data["status"] == 400
    assert "refused (400)" in rejected.data["error"]
    assert receiver.headers[0]["Authorization"] == "Basic dTpw"


async def test_samples_retention_removed_are_reported_as_dropped(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "vigil.db"
    conn = open_database(path)
    fc.open_target(conn, fc.TARGET, T0 - 1)
    store = SampleStore()
    conn.execute("BEGIN")
    store.applied(store.write(conn, [Sample("a", (), T0 + i * 1000, 1.0) for i in range(60)]))
    conn.execute("COMMIT")
    policy = RetentionPolicy(raw_ms=1000, rollup_1m_ms=10**12, rollup_1h_ms=10**12)
    run_retention(conn, T0 + 41_000, policy)  # samples 0..39 go unsent
    conn.close()
    w = Writer(path, flush_interval_s=0.02)
    w.start()
    try:
        events: list[Event] = []
        rw = forwarder(w, events)
        await rw.apply(settings(receiver.url), "h")
        await until(lambda: receiver.samples() == 20, what="what is left")
        await rw.stop()
        assert rw.stats.samples_dropped == 40
        [dropped] = [e for e in events if e.kind == "remote_write.dropped"]
        assert dropped.data["samples"] == 40
        assert w.flush()
        assert fc.dropped_counts(connect(path, readonly=True), fc.TARGET) == (40, 40)
        again: list[Event] = []  # reported once, not again by the next agent
        rw2 = forwarder(w, again)
        await rw2.apply(settings(receiver.url), "h")
        await until(lambda: rw2.stats.state == ForwardState.OK, what="caught up")
        await rw2.stop()
        assert not [e for e in again if e.kind == "remote_write.dropped"]
    finally:
        w.close()


async def test_the_last_samples_are_sent_at_stop(writer: Writer, receiver: Receiver) -> None:
    rw = forwarder(writer, [])
    await rw.apply(settings(receiver.url, interval_s=3600.0), "h")
    await until(lambda: rw.stats.state == ForwardState.OK, what="the first turn")
    writer.submit([Sample("late", (), T0 + 5, 5.0)])  # not flushed yet: stop flushes it
    await rw.stop(final=True)
    assert receiver.samples() == 1


async def test_turning_it_off_forgets_the_cursor(writer: Writer, receiver: Receiver) -> None:
    stored(writer, 1, 10)
    rw = forwarder(writer, [])
    await rw.apply(settings(receiver.url), "h")
    await until(lambda: receiver.samples() == 10, what="the samples")
    await rw.apply(None, "h")
    assert writer.flush()
    assert fc.load_target(connect(writer.path, readonly=True), fc.TARGET) is None
    assert rw.state() == {"configured": False} and list(rw.collect()) == []


async def test_state_on_metrics_and_in_the_api(writer: Writer, receiver: Receiver) -> None:
    stored(writer, 1, 10)
    rw = forwarder(writer, [])
    await rw.apply(settings(receiver.url), "h")
    await until(lambda: rw.stats.state == ForwardState.OK, what="caught up")
    await rw.stop()
    text = render(rw.collect()).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    value = {
        s.name + str(sorted(s.labels.items())): s.value for f in fams.values() for s in f.samples
    }
    assert value["vigil_remote_write_samples_sent_total[]"] == 10
    assert value["vigil_remote_write_state[('state', 'ok')]"] == 1
    assert value["vigil_remote_write_state[('state', 'retrying')]"] == 0
    assert value["vigil_remote_write_requests_failed_total[('reason', 'connect')]"] == 0
    assert 0 <= value["vigil_remote_write_lag_seconds[]"] < 60
    assert value["vigil_remote_write_last_success_timestamp_seconds[]"] > T0 / 1000
    body = rw.state()
    assert body["configured"] is True and body["url"] == receiver.url
    assert body["state"] == "ok" and body["samples_sent"] == 10
