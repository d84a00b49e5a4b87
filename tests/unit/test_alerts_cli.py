"""``vigil alerts`` and ``vigil status``'s alerts block: the command tree and agent text made
safe (the API side runs against a real agent in tests/integration/test_alerts_api.py)."""

from __future__ import annotations

from agent.cli.parser import build_parser
from agent.cli.status_view import render_alerts, render_status
from storage.records import AgentStatus

NOW = 1_800_000_000_000


def alert(**kw: object) -> dict[str, object]:
    return {
        "id": 1,
        "rule": "model_down",
        "subject": "model:m1",
        "labels": {"model": "m1"},
        "severity": "critical",
        "state": "firing",
        "summary": "m1 is down",
        "pending_ms": NOW - 120_000,
        "firing_ms": NOW - 60_000,
        "resolved_ms": None,
        "silenced_by": None,
        "maintenance": None,
        **kw,
    }


def test_the_alerts_block_of_status() -> None:
    status = AgentStatus("gpu1", "1.0", NOW - 3_600_000, NOW)
    assert "alerts" not in render_status(status, now_ms=NOW)  # the agent was not asked
    assert render_status(status, now_ms=NOW, alerts=[]).endswith("\nalerts (0 firing)")
    text = render_status(
        status,
        now_ms=NOW,
        alerts=[alert(), alert(id=2, summary="evil\x1b[2J", silenced_by="abc\x07")],
    )
    block = text.split("\nalerts (2 firing, 1 muted)\n", 1)[1].splitlines()
    assert block[0].split() == ["STATE", "SEVERITY", "RULE", "SUBJECT", "SINCE", "SUMMARY"]
    assert block[1].split()[:5] == ["FIRING", "critical", "model_down", "model:m1", "1m"]
    assert "\x1b" not in text and "\x07" not in text
    assert "FIRING (silenced abc" in block[2]


def test_an_alert_resolved_or_in_maintenance() -> None:
    (_, resolved, planned) = render_alerts(
        [
            alert(state="resolved", resolved_ms=NOW - 5_000),
            alert(maintenance="weekly"),
        ],
        NOW,
    )
    assert resolved.split()[0] == "RESOLVED" and "5s" in resolved
    assert planned.startswith("  FIRING (maintenance weekly)")


def test_alerts_lists_by_default_and_takes_its_flags_before_or_after_list() -> None:
    parse = build_parser().parse_args
    bare = parse(["alerts", "--json", "--url", "http://a"])
    assert (bare.alerts_command, bare.json, bare.url) == (None, True, "http://a")
    listed = parse(["alerts", "--url", "http://a", "list", "--state", "firing"])
    assert (listed.alerts_command, listed.url, listed.state) == ("list", "http://a", "firing")
    silence = parse(["alerts", "silence", "model=m1", "job=~x.*", "--for", "2h", "--comment", "c"])
    assert (silence.matchers, silence.duration, silence.comment) == (
        ["model=m1", "job=~x.*"],
        "2h",
        "c",
    )
    assert parse(["notify", "test", "hook"]).channel == "hook"
