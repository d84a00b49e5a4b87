"""``vigil canary``'s verdict (agent.deploy.canarycheck): what passes, what fails and why."""

from __future__ import annotations

import json

import pytest

from agent.cli import canary_cmd
from agent.deploy import canarycheck
from agent.deploy.canarycheck import (
    CanaryCriteria,
    CanaryRun,
    answer_matches,
    check_expected,
    judge,
)
from storage.records import ProbeRun

OUTPUTS = json.dumps([{"name": "y", "shape": [1, 3], "datatype": "FP32", "data": [0.5, 0.6, 0.7]}])


def run(
    ok: bool = True, category: str = "ok", e2e: float = 10.0, error: str | None = None, **kw: float
) -> ProbeRun:
    return ProbeRun(model="m", ts_ms=1, ok=ok, category=category, e2e_ms=e2e, error=error, **kw)  # type: ignore[arg-type]


def test_every_run_ok_passes_with_the_figures() -> None:
    runs = [
        CanaryRun(run(e2e=float(i), ttft_ms=i / 2, tokens_per_s=100.0 + i)) for i in range(1, 6)
    ]
    report = judge("m", "openai", "http://x", runs)
    assert report.passed and report.verdict == "pass" and report.ok == 5
    doc = report.to_json()
    assert doc["e2e_ms"] == {"p50": 3.0, "p95": 4.8}
    assert doc["ttft_ms"] == {"p50": 1.5, "p95": 2.4}
    assert doc["tokens_per_s_p50"] == 103.0 and doc["failed"] == 0 and doc["failures"] == []


def test_a_failed_run_fails_the_canary_naming_its_category_and_message() -> None:
    runs = [
        CanaryRun(run()),
        CanaryRun(run(False, "http_error", error="HTTP 500: boom")),
        CanaryRun(run()),
    ]
    report = judge("m", "openai", "http://x", runs)
    assert not report.passed and report.ok == 2
    assert [f.to_json() for f in report.failures] == [
        {"run": 2, "category": "http_error", "error": "HTTP 500: boom", "e2e_ms": 10.0}
    ]
    # The figures are the ok runs'.
    assert report.e2e_ms == {"p50": 10.0, "p95": 10.0}


def test_no_runs_is_no_pass() -> None:
    assert not judge("m", "tcp", "tcp://x:1", []).passed


def test_max_latency_fails_a_slower_run() -> None:
    runs = [CanaryRun(run(e2e=90.0)), CanaryRun(run(e2e=120.0))]
    report = judge("m", "kserve_v2", "http://x", runs, CanaryCriteria(max_latency_ms=100.0))
    assert not report.passed and report.ok == 1
    assert report.failures[0].category == "slow" and report.failures[0].run == 2
    assert "120.0 ms is above --max-latency 100 ms" in report.failures[0].error


def test_expected_text_is_compared_with_whitespace_folded() -> None:
    want = CanaryCriteria(expected="Hello  there.\n")
    ok = judge("m", "openai", "u", [CanaryRun(run(), "Hello there.")], want)
    assert ok.passed
    bad = judge("m", "openai", "u", [CanaryRun(run(), "Goodbye.")], want)
    assert not bad.passed and bad.failures[0].category == "wrong_output"
    assert "got 'Goodbye.'" in bad.failures[0].error
    none = judge("m", "openai", "u", [CanaryRun(run(), None)], want)
    assert "no answer to compare" in none.failures[0].error


@pytest.mark.parametrize(
    ("expected", "diff"),
    [
        ({"y": [[0.5, 0.6, 0.7]]}, None),
        ({"y": [0.50005, 0.6, 0.7]}, None),  # flat, within the tolerance
        ([{"name": "y", "shape": [1, 3], "data": [0.5, 0.6, 0.7]}], None),
        ({"outputs": {"y": [[0.5, 0.6, 0.7]]}}, None),  # vigil probe record-golden's file
        ({"y": [[0.5, 0.6, 0.8]]}, "output 'y'[2] is 0.7, expected 0.8"),
        ({"z": [1]}, "output 'z' missing; got ['y']"),
        ([{"name": "y", "shape": [3], "data": [0.5, 0.6, 0.7]}], "has shape [1, 3], expected [3]"),
        ({"y": [0.5, 0.6]}, "has 3 values, expected 2"),
        ({"y": [True, 0.6, 0.7]}, "is 0.5, expected True"),
    ],
)
def test_expected_tensors(expected: object, diff: str | None) -> None:
    got = answer_matches("kserve_v2", OUTPUTS, expected, 1e-4)
    assert got == diff if diff is None else diff in str(got)


def test_an_expected_answer_that_cannot_fit_the_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="expected the output tensors"):
        check_expected("kserve_v2", "text")
    with pytest.raises(ValueError, match="answers text; expected a JSON string"):
        check_expected("openai", {"y": [1]})
    check_expected("ollama", "fine")


def test_a_report_shows_kserve_answers_as_tensors_and_text_as_text() -> None:
    doc = judge("m", "kserve_v2", "u", [CanaryRun(run(), OUTPUTS)]).to_json()
    assert doc["runs"][0]["answer"][0]["data"] == [0.5, 0.6, 0.7]
    doc = judge("m", "tgi", "u", [CanaryRun(run(), "x" * 5000)]).to_json()
    assert doc["runs"][0]["answer"] == "x" * canarycheck.ANSWER_CHARS


def test_the_cli_and_the_api_agree_on_the_most_runs() -> None:
    assert canary_cmd.MAX_COUNT == canarycheck.MAX_COUNT
