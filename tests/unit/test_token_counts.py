"""Token counts that agree with the server's own (issue 13, part 4).

A llama.cpp server streamed 17 tokens, one chunk each, 7 of them with empty text (tokens that
decode to nothing printable); counting only the chunks with text gave 10, so tokens/s read
~40 % low and ITL high. These tests replay that stream, and its variants, from the fake LLM
server on loopback and hold the probe's numbers against what the server knows it sent: the
injected token count, and its own timestamps of the stream (``Served.start_ns``, ``end_ns``,
``write_ns``), taken with the same ``perf_counter_ns`` clock as the probe's.

Timing checks hold by causality whatever the load: the probe's TTFT cannot be shorter than the
server's delay before it wrote the first text, its e2e no shorter than the server's handler
start to the last token's write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from probes.base import Probe, ProbeTarget
from probes.common import Bounds
from probes.httpclient import HttpClient
from probes.openai import _carried_token
from probes.registry import probe_for
from probes.streaming import GenerationRun, StreamTimer
from storage.records import ProbeRun
from tests.fakes.llm_server import STATE, Behaviour, FakeState, Served, build_app, serving

PROTOCOLS = ["openai", "ollama", "tgi"]
TTFT_MS = 40.0
ITL_MS = 10.0
TOKENS = 17
EMPTY = [2, 4, 6, 8, 10, 12, 14]
"""The llama.cpp canary: 17 tokens, 7 of which decode to nothing printable."""
TPS_TOLERANCE = 0.05


@dataclass
class Fake:
    url: str
    state: FakeState

    @property
    def b(self) -> Behaviour:
        return self.state.behaviour

    @property
    def last(self) -> Served:
        return self.state.served[-1]


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    app = build_app(Behaviour(tokens=TOKENS, ttft_ms=TTFT_MS, itl_ms=ITL_MS))
    async with serving(app) as url:
        yield Fake(url, app[STATE])


def make(protocol: str, url: str, **options: Any) -> Probe:
    cls = probe_for(protocol)
    options.setdefault("max_tokens", TOKENS)
    cls.check_options(options)
    return cls(ProbeTarget("fake-llm", url, 10.0, options))


def server_tps_bound(tokens: int, served: Served) -> float:
    """Tokens over the shortest e2e the probe can have measured: from the handler's start (the
    request was sent before) to the server starting to write the last token (the end marker
    arrives after it)."""
    return tokens / ((served.write_ns[-1] - served.start_ns) / 1e9)


def first_text_ms(served: Served, first_text: int) -> float:
    """How long after the handler started the server began writing the first text."""
    return (served.write_ns[first_text] - served.start_ns) / 1e6


def assert_agrees(run: ProbeRun, tokens: int, served: Served, first_text: int = 0) -> None:
    """The run's count is the server's, its tokens/s within 5 % of the server's count over the
    run's e2e (and no more than the server's own timing allows), and its TTFT no earlier than
    the server's first non-empty text."""
    assert run.ok, run
    assert run.output_tokens == tokens
    assert run.tokens_per_s is not None and run.e2e_ms is not None
    want = tokens / (run.e2e_ms / 1000)
    assert abs(run.tokens_per_s / want - 1) <= TPS_TOLERANCE, (run.tokens_per_s, want)
    # Causality, not a tolerance: the probe's clock started before the handler's and stopped
    # after the last token's write began, so counting a preamble chunk as a token shows here
    # whatever the load.
    assert run.tokens_per_s <= server_tps_bound(tokens, served)
    assert run.ttft_ms is not None and run.ttft_ms >= first_text_ms(served, first_text)
    # ITL spreads the span of token arrivals over the count: never more than GenAI-Perf's
    # (e2e - TTFT) / (tokens - 1), whose span runs on to the end marker. Counting only the
    # chunks with text breaks this (17 tokens counted as 10: ITL ~1.8 times too long).
    assert run.itl_ms is not None
    assert run.itl_ms <= run.phases_ms["itl_mean_formula_ms"] * (1 + 1e-9)


# --- the three servers the issue names -------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_server_that_sends_usage(protocol: str, fake: Fake, session: HttpClient) -> None:
    # The llama.cpp stream, with the server's count (usage, eval_count, generated_tokens).
    fake.b.empty_tokens = EMPTY
    run = await make(protocol, fake.url).run(session)
    assert_agrees(run, TOKENS, fake.last)
    assert run.phases_ms["counted_chunks"] == TOKENS  # the chunks agree with the count
    if protocol == "openai":
        assert fake.last.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_server_count_is_used_even_where_chunks_disagree(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    # A server that reports more tokens than it sent chunks (it batches): its count wins, and
    # tokens/s follows it, not the chunks.
    fake.b.usage_tokens = 34
    run = await make(protocol, fake.url).run(session)
    assert_agrees(run, 34, fake.last)
    assert run.phases_ms["counted_chunks"] == TOKENS


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_one_chunk_per_token_with_empty_tokens_and_no_usage(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.empty_tokens, fake.b.usage = EMPTY, False
    probe = make(protocol, fake.url)
    run = await probe.run(session)
    assert_agrees(run, TOKENS, fake.last)
    assert run.phases_ms["counted_chunks"] == TOKENS
    # Ten tokens with text spell the answer; the empty ones add nothing to it.
    assert probe.last_output == "The quick brown fox jumps over the lazy dog. The "


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_preamble_chunks_are_neither_tokens_nor_the_first_token(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    # Role-only / BOS and three more empty chunks go out at once; the first text after TTFT.
    fake.b.role_first, fake.b.empty_preamble, fake.b.usage = True, 3, False
    run = await make(protocol, fake.url).run(session)
    assert_agrees(run, TOKENS, fake.last)
    assert run.ttft_ms is not None and run.ttft_ms >= TTFT_MS


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_preamble_and_empty_tokens_together_without_usage(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    fake.b.empty_preamble, fake.b.empty_tokens, fake.b.usage = 2, EMPTY, False
    run = await make(protocol, fake.url).run(session)
    assert_agrees(run, TOKENS, fake.last)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_ttft_is_the_first_text_when_the_first_token_is_empty(
    protocol: str, fake: Fake, session: HttpClient
) -> None:
    # The first generated token decodes to nothing; the first text comes one ITL later. The
    # server's count includes that token; TTFT is still the text.
    fake.b.itl_ms = 30.0
    fake.b.empty_tokens = [0]
    run = await make(protocol, fake.url, max_tokens=8).run(session)
    assert run.ok and run.output_tokens == 8
    assert run.ttft_ms is not None and run.ttft_ms >= first_text_ms(fake.last, 1)
    assert run.ttft_ms >= TTFT_MS + 30.0
    # Without the server's count, an empty token before the first text is not counted.
    fake.b.usage = False
    run = await make(protocol, fake.url, max_tokens=8).run(session)
    assert run.ok and run.output_tokens == 7


async def test_openai_completions_endpoint_counts_empty_text_tokens(
    fake: Fake, session: HttpClient
) -> None:
    fake.b.empty_tokens, fake.b.usage, fake.b.empty_preamble = EMPTY, False, 2
    run = await make("openai", fake.url, endpoint="completions").run(session)
    assert fake.last.path == "/v1/completions"
    assert_agrees(run, TOKENS, fake.last)


# --- which OpenAI chunks carry a token ------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "chat", "carried"),
    [
        ({"delta": {"content": "Hi"}, "finish_reason": None}, True, "Hi"),
        ({"delta": {"content": ""}, "finish_reason": None}, True, ""),  # llama.cpp, empty
        ({"delta": {}, "finish_reason": None}, True, ""),
        ({"delta": {"content": None, "tool_calls": []}, "finish_reason": None}, True, ""),
        ({"delta": {"role": "assistant"}, "finish_reason": None}, True, None),
        ({"delta": {"role": "assistant", "content": ""}}, True, None),  # vLLM's first chunk
        ({"delta": {"role": "assistant", "content": None}}, True, None),  # llama.cpp's
        ({"delta": {"role": "assistant", "content": "Hi"}}, True, "Hi"),
        ({"delta": {}, "finish_reason": "length"}, True, None),  # the finish chunk
        ({"delta": {"content": ""}, "finish_reason": "stop"}, True, None),
        ({"delta": {"content": " dog"}, "finish_reason": "length"}, True, " dog"),  # vLLM
        ({"index": 0, "finish_reason": None}, True, None),  # no delta at all
        ({"text": "Hi", "finish_reason": None}, False, "Hi"),
        ({"text": "", "finish_reason": None}, False, ""),
        ({"text": "", "finish_reason": "length"}, False, None),
        ({"finish_reason": None}, False, None),
    ],
)
def test_which_openai_choices_carry_a_token(
    choice: dict[str, Any], chat: bool, carried: str | None
) -> None:
    assert _carried_token(choice, chat) == carried


# --- the definitions, on exact timings ------------------------------------------------------

MS = 1_000_000


def finished(
    arrivals_ms: list[tuple[float, str]],
    end_ms: float,
    reported: int | None = None,
    before: int = 0,
) -> ProbeRun:
    """Judge a run whose timer saw token chunks (arrival ms, text) after ``before`` preamble
    chunks at 1 ms, and the end marker at ``end_ms``."""
    run = GenerationRun(ProbeTarget("m", "http://x", 5.0), Bounds.from_options({}))
    timer = run.start_timer()
    timer.start_ns = 0
    for _ in range(before):
        timer.token("", MS)
    for at, text in arrivals_ms:
        timer.token(text, int(at * MS))
    timer.reported_tokens = reported
    timer.end_ns = int(end_ms * MS)
    return run.finish()


def test_counted_tokens_start_at_the_first_text_and_include_empty_ones() -> None:
    # Preamble at 1 ms, text at 100, then one token every 10 ms, every other one empty.
    arrivals = [(100.0 + 10 * i, "" if i % 2 else "w ") for i in range(9)]
    run = finished(arrivals, end_ms=190.0, before=2)
    assert run.output_tokens == 9 and run.phases_ms["counted_chunks"] == 9
    assert run.ttft_ms == pytest.approx(100.0)
    assert run.itl_ms == pytest.approx(10.0)  # 80 ms over 8 gaps
    assert run.phases_ms["itl_p50_ms"] == pytest.approx(10.0)
    assert run.phases_ms["itl_p95_ms"] == pytest.approx(10.0)
    assert run.phases_ms["itl_mean_formula_ms"] == pytest.approx(90.0 / 8)
    assert run.tokens_per_s == pytest.approx(9 / 0.19)


def test_itl_follows_the_servers_count_and_the_gaps_stay_per_chunk() -> None:
    # Four chunks 20 ms apart, the server says 13 tokens (it sent four at a time).
    arrivals = [(50.0 + 20 * i, "abcd") for i in range(4)]
    run = finished(arrivals, end_ms=115.0, reported=13)
    assert run.output_tokens == 13 and run.phases_ms["counted_chunks"] == 4
    assert run.itl_ms == pytest.approx(60.0 / 12)
    assert run.phases_ms["itl_p50_ms"] == pytest.approx(20.0)
    assert run.tokens_per_s == pytest.approx(13 / 0.115)


def test_empty_chunks_before_the_first_text_are_not_timed() -> None:
    timer = StreamTimer(start_ns=0)
    timer.token("", 5)
    timer.token(None, 6)
    timer.content("", 7)  # an end marker's empty text: no token
    assert (timer.content_ns, timer.token_ns) == ([], [])
    timer.token("a", 10)
    timer.token("", 20)
    timer.content("", 25)
    timer.token(None, 30)
    timer.content("b", 40)
    assert timer.content_ns == [10, 40]
    assert timer.token_ns == [10, 20, 30, 40]
    assert timer.text == "ab"


def test_one_token_chunk_has_no_itl() -> None:
    run = finished([(30.0, "all of it")], end_ms=31.0, reported=5)
    assert run.output_tokens == 5 and run.itl_ms is None
    assert "itl_p95_ms" not in run.phases_ms
