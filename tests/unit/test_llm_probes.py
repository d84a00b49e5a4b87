"""The openai, ollama and tgi probes against the fake LLM server on loopback.

Timing assertions are lower bounds only (a measured TTFT cannot be shorter than the delay the
server slept before the first token); accuracy targets live in bench/probe_accuracy.py. The
one upper bound is the deadline itself: a stalled or trickling server must not hold a run
much past ``timeout_s``, checked with a generous 3x.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from probes.base import OptionError, Probe, ProbeTarget
from probes.httpclient import HttpClient
from probes.registry import probe_for
from storage.records import ProbeRun
from tests.fakes.llm_server import STATE, Behaviour, FakeState, build_app, serving

PROTOCOLS = ["openai", "ollama", "tgi"]
KEY = "sk-test-0123456789abcdef"

TTFT_MS = 30.0
ITL_MS = 10.0
# Loopback delivery jitter can make the first token's trip a little slower than the last's;
# spread over the gaps it shifts the mean ITL by far less than this.
ITL_SLACK_MS = 0.5


@dataclass
class Fake:
    url: str
    state: FakeState

    @property
    def b(self) -> Behaviour:
        return self.state.behaviour


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    app = build_app(Behaviour(tokens=8))
    async with serving(app) as url:
        yield Fake(url, app[STATE])


def make(
    protocol: str, url: str, timeout_s: float = 5.0, api_key: str | None = None, **options: Any
) -> Probe:
    cls = probe_for(protocol)
    cls.check_options(options)
    return cls(ProbeTarget("fake-llm", url, timeout_s, options, api_key=api_key))


def assert_failed(run: ProbeRun, category: str, *fragments: str) -> None:
    assert (run.ok, run.category) == (False, category), run
    for fragment in fragments:
        assert fragment in (run.error or ""), run.error


# --- ok runs and their measurements ---------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_ok_run_measures_ttft_itl_tokens(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.ttft_ms, fake.b.itl_ms = TTFT_MS, ITL_MS
    run = await make(protocol, fake.url, expect_contains="quick brown").run(session)
    assert (run.ok, run.category, run.status, run.error) == (True, "ok", 200, None), run
    assert run.output_tokens == 8
    assert run.ttft_ms is not None and run.ttft_ms >= TTFT_MS
    assert run.itl_ms is not None and run.itl_ms >= ITL_MS - ITL_SLACK_MS
    assert run.e2e_ms is not None and run.e2e_ms >= TTFT_MS + 7 * ITL_MS
    assert run.tokens_per_s == pytest.approx(8 / (run.e2e_ms / 1000))
    phases = run.phases_ms
    assert phases["ttft_ms"] == run.ttft_ms
    assert phases["itl_p95_ms"] >= run.itl_ms - ITL_SLACK_MS
    assert phases["itl_mean_formula_ms"] == pytest.approx((run.e2e_ms - run.ttft_ms) / 7)
    assert phases["decode_tokens_per_s"] == pytest.approx(7 / ((run.e2e_ms - run.ttft_ms) / 1000))
    side = {"openai": "models_ms", "ollama": "tags_ms", "tgi": "health_ms"}[protocol]
    assert phases[side] > 0


async def test_role_only_and_empty_first_chunks_do_not_count_as_first_token(
    fake: Fake, session: HttpClient
) -> None:
    # The role-only and empty chunks go out at once; content only after TTFT_MS.
    fake.b.ttft_ms, fake.b.role_first = TTFT_MS, True
    run = await make("openai", fake.url, check_models=False).run(session)
    assert run.ok and run.ttft_ms is not None and run.ttft_ms >= TTFT_MS
    assert run.output_tokens == 8


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_server_token_count_wins_over_counting(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.usage_tokens = 40  # as if each chunk carried five tokens
    run = await make(protocol, fake.url).run(session)
    assert run.ok and run.output_tokens == 40


async def test_openai_asks_for_usage_and_counts_chunks_without_it(
    fake: Fake, session: HttpClient
) -> None:
    fake.b.usage, fake.b.usage_tokens = False, 40
    run = await make("openai", fake.url, max_tokens=5).run(session)
    assert run.ok and run.output_tokens == 5
    body = fake.state.served[-1].body
    assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 5


async def test_openai_completions_endpoint_and_messages(fake: Fake, session: HttpClient) -> None:
    run = await make("openai", fake.url, endpoint="completions", prompt="Hi").run(session)
    assert run.ok and run.output_tokens == 8
    assert fake.state.served[-1].path == "/v1/completions"
    assert fake.state.served[-1].body["prompt"] == "Hi"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    run = await make("openai", fake.url + "/v1/", messages=messages).run(session)
    assert run.ok
    assert fake.state.served[-1].body["messages"] == messages


async def test_openai_non_streaming(fake: Fake, session: HttpClient) -> None:
    fake.b.ttft_ms, fake.b.itl_ms = TTFT_MS, ITL_MS
    run = await make(
        "openai",
        fake.url,
        stream=False,
        expect_exact="The quick brown fox jumps over the lazy",
    ).run(session)
    assert run.ok, run
    assert run.ttft_ms is None and run.itl_ms is None
    assert run.output_tokens == 8
    assert run.e2e_ms is not None and run.e2e_ms >= TTFT_MS + 7 * ITL_MS
    assert "stream_options" not in fake.state.served[-1].body


async def test_ollama_keeps_its_own_counters(fake: Fake, session: HttpClient) -> None:
    fake.b.ttft_ms, fake.b.itl_ms = TTFT_MS, ITL_MS
    probe = make("ollama", fake.url, max_tokens=6, temperature=0.5)
    run = await probe.run(session)
    assert run.ok and run.output_tokens == 6
    assert run.phases_ms["server_prompt_eval_ms"] == pytest.approx(TTFT_MS)
    assert run.phases_ms["server_eval_ms"] == pytest.approx(6 * ITL_MS)
    assert run.phases_ms["server_load_ms"] == pytest.approx(1.0)
    assert "server_total_ms" in run.phases_ms
    samples = probe.drain_samples()
    assert [(s.name, dict(s.labels), s.value) for s in samples] == [
        ("probe.server_eval_tokens_per_s", {"model": "fake-llm"}, pytest.approx(6 / 0.06))
    ]
    assert fake.state.served[-1].body["options"] == {"num_predict": 6, "temperature": 0.5}
    assert probe.info["quantization_level"] == "Q4_0"


async def test_tgi_sends_temperature_only_when_positive(fake: Fake, session: HttpClient) -> None:
    assert (await make("tgi", fake.url).run(session)).ok  # the fake refuses temperature 0
    assert "temperature" not in fake.state.served[-1].body["parameters"]
    assert (await make("tgi", fake.url, temperature=0.7).run(session)).ok
    assert fake.state.served[-1].body["parameters"]["temperature"] == 0.7


# --- wrong output and missing models --------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_wrong_output(protocol: str, fake: Fake, session: HttpClient) -> None:
    fake.b.reply = "Something else entirely."
    run = await make(protocol, fake.url, expect_regex=r"quick\s+brown").run(session)
    assert_failed(run, "wrong_output", "does not match", "Something else")
    assert run.output_tokens == 8 and run.ttft_ms is not None  # measured all the same


async def test_openai_model_not_served(fake: Fake, session: HttpClient) -> None:
    fake.b.models = ["llama-3-8b", "mistral-7b"]
    run = await make("openai", fake.url).run(session)
    assert_failed(run, "wrong_output", "'fake-llm' not served; served: llama-3-8b, mistral-7b")
    assert len(fake.state.served) == 0  # no canary was sent
    fake.b.models = ["fake-llm"]
    assert (await make("openai", fake.url, model="fake-llm").run(session)).ok


async def test_ollama_tags_resolve_latest_and_report_missing(
    fake: Fake, session: HttpClient
) -> None:
    assert (await make("ollama", fake.url, model="fake-llm:latest").run(session)).ok
    run = await make("ollama", fake.url, model="llama3:8b").run(session)
    assert_failed(run, "wrong_output", "'llama3:8b' not present; local: fake-llm:latest")
    # Without the tag check the server's own 404 speaks.
    run = await make("ollama", fake.url, model="llama3:8b", check_tags=False).run(session)
    assert_failed(run, "http_error", "HTTP 404", "not found")


# --- http errors, refused, secrets ---------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_http_error_quotes_the_body(protocol: str, fake: Fake, session: HttpClient) -> None:
    fake.b.status = 500
    run = await make(protocol, fake.url).run(session)
    assert_failed(run, "http_error", "HTTP 500", "internal error")
    assert run.status == 500


async def test_tgi_unhealthy(fake: Fake, session: HttpClient) -> None:
    fake.b.health_status = 503
    assert_failed(await make("tgi", fake.url).run(session), "http_error", "GET /health: HTTP 503")
    assert (await make("tgi", fake.url, check_health=False).run(session)).ok


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_refused(protocol: str, closed_port: int, session: HttpClient) -> None:
    run = await make(protocol, f"http://127.0.0.1:{closed_port}").run(session)
    assert_failed(run, "refused", "cannot connect")
    # What the OS said about which address (aiohttp added "ssl:default [...]" even for http).
    assert (run.error or "").endswith(
        f"cannot connect to 127.0.0.1:{closed_port}: connection refused"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_api_key_is_sent_as_bearer_and_never_kept(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    run = await make(protocol, fake.url, api_key=KEY).run(session)
    assert run.ok
    assert {s.headers.get("Authorization") for s in fake.state.served} == {f"Bearer {KEY}"}
    fake.b.echo_key_status = 401  # the server quotes the key back, as OpenAI's 401 does
    run = await make(protocol, fake.url, api_key=KEY).run(session)
    assert_failed(run, "http_error", "HTTP 401", "Bearer ***")
    assert KEY not in repr(run) and KEY not in str(run.to_json())


# --- stream faults -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_unit_is_protocol_error(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.malformed_after = 3
    run = await make(protocol, fake.url).run(session)
    assert_failed(run, "protocol_error", "malformed", "after 3 content chunks")
    assert run.phases_ms["ttft_ms"] >= 0 and run.ttft_ms is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_disconnect_mid_stream_is_protocol_error(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.disconnect_after = 2
    run = await make(protocol, fake.url).run(session)
    assert_failed(run, "protocol_error", "after 2 content chunks")


@pytest.mark.parametrize(
    ("protocol", "end"),
    [("openai", "[DONE]"), ("ollama", '"done": true'), ("tgi", "generated_text")],
)
async def test_missing_end_marker_is_protocol_error(
    protocol: str, end: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.done = False
    run = await make(protocol, fake.url).run(session)
    assert_failed(run, "protocol_error", "stream ended before", end)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_error_object_in_stream(protocol: str, fake: Fake, session: HttpClient) -> None:
    fake.b.error_after = 1
    run = await make(protocol, fake.url).run(session)
    assert_failed(run, "http_error", "server error in stream:")
    assert any(word in (run.error or "") for word in ("CUDA", "error was encountered"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_no_content_is_protocol_error(protocol: str, fake: Fake, session: HttpClient) -> None:
    fake.b.tokens = 0
    run = await make(protocol, fake.url).run(session)
    assert_failed(run, "protocol_error", "no content")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stall_is_a_timeout_at_the_deadline(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.stall_after = 3
    started = time.monotonic()
    run = await make(protocol, fake.url, timeout_s=0.5).run(session)
    took = time.monotonic() - started
    assert_failed(run, "timeout", "not finished within 0.5s", "after 3 content chunks")
    assert run.e2e_ms is not None and run.e2e_ms >= 400
    assert took < 3 * 0.5


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_slowloris_ends_by_the_deadline(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.slowloris_ms = 5.0  # bytes keep coming, so no single read ever times out
    started = time.monotonic()
    run = await make(protocol, fake.url, timeout_s=0.5).run(session)
    took = time.monotonic() - started
    assert_failed(run, "timeout", "not finished within 0.5s")
    assert took < 3 * 0.5


async def test_slow_answer_before_headers_is_a_timeout(fake: Fake, session: HttpClient) -> None:
    fake.b.ttft_ms = 5000.0
    fake.b.role_first = False
    run = await make("ollama", fake.url, timeout_s=0.3).run(session)
    assert_failed(run, "timeout")


# --- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_ttft": "10ms"}, "over max_ttft (10 ms)"),
        ({"max_latency": "50ms"}, "over max_latency (50 ms)"),
        ({"max_itl": "2ms"}, "over max_itl (2 ms)"),
        ({"min_tokens_per_s": 10_000}, "under min_tokens_per_s (10000)"),
    ],
)
async def test_bounds_make_a_run_slow(
    protocol: str,
    options: dict[str, Any],
    named: str,
    fake: Fake,
    session: HttpClient,
) -> None:
    fake.b.ttft_ms, fake.b.itl_ms = TTFT_MS, ITL_MS
    run = await make(protocol, fake.url, **options).run(session)
    assert_failed(run, "slow", named)
    assert run.ttft_ms is not None and run.output_tokens == 8  # measured in full


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "options", "key"),
    [
        ("openai", {"max_tokens": 0}, "max_tokens"),
        ("openai", {"max_tokens": True}, "max_tokens"),
        ("openai", {"temperature": "hot"}, "temperature"),
        ("openai", {"endpoint": "embeddings"}, "endpoint"),
        ("openai", {"stream": "yes"}, "stream"),
        ("openai", {"check_models": 1}, "check_models"),
        ("openai", {"messages": [{"role": "user"}]}, "messages"),
        ("openai", {"messages": [{"role": "user", "content": "x"}], "prompt": "y"}, "messages"),
        (
            "openai",
            {"endpoint": "completions", "messages": [{"role": "u", "content": "x"}]},
            "messages",
        ),
        ("openai", {"stream": False, "max_ttft": "1s"}, "max_ttft"),
        ("openai", {"max_ttft": 100}, "max_ttft"),
        ("openai", {"max_itl": "fast"}, "max_itl"),
        ("openai", {"min_tokens_per_s": 0}, "min_tokens_per_s"),
        ("openai", {"expect_regex": "("}, "expect_regex"),
        ("openai", {"check_tags": True}, "check_tags"),
        ("ollama", {"model": ""}, "model"),
        ("ollama", {"check_tags": "no"}, "check_tags"),
        ("ollama", {"endpoint": "chat"}, "endpoint"),
        ("tgi", {"prompt": 3}, "prompt"),
        ("tgi", {"check_health": None}, "check_health"),
        ("tgi", {"check_models": False}, "check_models"),
    ],
)
def test_option_errors_name_the_key(protocol: str, options: dict[str, Any], key: str) -> None:
    with pytest.raises(OptionError) as info:
        probe_for(protocol).check_options(options)
    assert info.value.field == key
    assert "expected" in str(info.value) or "needs" in str(info.value)


def test_protocols_are_registered() -> None:
    assert {p: probe_for(p).protocol for p in PROTOCOLS} == {p: p for p in PROTOCOLS}


@pytest.mark.parametrize(
    ("protocol", "kind"),
    [("openai", "served_root"), ("ollama", "ollama_digest"), ("tgi", "tgi_model_sha")],
)
async def test_generation_probes_report_what_is_deployed(
    fake: Fake, session: HttpClient, protocol: str, kind: str
) -> None:
    # What a deployment changes (vLLM's root, Ollama's digest, TGI's model_sha) is the
    # artifact the agent records; another revision on the server is another artifact.
    probe = make(protocol, fake.url, max_tokens=2)
    assert (await probe.run(session)).ok
    first = probe.info["artifact"]
    assert probe.info["artifact_kind"] == kind
    assert isinstance(first, str) and first
    assert (await probe.run(session)).ok
    assert probe.info["artifact"] == first
    fake.b.revision = "rev-2"
    assert (await probe.run(session)).ok
    assert probe.info["artifact"] not in (first, None)
    if protocol == "ollama":
        # modified_at "2026-11-01T09:00:00.123456789+01:00": nanoseconds and an offset.
        assert probe.info["artifact_time_ms"] == 1_793_520_000_123  # 08:00:00.123 UTC
    else:
        assert "artifact_time_ms" not in probe.info


async def test_tgi_without_info_still_passes(fake: Fake, session: HttpClient) -> None:
    fake.b.info_status = 404  # TGI before 0.9 has no /info
    probe = make("tgi", fake.url, max_tokens=2)
    run = await probe.run(session)
    assert run.ok, run
    assert "artifact" not in probe.info


async def test_last_output_is_the_answer_of_an_answered_run(
    fake: Fake, session: HttpClient
) -> None:
    probe = make("openai", fake.url, max_tokens=4)
    assert (await probe.run(session)).ok
    assert probe.last_output == "The quick brown fox "
    fake.b.status = 500
    assert not (await probe.run(session)).ok
    assert probe.last_output is None


async def test_ollama_zero_modified_at_is_no_time(fake: Fake, session: HttpClient) -> None:
    fake.b.modified_at = "0001-01-01T00:00:00Z"  # Go's zero time: unknown
    probe = make("ollama", fake.url, max_tokens=2)
    assert (await probe.run(session)).ok
    assert probe.info["artifact"] and "artifact_time_ms" not in probe.info


@pytest.mark.parametrize("protocol", ["openai", "ollama", "tgi"])
async def test_the_servers_token_count_is_kept_beside_the_chunks_seen(
    fake: Fake, session: HttpClient, protocol: str
) -> None:
    fake.b.usage_tokens = 9  # the server claims 9 tokens; it streams 6 chunks
    run = await make(protocol, fake.url, max_tokens=6).run(session)
    assert run.ok, run
    assert run.output_tokens == 9
    assert run.phases_ms["counted_chunks"] == 6
