"""``GET /api/v1/summary``'s parts without an agent: the document from a status, the worst p95s
from stored probe runs, the ETag and ``If-None-Match``. The route itself, against a real agent,
is in tests/integration/test_summary_agent.py."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from agent.serve.summary_api import etag_matches, render, summary_document, worst_p95s
from storage.db import migrate
from storage.records import AgentStatus, ModelStatus, ProcessStatus, ResourceValue, make_labels

NOW = 1_765_000_000_000


def res(name: str, value: float, **labels: object) -> ResourceValue:
    return ResourceValue(name=name, labels=make_labels(labels), ts_ms=NOW, value=value)


def status(*resources: ResourceValue) -> AgentStatus:
    return AgentStatus(
        host="gpu-01",
        version="1.2.3",
        started_ms=NOW - 1000,
        now_ms=NOW,
        models=(
            ModelStatus("llama", "openai", "http://127.0.0.1:8000", "up", NOW),
            ModelStatus("whisper", "http", "http://127.0.0.1:8001", "down", NOW),
        ),
        processes=(ProcessStatus("vllm", "backoff", NOW),),
        resources=resources,
        labels=(("region", "eu-west"),),
    )


def test_the_document_aggregates_what_a_row_shows() -> None:
    doc = summary_document(
        status(
            res("host.cpu.percent", 42.5),
            res("host.cpu.percent", 99.0, core=3),  # a core: not the total
            res("gpu.util.percent", 80.0, gpu=0),
            res("gpu.util.percent", 40.0, gpu=1),
            res("gpu.mem.used_bytes", 10.0, gpu=0),
            res("gpu.mem.used_bytes", 30.0, gpu=1),
            res("gpu.mem.total_bytes", 80.0, gpu=0),
            res("gpu.mem.total_bytes", 80.0, gpu=1),
            res("gpu.temperature_c", 70.0, gpu=0),
            res("host.mem.used_bytes", 1e9),
        ),
        {"firing": 1, "critical": 0, "silenced": 0, "maintenance": 0, "pending": 0},
        (120.0, 450.0),
        2,
        "abc123",
    )
    assert doc == {
        "host": "gpu-01",
        "version": "1.2.3",
        "storage_ok": True,
        "models": [{"name": "llama", "state": "up"}, {"name": "whisper", "state": "down"}],
        "processes": [{"name": "vllm", "state": "backoff"}],
        "cpu_percent": 42.5,
        "gpu": {"count": 2, "util_percent": 60.0, "mem_used_bytes": 40.0, "mem_total_bytes": 160.0},
        "ttft_p95_ms": 120.0,
        "e2e_p95_ms": 450.0,
        "open_incidents": 2,
        "alert_counts": {"firing": 1, "critical": 0, "silenced": 0, "maintenance": 0, "pending": 0},
        "labels": {"region": "eu-west"},
        "environment_hash": "abc123",
    }
    # Nothing in it moves with the clock: the same values render the same bytes and tag.
    assert "now_ms" not in doc and "uptime_s" not in doc


def test_no_gpu_and_readings_that_are_not_numbers() -> None:
    doc = summary_document(
        status(res("host.cpu.percent", math.nan), res("gpu.util.percent", math.inf, gpu=0)),
        {},
        (math.nan, None),
        0,
    )
    assert doc["cpu_percent"] is None and doc["ttft_p95_ms"] is None
    assert doc["gpu"] == {
        "count": 0,
        "util_percent": None,
        "mem_used_bytes": None,
        "mem_total_bytes": None,
    }
    body, _etag = render(doc)
    json.loads(body)  # valid JSON: no NaN or Infinity


def test_the_etag_follows_the_values() -> None:
    a = summary_document(status(res("host.cpu.percent", 10.0)), {}, (None, None), 0)
    b = summary_document(status(res("host.cpu.percent", 10.0)), {}, (None, None), 0)
    c = summary_document(status(res("host.cpu.percent", 10.1)), {}, (None, None), 0)
    (body_a, tag_a), (_, tag_b), (_, tag_c) = render(a), render(b), render(c)
    assert tag_a == tag_b != tag_c
    assert tag_a.startswith('"') and tag_a.endswith('"') and len(tag_a) == 18
    assert b" " not in body_a  # compact


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ('"x",W/"abc" ', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"abc"') is matches


def test_worst_p95s_over_answered_runs_in_the_window() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    rows = [
        # (ts, model, category, ttft, e2e)
        *((NOW - 1000, "llama", "ok", float(v), float(v * 2)) for v in range(1, 101)),
        (NOW - 1000, "whisper", "ok", None, 900.0),
        (NOW - 1000, "whisper", "timeout", None, 99_999.0),  # not answered: no latency
        (NOW - 600_000, "llama", "ok", 5_000.0, 5_000.0),  # before the window
        (NOW - 1000, "other", "ok", 7_000.0, 7_000.0),  # not asked about
    ]
    conn.executemany(
        "INSERT INTO probe_runs (ts, model, ok, category, ttft_ms, e2e_ms) "
        "VALUES (?, ?, 1, ?, ?, ?)",
        rows,
    )
    ttft, e2e = worst_p95s(conn, ["llama", "whisper"], NOW - 300_000)
    assert ttft == pytest.approx(95.05)  # llama's p95 of 1..100, interpolated
    assert e2e == 900.0  # whisper's one answered run beats llama's 190.1
    assert worst_p95s(conn, ["absent"], NOW - 300_000) == (None, None)
    assert worst_p95s(conn, [], NOW - 300_000) == (None, None)
