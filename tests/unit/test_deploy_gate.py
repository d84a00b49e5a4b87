"""The canary gate (agent.deploy.gate) and the current-symlink switch (agent.deploy.link)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import DeployConfig
from agent.deploy.gate import BakeGate, Baseline, Canary, Outcome, answer_digest
from agent.deploy.link import LinkError, read_link, switch_link
from storage.records import Incident, ProbeRun

T0 = 1_000_000


def run(ts: int, ok: bool = True, e2e: float = 10.0, **kw: object) -> ProbeRun:
    category = "ok" if ok else str(kw.pop("category", "refused"))
    return ProbeRun(model="m", ts_ms=ts, ok=ok, category=category, e2e_ms=e2e, end_ms=ts + 5, **kw)  # type: ignore[arg-type]


def gate(config: DeployConfig | None = None, baseline: Baseline | None = None) -> BakeGate:
    base = baseline or Baseline.build([run(T0 - 100 * i, e2e=10.0) for i in range(20)], ["a", "a"])
    return BakeGate(
        config or DeployConfig(bake_s=2.0, min_good_canaries=3),
        base,
        started_ms=T0,
        bake_s=2.0,
        interval_s=0.5,
        timeout_s=1.0,
    )


def test_baseline_knows_a_deterministic_answer_only() -> None:
    b = Baseline.build([run(1, e2e=10.0), run(2, e2e=20.0), run(3, ok=False)], ["x ", " x"])
    assert b.runs == 2 and b.answer_sha256 == answer_digest("x") and b.e2e_p95_ms == 19.5
    assert Baseline.build([], ["x", "y"]).answer_sha256 is None
    assert Baseline.build([], ["x"]).answer_sha256 is None  # one answer proves nothing
    assert Baseline.from_json(b.to_json()) == b


def test_waits_for_the_bake_then_passes_with_enough_good_canaries() -> None:
    g = gate()
    for i in range(3):
        g.observe(Canary.of(run(T0 + 500 * i, e2e=11.0), "a"))
    assert g.judge(T0 + 1500).outcome == Outcome.WAIT  # the bake is not over
    v = g.judge(T0 + 2000)
    assert v.outcome == Outcome.PASS, v.reason
    checks = {c.check: c.ok for c in v.checks}
    assert checks == {
        "canaries": True,
        "golden": True,
        "incidents": True,
        "drift": True,
        "latency": True,
        "throughput": None,  # no tokens/s to compare
    }


def test_a_run_sent_before_the_bake_is_not_the_new_versions() -> None:
    g = gate()
    g.observe(Canary.of(run(T0 - 1, ok=False), None))
    assert g.canaries == []


def test_a_different_answer_fails_at_once() -> None:
    g = gate()
    g.observe(Canary.of(run(T0 + 10), "b"))
    v = g.judge(T0 + 20)
    assert v.outcome == Outcome.FAIL and "golden" in v.reason
    golden = next(c for c in v.checks if c.check == "golden")
    assert golden.figures["expected_sha256"] == answer_digest("a")
    assert golden.figures["got_excerpt"] == "b"


def test_a_failed_canary_fails_unless_allowed() -> None:
    g = gate()
    g.observe(Canary.of(run(T0 + 10, ok=False, error="connection refused"), None))
    v = g.judge(T0 + 20)
    assert v.outcome == Outcome.FAIL and "connection refused" in v.reason
    lenient = gate(DeployConfig(bake_s=2.0, min_good_canaries=2, max_bad_canaries=1))
    lenient.observe(Canary.of(run(T0 + 10, ok=False), None))
    assert lenient.judge(T0 + 20).outcome == Outcome.WAIT


def test_latency_over_the_ratio_and_the_floor_fails_at_the_end() -> None:
    g = gate()
    for i in range(3):
        g.observe(Canary.of(run(T0 + 500 * i, e2e=100.0), "a"))
    assert g.judge(T0 + 1000).outcome == Outcome.WAIT
    v = g.judge(T0 + 2000)
    assert v.outcome == Outcome.FAIL and "e2e_ms p95 100 ms is 10.00x" in v.reason
    # 10 ms -> 25 ms is 2.5x, but within the 20 ms floor: noise, not a regression.
    g = gate()
    for i in range(3):
        g.observe(Canary.of(run(T0 + 500 * i, e2e=25.0), "a"))
    assert g.judge(T0 + 2000).outcome == Outcome.PASS


def test_throughput_below_the_ratio_fails() -> None:
    base = Baseline.build([run(T0 - i, tokens_per_s=100.0) for i in range(5)], [])
    g = gate(baseline=base)
    for i in range(3):
        g.observe(Canary.of(run(T0 + 500 * i, tokens_per_s=70.0), None))
    v = g.judge(T0 + 2000)
    assert v.outcome == Outcome.FAIL and "tokens/s" in v.reason


def test_an_incident_or_drift_during_the_bake_fails_but_not_one_from_before() -> None:
    def incident(opened: int, kind: str = "model_down") -> Incident:
        return Incident(1, "model:m", kind, "critical", "down", "open", opened_ms=opened)

    g = gate()
    assert g.judge(T0 + 10, [incident(T0 - 1)], {"latency": T0 - 1}).outcome == Outcome.WAIT
    assert g.judge(T0 + 10, [incident(T0 + 1, "deploy_failed")]).outcome == Outcome.WAIT
    v = g.judge(T0 + 10, [incident(T0 + 1)])
    assert v.outcome == Outcome.FAIL and "incident #1 model_down" in v.reason
    v = g.judge(T0 + 10, [], {"output": T0 + 5})
    assert v.outcome == Outcome.FAIL and "output drift" in v.reason


def test_too_few_good_canaries_by_the_grace_fails() -> None:
    g = gate()
    g.observe(Canary.of(run(T0 + 10), "a"))
    assert g.judge(T0 + 2000).outcome == Outcome.WAIT  # a canary or two may still come
    v = g.judge(g.deadline_ms)
    assert v.outcome == Outcome.FAIL and "only 1 ok canaries in a row" in v.reason


def test_switch_link_is_atomic_and_refuses_what_it_must(tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    link = tmp_path / "current"
    assert read_link(link) is None
    assert switch_link(link, v1) is None
    assert switch_link(link, v2) == v1
    assert read_link(link) == v2 and link.resolve() == v2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".current")]
    with pytest.raises(LinkError, match="does not exist"):
        switch_link(link, tmp_path / "gone")
    assert read_link(link) == v2  # unchanged
    with pytest.raises(LinkError, match="absolute"):
        switch_link(link, Path("relative"))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(LinkError, match="is not a symlink"):
        switch_link(plain, v1)
    assert plain.is_dir() and not plain.is_symlink()
    os.symlink("v1", tmp_path / "rel")
    assert read_link(tmp_path / "rel") == tmp_path / "v1"
