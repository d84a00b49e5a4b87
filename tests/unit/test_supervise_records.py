"""The supervisor's typed records (agent.supervise): ``supervisor.json`` entries read as older
agents wrote them, malformed ones dropped; requests; backoff and crash-loop counting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import ProcessConfig
from agent.supervise.adoption import ProcessRecord, read_records, write_records
from agent.supervise.backoff import RestartHistory
from agent.supervise.requests import Request, RequestKind
from storage.records import FAILING_PROCESS_STATES, ProcessState, ProcessStatus


def test_a_file_an_older_agent_wrote_reads_and_writes_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.json"
    old = {
        "srv": {
            "pid": 4242,
            "create_time": 1765000000.25,
            "argv": ["python", "-m", "http.server"],
            "restarts": 3,
            "saved_ms": 1765000001000,
        }
    }
    path.write_text(json.dumps(old, indent=1) + "\n")
    records = read_records(path)
    assert records == {
        "srv": ProcessRecord(4242, 1765000000.25, ("python", "-m", "http.server"), 3, 1765000001000)
    }
    write_records(path, records)
    assert json.loads(path.read_text()) == old


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1, 2]",
        '{"srv": 3}',
        '{"srv": {"create_time": 1.0}}',
        '{"srv": {"pid": "1"}}',
    ],
)
def test_an_unreadable_file_or_entry_is_no_record(tmp_path: Path, text: str) -> None:
    path = tmp_path / "supervisor.json"
    path.write_text(text)
    assert read_records(path) == {}
    assert read_records(tmp_path / "absent.json") == {}


def test_fields_of_the_wrong_type_read_as_unknown() -> None:
    rec = ProcessRecord.from_json({"pid": 7, "create_time": "x", "argv": [1], "restarts": "2"})
    assert rec == ProcessRecord(pid=7, create_time=None, argv=None, restarts=None, saved_ms=None)


def test_requests_are_planned_unless_a_hang() -> None:
    assert Request(RequestKind.RESTART, "alice").planned
    hang = Request(RequestKind.HANG, "hung: stalled", decided_ms=2, began_ms=1)
    assert not hang.planned and dict(hang.evidence) == {}
    assert RequestKind("stop") == "stop" and f"{RequestKind.STOP} by bob" == "stop by bob"


def test_process_states_are_their_strings() -> None:
    status = ProcessStatus(name="p", state=ProcessState.BACKOFF, since_ms=1)
    assert json.loads(json.dumps(status.to_json()))["state"] == "backoff"
    assert ProcessStatus.from_json(status.to_json()).state in FAILING_PROCESS_STATES
    assert [str(s) for s in ProcessState][:2] == ["starting", "running"]


def test_restart_history_backs_off_then_quarantines() -> None:
    cfg = ProcessConfig(
        name="p",
        command=("true",),
        backoff_initial_s=1.0,
        backoff_factor=2.0,
        backoff_max_s=3.0,
        backoff_jitter=0.0,
        backoff_reset_s=10.0,
        quarantine_after=2,
        quarantine_window_s=60.0,
    )
    h = RestartHistory(cfg)
    delays = []
    for t in (0.0, 1.0):
        h.ran_for(0.5)
        assert h.crash_loop(t) is None
        delays.append(h.next_delay())
        h.restarted(t)
    assert delays == [0.0, 1.0]
    assert h.crash_loop(2.0) == 2  # two restarts within the window: the next failure stops
    assert h.crash_loop(200.0) is None  # they left the window
    h.ran_for(30.0)  # a healthy run resets the streak
    assert h.next_delay() == 0.0
    h.clear()
    assert h.crash_loop(200.0) is None
