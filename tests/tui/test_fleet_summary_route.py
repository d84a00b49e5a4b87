"""The fleet's poll of ``/api/v1/summary``: the same row as the documents it stands for, a 304
for an unchanged agent (no work, no sparkline point), a new answer when the agent changes, and
an older agent (404) read through its status, models and incidents, asked again after a
failure."""

from __future__ import annotations

from dataclasses import replace

from storage.records import AgentStatus
from tests.fakes.agent_api import TOKEN
from tests.fakes.fleet_agents import FleetFake, gpu_status, labelled_status
from tui.fleet import FleetEntry
from tui.remote.client import AgentClient, AgentError
from tui.view.fleetsummary import summarize, summarize_compact
from tui.view.fleetview import FleetMember

SUMMARY = "/api/v1/summary"


def with_cpu(status: AgentStatus, cpu: float) -> AgentStatus:
    resources = tuple(
        replace(r, value=cpu) if r.name == "host.cpu.percent" and not r.labels else r
        for r in status.resources
    )
    return replace(status, resources=resources)


async def test_the_compact_row_is_the_documents_row() -> None:
    """Every value of the row, from either route, for hosts unlike each other: GPUs, a model
    down and a process in backoff, alerts firing, labels, no streaming probe, an agent older
    than alerting."""
    cases = [
        FleetFake(status=gpu_status("gpu-01"), ttft_p95={"a": 80.0, "b": None}, open_incidents=2),
        FleetFake(
            status=labelled_status("eu-1", {"region": "eu-west", "team": "search"}, down=1),
            ttft_p95={"m": None},
            alert_counts={"firing": 2, "critical": 1, "silenced": 1, "maintenance": 0},
        ),
        FleetFake(status=labelled_status("bare", {}, up=0), ttft_p95={}),
    ]
    for fake in cases:
        await fake.start()
        client = AgentClient(fake.url, TOKEN)
        try:
            answer = await client.get_if_changed(SUMMARY, None)
            assert answer is not None
            body, etag = answer
            assert etag is not None and etag.startswith('"')
            compact = summarize_compact(body)
            status = await client.get_json("/api/v1/status")
            models = await client.get_json("/api/v1/models")
            incidents = await client.get_json("/api/v1/incidents")
            assert compact == summarize(status, models, incidents)
        finally:
            await client.aclose()
            await fake.stop()


async def test_an_unchanged_agent_answers_304_and_costs_the_row_nothing() -> None:
    fake = FleetFake(status=gpu_status("gpu-01", cpu=40.0), open_incidents=1)
    await fake.start()
    m = FleetMember(FleetEntry("gpu-01", fake.url, TOKEN, timeout_s=2.0))
    try:
        await m.poll()
        assert m.error is None and m.summary is not None
        assert (m.summary.cpu_percent, m.summary.open_incidents) == (40.0, 1)
        first, changes = m.summary, m.changes
        assert changes == 1 and list(m.cpu_history) == [40.0]
        # One request a poll, none of the documents.
        assert fake.hits == {SUMMARY: 1}

        await m.poll()  # nothing changed: 304
        assert fake.hits == {SUMMARY: 2}
        assert m.summary is first and m.changes == changes and m.error is None
        assert list(m.cpu_history) == [40.0]  # a 304 is no new sample
        assert m.polls == 2 and m.last_ok_at is not None

        fake.status = with_cpu(fake.status, 55.5)
        await m.poll()
        assert m.summary.cpu_percent == 55.5 and m.changes == changes + 1
        assert list(m.cpu_history) == [40.0, 55.5]

        fake.open_incidents = 0
        await m.poll()
        assert m.summary.open_incidents == 0 and m.summary.health == "failing"
        assert m.changes == changes + 2

        await fake.stop()
        await m.poll()
        assert m.error is not None and m.error.kind == "unreachable"
        assert m.changes == changes + 3 and m.summary.cpu_percent == 55.5  # kept
    finally:
        await m.aclose()
        await fake.stop()


async def test_the_client_sends_the_etag_and_reads_a_304() -> None:
    fake = FleetFake(status=gpu_status("gpu-01"))
    await fake.start()
    client = AgentClient(fake.url, TOKEN)
    try:
        answer = await client.get_if_changed(SUMMARY, None)
        assert answer is not None
        _body, etag = answer
        assert await client.get_if_changed(SUMMARY, etag) is None
        # Another tag (the agent changed since): the whole answer again.
        again = await client.get_if_changed(SUMMARY, '"0000000000000000"')
        assert again is not None and again[1] == etag
        # A refusal is an error, tag or not.
        fake.token = "other"
        try:
            await client.get_if_changed(SUMMARY, etag)
        except AgentError as exc:
            assert exc.kind == "rejected"
        else:
            raise AssertionError("a rejected token must raise")
    finally:
        await client.aclose()
        await fake.stop()


async def test_an_older_agent_is_read_through_its_documents_and_asked_again_later() -> None:
    fake = FleetFake(
        status=gpu_status("old-01"), ttft_p95={"a": 80.0}, open_incidents=2, summary_route=False
    )
    await fake.start()
    m = FleetMember(FleetEntry("old-01", fake.url, TOKEN, timeout_s=2.0))
    try:
        await m.poll()
        assert m.error is None and m.summary is not None
        assert (m.summary.ttft_p95_ms, m.summary.open_incidents) == (80.0, 2)
        assert fake.hits[SUMMARY] == 1 and fake.hits["/api/v1/status"] == 1
        await m.poll()  # it said no once: not asked again while it answers
        assert fake.hits[SUMMARY] == 1 and fake.hits["/api/v1/status"] == 2

        # A failure (here its token is refused), then it answers again, upgraded meanwhile:
        # the summary is asked for again.
        fake.token = "rotated"
        await m.poll()
        assert m.error is not None and m.error.kind == "rejected"
        fake.token = TOKEN
        fake.summary_route = True
        fake.status = with_cpu(fake.status, 12.0)
        await m.poll()
        assert m.error is None and m.summary.cpu_percent == 12.0
        # The refused poll still read the status (the route was known missing); this one
        # asked for the summary again and got it.
        assert fake.hits[SUMMARY] == 2 and fake.hits["/api/v1/status"] == 3
    finally:
        await m.aclose()
        await fake.stop()


async def test_a_malformed_summary_is_a_bad_answer() -> None:
    fake = FleetFake(status=gpu_status("gpu-01"))
    await fake.start()
    m = FleetMember(FleetEntry("gpu-01", fake.url, TOKEN, timeout_s=2.0))
    try:
        for body in (b"{not json", b'{"models": []}', b'{"host": "h", "models": [{"name": 1}]}'):
            fake.raw_body = body
            await m.poll()
            assert m.error is not None and m.error.kind == "protocol", body
            assert m.error.message.startswith("bad summary from agent"), m.error.message
            assert m.state(0.0) == "protocol"
    finally:
        await m.aclose()
        await fake.stop()


def test_unknown_fields_are_ignored_and_missing_ones_unknown() -> None:
    s = summarize_compact(b'{"host": "h", "future": {"x": 1}, "cpu_percent": 5}')
    assert (s.host, s.cpu_percent, s.health, s.models_total) == ("h", 5.0, "ok", 0)
    assert (s.ttft_p95_ms, s.open_incidents, s.alerts, s.gpu_count) == (None, None, None, 0)
    # Labels pass the client's own rules: a malformed one is dropped, as from the status.
    s = summarize_compact(b'{"host": "h", "labels": {"region": "eu", "bad name": "x", "n": 3}}')
    assert s.labels == (("region", "eu"),)
