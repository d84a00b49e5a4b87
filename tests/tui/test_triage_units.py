"""The triage building blocks without an app: client methods, actions, rows, the log tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.records import Event, Incident
from tests.fakes.triage_agent import READ_TOKEN, TOKEN, TriageAgent
from tui.remote.apitypes import LatencySummary, ModelDetail
from tui.remote.client import AgentClient, AgentError, operator_identity
from tui.screens.model import title_text
from tui.view.actions import OperatorAction, perform, report_path, write_new_file
from tui.view.rows import (
    data_text,
    event_matches,
    event_row,
    incident_row,
    outcomes_text,
    tail_update,
)


async def test_client_reads_every_triage_route(triage_agent: TriageAgent) -> None:
    client = AgentClient(triage_agent.url, TOKEN)
    try:
        assert client.scope is None and not client.read_only
        assert await client.whoami() == "operate" and client.scope == "operate"
        models = await client.models()
        assert [m.name for m in models] == ["llama", "embedder", "whisper", "fresh"]
        whisper = models[2]
        assert whisper.incident is not None and whisper.incident.id == 3
        assert whisper.summary("e2e_ms").p95_ms == 360.0
        assert whisper.summary("e2e_ms", "1d") == LatencySummary()
        runs = await client.probe_runs("llama", limit=3)
        assert [r.category for r in runs] == ["ok", "ok", "slow"]
        assert triage_agent.last_query == {"model": "llama", "limit": "3"}
        found = await client.incidents(state="open", subject="model:whisper", limit=5)
        assert [i.id for i in found] == [3]
        assert triage_agent.last_query == {
            "limit": "5",
            "state": "open",
            "subject": "model:whisper",
        }
        assert [p.name for p in await client.processes()] == ["vllm-server", "llama-cpp"]
        assert (await client.process_logs("vllm-server", 2))[-1] == "listening on :8000"
        events = await client.events(limit=10, kind="process.", subject="process:llama-cpp")
        assert [e.kind for e in events] == ["process.restarting", "process.exited"]
    finally:
        await client.aclose()


async def test_client_actions_name_the_operator_and_report_refusals(
    triage_agent: TriageAgent,
) -> None:
    client = AgentClient(triage_agent.url, TOKEN)
    client.operator = "carol@desk"
    try:
        proc = await client.process_action("vllm-server", "restart")
        assert proc.name == "vllm-server" and proc.state == "running"
        await client.probe_now("[x] y?#")  # quoted: a name is one path segment, whatever it holds
        inc = await client.acknowledge(3)
        assert inc.state == "acknowledged"
        with pytest.raises(AgentError, match="incident 3 is not open") as info:
            await client.acknowledge(3)
        assert info.value.kind == "http" and info.value.status == 409
        assert (await client.resolve(3)).state == "resolved"
        assert await client.report("html") == b"<html><body>report</body></html>"
        assert triage_agent.actions == [
            ("POST /api/v1/processes/vllm-server/restart", "carol@desk", "operate"),
            ("POST /api/v1/models/[x] y?#/probe", "carol@desk", "operate"),
            ("POST /api/v1/incidents/3/acknowledge", "carol@desk", "operate"),
            ("POST /api/v1/incidents/3/acknowledge", "carol@desk", "operate"),
            ("POST /api/v1/incidents/3/resolve", "carol@desk", "operate"),
            ("GET /api/v1/report?format=html", "carol@desk", "operate"),
        ]
    finally:
        await client.aclose()


async def test_a_read_only_token_is_known_before_or_after_acting(
    triage_agent: TriageAgent,
) -> None:
    client = AgentClient(triage_agent.url, READ_TOKEN)
    try:
        assert await client.whoami() == "read" and client.read_only
        client.scope = None
        with pytest.raises(AgentError, match="read-only") as info:
            await client.process_action("vllm-server", "stop")
        assert info.value.kind == "forbidden" and client.read_only  # learned from the 403
        triage_agent.whoami_missing = True
        client.scope = None
        assert await client.whoami() is None and client.scope is None  # an older agent
    finally:
        await client.aclose()
    assert triage_agent.actions == []


def test_operator_identity_is_user_at_host() -> None:
    user, _, host = operator_identity().partition("@")
    assert user and host


async def test_perform_says_what_happened(triage_agent: TriageAgent, tmp_path: Path) -> None:
    client = AgentClient(triage_agent.url, TOKEN)
    try:
        restart = OperatorAction("restart", "vllm-server")
        assert await perform(client, restart) == "restart of vllm-server accepted (was running)"
        assert await perform(client, OperatorAction("probe", "llama")) == "probe of llama requested"
        ack = OperatorAction("acknowledge", "3")
        assert await perform(client, ack) == "incident #3 acknowledged"
        path = tmp_path / "r.html"
        exported = await perform(client, OperatorAction("export", "h", path=path))
        assert exported == f"report saved to {path}" and path.exists()
        with pytest.raises(AgentError, match="not an incident number"):
            await perform(client, OperatorAction("resolve", "x"))
    finally:
        await client.aclose()


def test_actions_ask_with_the_target_escaped() -> None:
    restart = OperatorAction("restart", "[b]x\x1b[31m")
    assert restart.question().plain == "Restart process [b]x?"
    assert restart.needs_operate and restart.noun == "process" and restart.label() == "Restart"
    assert OperatorAction("probe", "m").question().plain == "Probe model m now?"
    assert OperatorAction("resolve", "7").question().plain == "Resolve incident #7?"
    export = OperatorAction("export", "h", path=Path("/tmp/r.html"))
    assert not export.needs_operate
    assert export.consequence().plain.endswith("Saved to /tmp/r.html")


def test_report_path_cannot_leave_the_directory(tmp_path: Path) -> None:
    path = report_path(tmp_path, "../../etc/x\x1b[31m", now_s=0)
    assert path.parent == tmp_path
    assert path.name.startswith("vigil-report-_.._etc_x-") and path.suffix == ".html"
    assert report_path(tmp_path, "", now_s=0).name.startswith("vigil-report-host-")


def test_an_export_never_overwrites_an_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / "r.html"
    assert write_new_file(path, b"1") == path
    assert write_new_file(path, b"2") == tmp_path / "r-2.html"
    assert path.read_bytes() == b"1"
    with pytest.raises(AgentError, match="cannot write"):
        write_new_file(tmp_path / "missing" / "r.html", b"x")


@pytest.mark.parametrize(
    ("shown", "fetched", "expected"),
    [
        ([], [], (False, [])),
        ([], ["a", "b"], (True, ["a", "b"])),
        (["a", "b"], ["a", "b"], (False, [])),
        (["a", "b", "c"], ["b", "c", "d"], (False, ["d"])),
        (["a", "b"], ["b", "c", "d", "e"], (False, ["c", "d", "e"])),
        (["a", "b"], ["x", "y"], (True, ["x", "y"])),  # rotated past the window
    ],
)
def test_tail_update_appends_only_new_lines(
    shown: list[str], fetched: list[str], expected: tuple[bool, list[str]]
) -> None:
    assert tail_update(shown, fetched) == expected


def test_model_detail_decodes_the_agents_answer() -> None:
    detail = ModelDetail.from_json(
        {
            "name": "iris",
            "protocol": "kserve_v2",
            "url": "http://x",
            "state": "up",
            "since_ms": 1,
            "last_run": None,
            "latency": {"5m": {"e2e_ms": {"count": 2, "p50": 1.5, "p95": 2, "p99": None}}},
            "outcomes_1h": {"ok": 2},
            "availability_1h": None,
            "info": {"platform": "onnx"},
            "incident": None,
        }
    )
    assert detail.summary("e2e_ms") == LatencySummary(count=2, p50_ms=1.5, p95_ms=2.0)
    assert detail.availability_1h is None and detail.info == {"platform": "onnx"}


def test_outcomes_put_ok_first_then_the_biggest_problem() -> None:
    text = outcomes_text({"timeout": 1, "ok": 90, "refused": 9}, 0.9)
    assert text.plain == "1h: 90.0% available · ok 90 · refused 9 · timeout 1"
    styles = {text.plain[s.start : s.end]: str(s.style) for s in text.spans}
    assert styles["90.0% available"] == "yellow"
    assert styles["ok"] == "green" and styles["refused"] == "red"
    assert outcomes_text({}, None).plain == "1h: no runs"


def test_rows_are_text_not_markup() -> None:
    inc = Incident(1, "model:[@click=app.quit]", "k", "critical", "\x1b[2Jboom", "open", 0)
    row = incident_row(inc, 60_000)
    assert [c.plain for c in row][:6] == [
        "#1",
        "open",
        "critical",
        "model:[@click=app.quit]",
        "1m",
        "boom",
    ]
    event = Event(0, "process.exited", "process:x", "[red]no[/red]", {"esc": "\x1b"}, seq=1)
    assert event_row(event)[3].plain == "[red]no[/red]"
    assert data_text(event.data) == '{"esc": "\\u001b"}'
    assert event_matches(event, "red]no")
    assert event_matches(event, "u001b")
    assert not event_matches(event, "absent")


def test_model_title_shows_drift_as_text() -> None:
    detail = ModelDetail.from_json(
        {
            "name": "llama",
            "protocol": "openai",
            "url": "http://x",
            "state": "up",
            "since_ms": 0,
            "last_run": None,
            "drift": {"latency": 60_000, "[@click=app.quit]": 0},
            "info": {},
            "incident": None,
        }
    )
    title = title_text("llama", detail, 360_000)
    assert "latency drift for 5m" in title.plain
    assert "[@click=app.quit] drift" in title.plain  # an agent's text, shown, not run
    styles = {title.plain[s.start : s.end]: str(s.style) for s in title.spans}
    assert styles["latency drift"] == "yellow"
    # An agent from before drift detection sends no drift: nothing is shown.
    old = ModelDetail.from_json({**detail.status.to_json(), "drift": None, "info": {}})
    assert "drift" not in title_text("llama", old, 360_000).plain
