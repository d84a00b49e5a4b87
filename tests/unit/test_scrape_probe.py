"""The metrics scrape probe: stall detection, exposition parsing, and runs against the fake.

The fake (tests/fakes/metrics_server.py) renders each server's page in its own style on a real
loopback socket; a stall is a page whose running gauge is > 0 while the progress counter holds
still between scrapes.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ConfigError, ModelConfig, parse_config
from agent.health.incidents import IncidentBook
from agent.health.monitor import ModelMonitor, severity_of
from probes.base import CATEGORIES, OptionError, ProbeTarget
from probes.httpclient import HttpClient
from probes.promtext import ExpositionError, parse_exposition, select, series_name, total
from probes.registry import probe_for
from probes.scrape import PRESETS, MetricsScrapeProbe
from probes.stall import Stall, StallDetector
from storage.records import Event, ProbeRun, Sample
from storage.writer import Writer
from tests.fakes.metrics_server import GPU_UUID, STATE, Behaviour, FakeState, build_app, serving

# --- StallDetector ---------------------------------------------------------------------------


def feed(det: StallDetector, *scrapes: tuple[float, float], every_ms: int = 5000) -> list:
    return [det.observe(i * every_ms, r, t) for i, (r, t) in enumerate(scrapes)]


def test_flat_counter_while_running_stalls_after_n_scrapes() -> None:
    det = StallDetector(3)
    out = feed(det, (3, 1234), (3, 1234), (3, 1234), (3, 1234), (3, 1234))
    assert out[:3] == [None, None, None]  # a baseline, then two flat scrapes
    assert out[3] == Stall(running=3, tokens=1234, flat_scrapes=3, flat_ms=15_000)
    assert out[4] == Stall(running=3, tokens=1234, flat_scrapes=4, flat_ms=20_000)


def test_progress_ends_a_stall_and_starts_a_new_baseline() -> None:
    det = StallDetector(2)
    out = feed(det, (1, 10), (1, 10), (1, 10), (1, 11), (1, 11), (1, 11))
    assert [o is not None for o in out] == [False, False, True, False, False, True]


def test_counter_reset_is_not_a_stall() -> None:
    # The server restarted between scrapes: its counter fell. That is a new baseline, not the
    # continuation of a flat run, even though the value then holds.
    det = StallDetector(2)
    out = feed(det, (2, 500), (2, 500), (2, 3), (2, 3))
    assert out == [None, None, None, None]
    assert det.flat_scrapes == 1


def test_nothing_running_resets_and_the_next_busy_scrape_is_only_a_baseline() -> None:
    det = StallDetector(2)
    out = feed(det, (4, 7), (4, 7), (0, 7), (4, 7), (4, 7), (4, 7))
    assert [o is not None for o in out] == [False, False, False, False, False, True]


@pytest.mark.parametrize(("running", "tokens"), [(math.nan, 5.0), (-1.0, 5.0), (2.0, math.nan)])
def test_unknown_values_never_stall(running: float, tokens: float) -> None:
    det = StallDetector(1)
    assert feed(det, (running, tokens), (running, tokens), (running, tokens)) == [None] * 3


def test_stall_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StallDetector(0)


def test_stall_text_says_what_how_many_and_how_long() -> None:
    text = Stall(3, 1234, 3, 15_000).describe("vllm:num_requests_running", "gen_tokens_total")
    assert text == (
        "3 requests running (vllm:num_requests_running), gen_tokens_total flat at "
        "1234 for 3 scrapes (15s)"
    )
    assert (
        Stall(1, 2.5e9, 2, 1500)
        .describe("r", "t")
        .startswith("1 request running (r), t flat at 2500000000 for 2 scrapes (1.5s)")
    )


@given(
    st.integers(1, 4),
    st.lists(st.tuples(st.sampled_from([0.0, 1.0, 3.0]), st.integers(0, 2)), max_size=30),
)
def test_stall_iff_the_last_n_plus_one_scrapes_are_busy_and_equal(
    after: int, scrapes: list[tuple[float, int]]
) -> None:
    det = StallDetector(after)
    for i, (running, tokens) in enumerate(scrapes):
        got = det.observe(i, running, tokens)
        tail = scrapes[max(0, i - after) : i + 1]
        expected = (
            len(tail) == after + 1
            and all(r > 0 for r, _ in tail)
            and len({t for _, t in tail}) == 1
        )
        assert (got is not None) == expected, (after, scrapes[: i + 1])


# --- parsing and selection ---------------------------------------------------------------------

PAGE = """\
# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 2.0
vllm:num_requests_running{model_name="b"} 1.0
# TYPE nv_inference_count counter
nv_inference_count{model="a",version="1"} 42
# TYPE lat summary
lat{quantile="0.5"} 0.1
lat_sum 7.5
lat_count 50
# TYPE g gauge
g NaN
g_count 3
"""


def test_counters_without_total_arrive_renamed_and_are_kept_as_configured() -> None:
    values = select(parse_exposition(PAGE), ["nv_inference_count"])
    assert [(v.name, v.labels, v.value) for v in values] == [
        ("nv_inference_count", (("model", "a"), ("version", "1")), 42.0)
    ]


def test_summaries_keep_sum_and_count_and_nan_is_dropped() -> None:
    values = select(parse_exposition(PAGE), ["lat", "g"])
    assert [(v.name, v.value) for v in values] == [("lat_sum", 7.5), ("lat_count", 50.0)]
    assert total(values, "lat") == 7.5  # a summary named by its base counts by its _sum


def test_label_filter_and_totals() -> None:
    fams = parse_exposition(PAGE)
    assert total(select(fams, ["vllm:num_requests_running"]), "vllm:num_requests_running") == 3.0
    only_b = select(fams, ["vllm:num_requests_running"], {"model_name": "b"})
    assert total(only_b, "vllm:num_requests_running") == 1.0
    assert total(select(fams, ["x"], {"model_name": "c"}), "x") is None


def test_openmetrics_extras_are_read() -> None:
    text = (
        "# TYPE vllm:generation_tokens counter\n# UNIT vllm:generation_tokens tokens\n"
        'vllm:generation_tokens_total{model_name="m"} 5.0 # {trace_id="abc"} 1.0\n'
        'vllm:generation_tokens_created{model_name="m"} 1.7e9\n# EOF\n'
    )
    values = select(parse_exposition(text), ["vllm:generation_tokens"])
    assert [(v.name, v.value) for v in values] == [("vllm:generation_tokens", 5.0)]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("<html><body>502</body></html>\n", 1, "<html>"),
        ('ok_metric 1\n# TYPE x gauge\nx{a="b" 3\n', 3, 'x{a="b" 3'),
        ('{"error": "not found"}', 1, "error"),
        ("a 1\nsome words here\n", 2, "some words"),
    ],
)
def test_parse_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ExpositionError) as info:
        parse_exposition(text)
    assert info.value.line == line
    assert f"line {line}" in str(info.value) and fragment in str(info.value)


def test_series_names_are_dotted_and_colon_free() -> None:
    assert series_name("vllm:num_requests_running") == "model.metric.vllm_num_requests_running"


# --- the probe against the fake --------------------------------------------------------------


@dataclass
class Fake:
    url: str
    state: FakeState

    @property
    def b(self) -> Behaviour:
        return self.state.behaviour


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    app = build_app()
    async with serving(app) as url:
        yield Fake(url + "/metrics", app[STATE])


def make(url: str, timeout_s: float = 5.0, **options: Any) -> MetricsScrapeProbe:
    cls = probe_for("metrics")
    cls.check_options(options)
    probe = cls(ProbeTarget("llm", url, timeout_s, options))
    assert isinstance(probe, MetricsScrapeProbe)
    return probe


def by_name(samples: list[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.name, []).append(s)
    return out


EXPECTED_SERIES = {
    "vllm": {
        "model.metric.vllm_num_requests_running": {"model": "llm", "model_name": "fake-model"},
        "model.metric.vllm_kv_cache_usage_perc": {"model": "llm", "model_name": "fake-model"},
        "model.metric.vllm_time_to_first_token_seconds_sum": {
            "model": "llm",
            "model_name": "fake-model",
        },
    },
    "llamacpp": {
        "model.metric.llamacpp_requests_processing": {"model": "llm"},
        "model.metric.llamacpp_kv_cache_usage_ratio": {"model": "llm"},
        "model.metric.llamacpp_tokens_predicted_total": {"model": "llm"},
    },
    "tgi": {
        "model.metric.tgi_batch_current_size": {"model": "llm"},
        "model.metric.tgi_request_generated_tokens_count": {"model": "llm"},
        "model.metric.tgi_request_count": {"model": "llm"},
    },
    "triton": {
        # Triton's own `model` label must not replace Vigil's.
        "model.metric.nv_inference_pending_request_count": {
            "model": "llm",
            "exported_model": "fake-model",
            "version": "1",
        },
        "model.metric.nv_gpu_utilization": {"model": "llm", "gpu_uuid": GPU_UUID},
    },
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
async def test_each_preset_reads_its_server(preset: str, fake: Fake, session: HttpClient) -> None:
    fake.b.format, fake.b.running, fake.b.advance = preset, 2, 10
    probe = make(fake.url, preset=preset)
    run = await probe.run(session)
    assert (run.ok, run.category, run.status, run.error) == (True, "ok", 200, None), run
    assert run.e2e_ms is not None and set(run.phases_ms) == {"scrape", "parse"}
    series = by_name(probe.drain_samples())
    for name, labels in EXPECTED_SERIES[preset].items():
        assert name in series, sorted(series)
        got = dict(series[name][0].labels)
        assert set(got) == set(labels) and got["model"] == "llm"
        assert got == labels
        assert series[name][0].ts_ms == run.ts_ms
    running, tokens = PRESETS[preset].running, PRESETS[preset].tokens
    assert sum(s.value for s in series[series_name(running)]) == 2
    assert sum(s.value for s in series[series_name(tokens)]) == 1010  # raw, not a rate
    assert probe.info["missing"] == [] and probe.info["preset"] == preset
    assert probe.drain_samples() == []


async def test_stall_through_the_probe_then_progress_then_reset(
    fake: Fake, session: HttpClient
) -> None:
    fake.b.running, fake.b.tokens, fake.b.advance = 3, 1234, 0
    probe = make(fake.url, preset="vllm", stall_after=3)
    runs = [await probe.run(session) for _ in range(4)]
    assert [r.category for r in runs] == ["ok", "ok", "ok", "stalled"]
    stalled = runs[-1]
    assert not stalled.ok and stalled.status == 200
    assert stalled.error is not None and stalled.error.startswith(
        "3 requests running (vllm:num_requests_running), "
        "vllm:generation_tokens_total flat at 1234 for 3 scrapes ("
    )
    assert "stalled" in CATEGORIES and severity_of(stalled) == "hard"
    # the series are kept on a stalled run too: they are the evidence
    assert series_name("vllm:generation_tokens_total") in by_name(probe.drain_samples())

    fake.b.advance = 5
    assert (await probe.run(session)).category == "ok"
    fake.b.advance = 0
    assert [(await probe.run(session)).category for _ in range(2)] == ["ok", "ok"]
    fake.b.tokens = 0  # the server restarted: its counter starts over
    assert [(await probe.run(session)).category for _ in range(3)] == ["ok"] * 3
    fake.b.running = 0  # idle: a flat counter is expected
    assert [(await probe.run(session)).category for _ in range(5)] == ["ok"] * 5


async def test_explicit_metrics_without_preset_keep_series_but_never_stall(
    fake: Fake, session: HttpClient
) -> None:
    fake.b.running = 5
    probe = make(fake.url, metrics=["vllm:num_requests_waiting", "vllm:generation_tokens"])
    for _ in range(3):
        assert (await probe.run(session)).ok
    series = by_name(probe.drain_samples())
    assert set(series) == {
        "model.metric.vllm_num_requests_waiting",
        "model.metric.vllm_generation_tokens",  # the configured spelling, without _total
    }
    assert len(series["model.metric.vllm_num_requests_waiting"]) == 3


async def test_custom_stall_metrics_and_label_filter(fake: Fake, session: HttpClient) -> None:
    fake.b.format, fake.b.running = "tgi", 1
    probe = make(
        fake.url,
        running="tgi_queue_size",
        tokens="tgi_request_generated_tokens",  # a histogram: counted by its _sum
        stall_after=1,
    )
    assert (await probe.run(session)).ok  # the queue is empty
    fake.b.waiting = 4
    assert (await probe.run(session)).ok  # baseline
    run = await probe.run(session)
    assert run.category == "stalled" and "tgi_request_generated_tokens flat at 900" in (
        run.error or ""
    )

    fake.b.format = "vllm"
    elsewhere = make(fake.url, preset="vllm", labels={"model_name": "another-model"})
    assert (await elsewhere.run(session)).ok
    assert elsewhere.drain_samples() == []
    assert elsewhere.info["missing"] == [
        "vllm:num_requests_running",
        "vllm:generation_tokens_total",
    ]


async def test_odd_labels_and_the_series_cap(fake: Fake, session: HttpClient) -> None:
    fake.b.extra = 'odd{name="n",value="v",model="theirs"} 4\n' + "".join(
        f'many{{i="{i}"}} {i}\n' for i in range(1005)
    )
    probe = make(fake.url, metrics=["odd", "many"])
    assert (await probe.run(session)).ok
    series = by_name(probe.drain_samples())
    [odd] = series["model.metric.odd"]
    assert dict(odd.labels) == {
        "model": "llm",
        "exported_model": "theirs",
        "name": "n",
        "value": "v",
    }
    assert len(series["model.metric.many"]) == 999  # 1,000 kept in all
    assert probe.info["dropped_series"] == 6


async def test_slow_scrape(fake: Fake, session: HttpClient) -> None:
    fake.b.delay_ms = 30
    run = await make(fake.url, preset="vllm", max_latency="1ms").run(session)
    assert run.category == "slow" and "over max_latency" in (run.error or "")


async def test_garbage_is_a_protocol_error_naming_the_line(fake: Fake, session: HttpClient) -> None:
    fake.b.garbage = True
    probe = make(fake.url, preset="llamacpp")
    run = await probe.run(session)
    assert (run.category, run.status) == ("protocol_error", 200)
    assert "line 1" in (run.error or "") and "<html>" in (run.error or "")
    assert probe.drain_samples() == []


async def test_server_error_is_http_error(fake: Fake, session: HttpClient) -> None:
    fake.b.status = 500
    run = await make(fake.url, preset="vllm").run(session)
    assert (run.category, run.status) == ("http_error", 500)
    assert "HTTP 500" in (run.error or "") and "engine dead" in (run.error or "")


async def test_refused(closed_port: int, session: HttpClient) -> None:
    run = await make(f"http://127.0.0.1:{closed_port}/metrics", preset="vllm").run(session)
    assert run.category == "refused" and run.e2e_ms is None


async def test_timeout_is_bounded(fake: Fake, session: HttpClient) -> None:
    fake.b.delay_ms = 10_000
    t0 = time.monotonic()
    run = await make(fake.url, timeout_s=0.3, preset="vllm").run(session)
    assert run.category == "timeout" and run.e2e_ms is not None
    assert time.monotonic() - t0 < 0.9


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"preset": "sglang"}, "preset"),
        ({"preset": "vllm", "metrics": "vllm:x"}, "metrics"),
        ({"metrics": ["ok_name", "bad name"]}, "metrics"),
        ({"metrics": []}, "metrics"),
        ({}, "metrics"),
        ({"running": "r"}, "tokens"),
        ({"tokens": "t", "metrics": ["x"]}, "running"),
        ({"preset": "vllm", "running": 3}, "running"),
        ({"preset": "tgi", "tokens": "has-dash"}, "tokens"),
        ({"preset": "vllm", "stall_after": 0}, "stall_after"),
        ({"preset": "vllm", "stall_after": True}, "stall_after"),
        ({"preset": "vllm", "stall_after": "3"}, "stall_after"),
        ({"preset": "vllm", "labels": {"model_name": 1}}, "labels"),
        ({"preset": "vllm", "labels": ["model_name"]}, "labels"),
        ({"preset": "vllm", "labels": {"bad-label": "x"}}, "labels"),
        ({"preset": "vllm", "max_latency": 5}, "max_latency"),
        ({"preset": "vllm", "stall_afer": 3}, "stall_afer"),
    ],
)
def test_option_errors_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(OptionError) as info:
        MetricsScrapeProbe.check_options(options)
    assert info.value.field == key, info.value


def test_valid_options_pass() -> None:
    for options in (
        {"preset": "triton"},
        {"preset": "vllm", "running": "a", "tokens": "b", "stall_after": 1},
        {"metrics": ["a:b", "c_total"], "labels": {"model_name": "m"}, "max_latency": "1s"},
        {"running": "r", "tokens": "t"},
    ):
        MetricsScrapeProbe.check_options(options)


def test_config_refuses_a_bad_option_naming_field_and_line() -> None:
    text = """
[[model]]
name = "llm"
protocol = "metrics"
url = "http://127.0.0.1:8000/metrics"

[model.canary]
preset = "vllm"
stall_after = 0
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.field == "model[0].canary.stall_after" and info.value.line == 9
    ok = parse_config(text.replace("stall_after = 0", "stall_after = 2"))
    assert ok.models[0].protocol == "metrics"


# --- model state: stalled is a hard failure ----------------------------------------------------


def test_stalled_runs_take_the_model_down_with_an_incident(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "v.db")
    writer.start()
    events: list[Event] = []
    try:
        book = IncidentBook(writer, events.append)
        mon = ModelMonitor(
            ModelConfig(
                name="llm", protocol="metrics", url="http://x/metrics", canary={"preset": "vllm"}
            )
        )
        error = "3 requests running (r), t flat at 1234 for 3 scrapes (15s)"
        for ts, category in [(1000, "ok"), (2000, "stalled"), (3000, "stalled")]:
            run = ProbeRun(
                model="llm",
                ts_ms=ts,
                ok=category == "ok",
                category=category,
                error=None if category == "ok" else error,
            )
            mon.record(run, events.append, book)
        assert mon.state == "down"
        [incident] = book.open_incidents()
        assert incident.kind == "model_down" and incident.cause == f"stalled: {error}"
    finally:
        writer.close()
