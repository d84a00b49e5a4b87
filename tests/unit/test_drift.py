"""Drift detection: step changes are caught once, noise and improvements never."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import ConfigError, DriftConfig, parse_config
from agent.health.drift import ModelDrift
from storage.records import Event, ProbeRun

SUBJECT = "model:llm"
CFG = DriftConfig(window=10, baseline=40, ratio=1.5, min_delta_ms=20.0, accept_after_s=600.0)


class Feed:
    """Runs 10 s apart, fed to one ModelDrift; collects the events."""

    def __init__(self, config: DriftConfig = CFG, seed: int = 1) -> None:
        self.drift = ModelDrift(SUBJECT, config)
        self.rng = random.Random(seed)
        self.ts = 1_000_000
        self.events: list[Event] = []

    def run(self, category: str = "ok", **metrics: float) -> ProbeRun:
        self.ts += 10_000
        return ProbeRun(
            model="llm", ts_ms=self.ts, ok=category == "ok", category=category, **metrics
        )

    def latency(
        self, n: int, e2e: float, *, noise: float = 0.05, ttft: float | None = None
    ) -> None:
        for _ in range(n):
            jitter = 1 + self.rng.uniform(-noise, noise)
            run = self.run(
                e2e_ms=e2e * jitter,
                ttft_ms=(ttft or e2e / 4) * jitter,
                tokens_per_s=1000 * 16 / (e2e * jitter),
            )
            self.events.extend(self.drift.observe(run))

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def test_a_step_in_latency_is_one_drift_event_with_its_evidence() -> None:
    f = Feed()
    f.latency(60, 100.0)
    assert f.events == []
    f.latency(30, 250.0)
    # TTFT, e2e and tokens/s all moved: one latency detection, one throughput detection.
    assert f.kinds() == ["drift.latency", "drift.throughput"]
    latency = f.events[0]
    assert latency.subject == SUBJECT
    shifts = {s["metric"]: s for s in latency.data["shifts"]}
    assert set(shifts) == {"ttft_ms", "e2e_ms"}  # all the group's metrics, as evidence
    # e2e moved 150 ms and crossed first; TTFT's 37 ms needs more of the window to clear the
    # 20 ms floor, and joining later opens no second event.
    assert latency.data["drifted"] == ["e2e_ms"]
    assert shifts["e2e_ms"]["baseline_median"] == pytest.approx(100, rel=0.06)
    # Detected as soon as the window's median is past the margin: half the window is slow.
    e2e = shifts["e2e_ms"]
    assert 150 <= e2e["recent_median"] <= 260
    assert e2e["factor"] == pytest.approx(e2e["recent_median"] / e2e["baseline_median"], rel=0.01)
    assert e2e["factor"] >= 1.5
    assert "e2e_ms median" in latency.message
    # Detected once the window's median moved: within the first window of slow runs.
    first_slow_ts = f.ts - 29 * 10_000
    assert latency.ts_ms < first_slow_ts + CFG.window * 10_000
    assert f.drift.active().keys() == {"latency", "throughput"}


def test_a_lasting_shift_stays_drifted_until_it_clears() -> None:
    f = Feed(DriftConfig(window=10, baseline=40, accept_after_s=1e6))
    f.latency(60, 100.0)
    f.latency(200, 250.0)  # frozen baseline: no second detection, no clearing
    assert f.kinds() == ["drift.latency", "drift.throughput"]
    f.latency(30, 100.0)
    assert f.kinds()[2:] == ["model.drift_cleared", "model.drift_cleared"]
    assert {e.data["group"] for e in f.events[2:]} == {"latency", "throughput"}
    assert f.drift.active() == {}


def test_a_shift_that_outlasts_accept_after_becomes_the_baseline() -> None:
    f = Feed(DriftConfig(window=10, baseline=40, accept_after_s=300.0))
    f.latency(60, 100.0)
    f.latency(100, 250.0)
    assert f.kinds() == [
        "drift.latency",
        "drift.throughput",
        "model.drift_accepted",
        "model.drift_accepted",
    ]
    accepted = f.events[2]
    assert accepted.ts_ms - f.events[0].ts_ms >= 300_000
    # The new level is normal now: more of it is nothing, and going back is an improvement.
    f.latency(100, 250.0)
    f.latency(100, 100.0)
    assert len(f.events) == 4


@pytest.mark.parametrize("outlier_every", [7, 4])
def test_outliers_are_not_drift(outlier_every: int) -> None:
    f = Feed()
    for i in range(600):
        f.latency(1, 1000.0 if i % outlier_every == 0 else 100.0)
    assert f.events == []


def test_gaussian_noise_over_long_runs_is_not_drift() -> None:
    f = Feed()
    for _ in range(3000):
        f.latency(1, max(1.0, f.rng.gauss(100.0, 20.0)), noise=0.0)
    assert f.events == []


def test_a_large_relative_but_tiny_absolute_shift_is_not_drift() -> None:
    f = Feed()
    f.latency(60, 4.0, ttft=1.0)
    f.latency(60, 12.0, ttft=3.0)  # 3x, but 8 ms: under min_delta
    assert "drift.latency" not in f.kinds()


def test_getting_faster_is_not_drift() -> None:
    f = Feed()
    f.latency(60, 300.0)
    f.latency(60, 100.0)
    assert f.events == []


def test_failed_runs_do_not_feed_the_windows() -> None:
    f = Feed()
    f.latency(60, 100.0)
    for _ in range(50):
        f.events.extend(f.drift.observe(f.run("timeout", e2e_ms=5000.0)))
        f.events.extend(f.drift.observe(f.run("http_error", e2e_ms=4000.0)))
    assert f.events == []


def test_no_judgement_before_the_baseline_is_half_full() -> None:
    # A full window of fast runs, then slow ones: each slow run pushes a fast one into the
    # baseline. The window's median is slow from the 6th; the baseline is half full (20 of
    # 40) only at the 20th, and only then may the step be judged.
    f = Feed()
    f.latency(CFG.window, 100.0, ttft=100.0)
    slow_runs = 0
    while not f.events and slow_runs < 25:
        f.latency(1, 1000.0, ttft=1000.0)
        slow_runs += 1
    assert slow_runs == 20 and f.kinds()[0] == "drift.latency"


def test_disabled_detects_nothing() -> None:
    f = Feed(DriftConfig(enabled=False, window=10, baseline=40))
    f.latency(60, 100.0)
    f.latency(60, 500.0)
    assert f.events == []


def outputs(texts: Iterator[str] | list[str], f: Feed) -> None:
    for text in texts:
        f.events.extend(f.drift.observe(f.run(e2e_ms=100.0), text))


def test_a_deterministic_answer_that_changes_is_output_drift() -> None:
    f = Feed(DriftConfig(output_stable_runs=5, output_confirm_runs=3))
    outputs(["Paris is the capital of France."] * 6, f)
    outputs(["Paris  is the capital\nof France."], f)  # whitespace only: the same answer
    outputs(["I cannot help with that."] * 2, f)
    assert f.events == []
    outputs(["I cannot help with that."], f)
    assert f.kinds() == ["drift.output"]
    data = f.events[0].data
    assert data["previous_excerpt"] == "Paris is the capital of France."
    assert data["new_excerpt"] == "I cannot help with that."
    assert data["previous_sha256"] != data["new_sha256"]
    # The new answer is learnt from the runs that confirmed it: two more and it is stable,
    # and changing back is drift again.
    outputs(["I cannot help with that."] * 2 + ["Paris is the capital of France."] * 3, f)
    assert f.kinds() == ["drift.output", "drift.output"]


@pytest.mark.parametrize(
    "after",
    [
        ["Lyon."] * 2 + ["Paris."] + ["Lyon."] * 5,  # away and back: not a constant
        ["Lyon.", "Nice.", "Metz."] + ["Lyon."] * 5,  # no one new answer
    ],
)
def test_a_canary_that_shows_it_varies_is_no_longer_judged(after: list[str]) -> None:
    f = Feed(DriftConfig(output_stable_runs=5, output_confirm_runs=3))
    outputs(["Paris."] * 5 + after, f)
    assert f.events == []


@pytest.mark.parametrize("seed", range(20))
def test_a_sampled_canary_never_fires(seed: int) -> None:
    # Even a low-entropy sampler (four answers) shows three different ones long before it
    # happens to repeat one five times in a row.
    f = Feed()
    rng = random.Random(seed)
    outputs((f"answer {rng.randrange(4)}" for _ in range(500)), f)
    assert "drift.output" not in f.kinds()


def test_excerpts_are_bounded() -> None:
    f = Feed(DriftConfig(output_stable_runs=2, output_confirm_runs=1))
    outputs(["a" * 10] * 2 + ["b" * 5000], f)
    assert len(f.events[0].data["new_excerpt"]) == 201


def test_seeding_from_stored_runs_restores_the_baseline() -> None:
    stored = Feed()
    runs = [stored.run(e2e_ms=100.0, ttft_ms=25.0) for _ in range(60)]
    f = Feed()
    f.ts = stored.ts
    f.drift.seed(runs)
    assert f.drift.active() == {}
    f.latency(10, 400.0, ttft=100.0)
    assert f.kinds()[:1] == ["drift.latency"]


def test_seeding_replays_a_drift_that_was_already_on() -> None:
    # The slowdown happened before the restart: the rebuilt state knows it (the API and
    # /metrics show it), it is not announced again, and its end is.
    stored = Feed()
    runs = [stored.run(e2e_ms=100.0, ttft_ms=25.0) for _ in range(60)]
    runs += [stored.run(e2e_ms=400.0, ttft_ms=100.0) for _ in range(15)]
    f = Feed(DriftConfig(window=10, baseline=40, accept_after_s=1e6))
    f.ts = stored.ts
    f.drift.seed(runs)
    assert set(f.drift.active()) == {"latency"}
    f.latency(10, 400.0, ttft=100.0)
    assert f.events == []
    f.latency(10, 100.0, ttft=25.0)
    assert f.kinds() == ["model.drift_cleared"]


def test_a_level_under_the_floor_clears() -> None:
    # 10 ms -> 40 ms is drift (4x, 30 ms over); back to 18 ms is still 1.8x but only 8 ms
    # over, under half the 20 ms floor: a level that would never have been detected does not
    # keep the drift on. (Throughput has no floor: 1.8x fewer tokens/s stays drifted.)
    f = Feed(DriftConfig(window=10, baseline=40, accept_after_s=1e6))
    f.latency(60, 10.0, ttft=10.0)
    f.latency(20, 40.0, ttft=40.0)
    assert "drift.latency" in f.kinds()
    f.latency(20, 18.0, ttft=18.0)
    cleared = [e for e in f.events if e.kind == "model.drift_cleared"]
    assert [e.data["group"] for e in cleared] == ["latency"]
    assert set(f.drift.active()) == {"throughput"}


def test_an_accepted_level_counts_each_run_once() -> None:
    f = Feed(DriftConfig(window=10, baseline=40, accept_after_s=100.0))
    f.latency(60, 100.0)
    while "model.drift_accepted" not in f.kinds():
        f.latency(1, 250.0)
    latency = next(g for g in f.drift.groups if g.group == "latency")
    e2e = next(w for w in latency.windows if w.metric == "e2e_ms")
    # The baseline holds the last window's runs and the window starts empty: each later run
    # passes through the window once before it reaches the baseline.
    assert (len(e2e.baseline), len(e2e.recent)) == (10, 0)
    f.latency(15, 250.0)
    assert len(e2e.baseline) == 15
    assert len(set(e2e.baseline)) == len(e2e.baseline)


def test_a_config_change_closes_active_drift() -> None:
    f = Feed(DriftConfig(window=10, baseline=40, accept_after_s=1e6))
    f.latency(60, 100.0)
    f.latency(20, 300.0)
    ended = f.drift.ended_by_config(f.ts + 1)
    assert sorted(e.data["group"] for e in ended) == ["latency", "throughput"]
    assert {e.kind for e in ended} == {"model.drift_cleared"}
    assert all(e.data["reason"] == "config changed" for e in ended)
    assert Feed().drift.ended_by_config(1) == []


def config_with(drift: str) -> str:
    return f"""
[agent]
data_dir = "/tmp/vigil-test"

[[model]]
name = "llm"
protocol = "openai"
url = "http://127.0.0.1:1"

[model.drift]
{drift}
"""


def test_drift_config_parses() -> None:
    cfg = parse_config(
        config_with(
            'window = 15\nbaseline = 60\nratio = 2\nmin_delta = "50ms"\n'
            'accept_after = "30m"\noutput_stable_runs = 4\noutput_confirm_runs = 2\n'
            "enabled = false"
        ),
        Path("v.toml"),
    )
    assert cfg.models[0].drift == DriftConfig(
        enabled=False,
        window=15,
        baseline=60,
        ratio=2.0,
        min_delta_ms=50.0,
        accept_after_s=1800.0,
        output_stable_runs=4,
        output_confirm_runs=2,
    )
    assert parse_config(config_with(""), Path("v.toml")).models[0].drift == DriftConfig()


@pytest.mark.parametrize(
    ("line", "field", "expected"),
    [
        ("ratio = 1.0", "model[0].drift.ratio", "expected a number of at least 1.01"),
        ("window = 2", "model[0].drift.window", "expected a whole number of 3 or more"),
        ('min_delta = "-1s"', "model[0].drift.min_delta", "expected a duration of 0s or more"),
        ("enabled = 1", "model[0].drift.enabled", "expected true or false"),
        ("windw = 10", "model[0].drift.windw", "unknown key; expected one of"),
    ],
)
def test_bad_drift_config_names_the_nested_field_and_line(
    line: str, field: str, expected: str
) -> None:
    text = config_with(line)
    with pytest.raises(ConfigError) as err:
        parse_config(text, Path("v.toml"))
    assert err.value.field == field
    assert expected in err.value.reason
    assert err.value.line == text.splitlines().index(line) + 1
