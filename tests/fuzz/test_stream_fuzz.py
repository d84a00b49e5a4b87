"""The streamed answers of the OpenAI, Ollama and TGI probes: a valid answer (model list, then a
stream of chunks) with one field of one chunk mutated, or its framing varied, served from
loopback and cut into chunks anywhere; and the SSE and NDJSON parsers on such streams alone.

A probe's documented outcome for any answer is a :class:`storage.records.ProbeRun` (a bad
answer is a recorded failure: ``protocol_error``, ``http_error``, ``wrong_output``...), never
an exception, within its timeout, and one the writer can store. The parsers' documented
error is :class:`probes.streamparse.StreamFormatError`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.base import ProbeTarget
from probes.ollama import OllamaProbe
from probes.openai import OpenAIProbe
from probes.streamparse import NDJSONParser, SSEParser, StreamFormatError
from probes.tgi import TgiProbe
from tests.fuzz.canned import Canned, CannedServer
from tests.fuzz.mutate import json_bytes, mutate
from tests.fuzz.probe_support import (
    NDJSON_FRAMINGS,
    PROBE_TIMEOUT_S,
    SSE_FRAMINGS,
    cuts,
    ndjson,
    run_probe,
    sse,
)
from tests.fuzz.support import budget, deadline, outcome


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    canned = CannedServer()
    yield canned
    canned.close()


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


OPENAI_MODELS = {
    "object": "list",
    "data": [{"id": "m", "object": "model", "owned_by": "vllm", "root": "/models/m"}],
}
OPENAI_CHAT = [
    chat_chunk({"role": "assistant"}),
    chat_chunk({"content": "Hello"}),
    chat_chunk({"content": ""}),
    chat_chunk({"content": " world"}, "stop"),
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}},
    "[DONE]",
]
OPENAI_COMPLETIONS = [
    {"choices": [{"index": 0, "text": "Hello", "finish_reason": None}]},
    {"choices": [{"index": 0, "text": " world", "finish_reason": "length"}]},
    {"choices": [], "usage": {"completion_tokens": 2}},
    "[DONE]",
]
OPENAI_WHOLE = {
    "choices": [{"message": {"role": "assistant", "content": "Hello world"}, "index": 0}],
    "usage": {"completion_tokens": 2},
}
OPENAI_OPTIONS: list[dict[str, Any]] = [
    {"model": "m"},
    {"model": "m", "endpoint": "completions"},
    {"model": "m", "stream": False},
    {"model": "m", "max_ttft": "2s", "max_itl": "1s", "min_tokens_per_s": 0.5},
    {"model": "m", "expect_contains": "Hello", "check_models": False},
]


@budget(ci=150, fuzz=5_000)
@given(data=st.data())
def test_openai_probe_on_a_mutated_answer(server: CannedServer, data: st.DataObject) -> None:
    options = data.draw(st.sampled_from(OPENAI_OPTIONS), label="options")
    if options.get("stream") is False:
        seed: dict[str, Any] = {"models": OPENAI_MODELS, "answer": OPENAI_WHOLE}
    else:
        events = OPENAI_COMPLETIONS if options.get("endpoint") else OPENAI_CHAT
        seed = {"models": OPENAI_MODELS, "events": events}
    label, doc = data.draw(mutate(seed, toml=False), label="mutation")
    framing = data.draw(SSE_FRAMINGS, label="framing")
    if "events" in doc:
        events = doc["events"] if isinstance(doc["events"], list) else [doc["events"]]
        body = sse(events, framing)
        kind = "text/event-stream"
    else:
        body = json_bytes(doc.get("answer"))
        kind = "application/json"
    path = "/v1/completions" if options.get("endpoint") else "/v1/chat/completions"
    server.routes = {
        "/v1/models": Canned(json_bytes(doc.get("models"))),
        path: Canned(body, content_type=kind, cuts=data.draw(cuts(len(body)), label="cuts")),
    }
    probe = OpenAIProbe(ProbeTarget("m", server.url, PROBE_TIMEOUT_S, options))
    run_probe(probe, "openai probe", f"openai {label} {framing} {body[:300]!r}")


OLLAMA_TAGS = {
    "models": [
        {
            "name": "m:latest",
            "digest": "sha256:0123abcd",
            "size": 4_700_000_000,
            "modified_at": "2024-05-01T10:00:00.123456789+02:00",
            "details": {"family": "llama", "parameter_size": "8B", "quantization_level": "Q4_0"},
        }
    ]
}
OLLAMA_LINES = [
    {"model": "m", "created_at": "2024-05-01T10:00:01Z", "response": "Hello", "done": False},
    {"model": "m", "created_at": "2024-05-01T10:00:01Z", "response": "", "done": False},
    {"model": "m", "created_at": "2024-05-01T10:00:01Z", "response": " world", "done": False},
    {
        "model": "m",
        "response": "",
        "done": True,
        "done_reason": "stop",
        "total_duration": 250_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": 5,
        "prompt_eval_duration": 20_000_000,
        "eval_count": 3,
        "eval_duration": 200_000_000,
    },
]


@budget(ci=150, fuzz=5_000)
@given(data=st.data())
def test_ollama_probe_on_a_mutated_answer(server: CannedServer, data: st.DataObject) -> None:
    label, doc = data.draw(mutate({"tags": OLLAMA_TAGS, "lines": OLLAMA_LINES}, toml=False))
    framing = data.draw(NDJSON_FRAMINGS, label="framing")
    lines = doc.get("lines")
    body = ndjson(lines if isinstance(lines, list) else [lines], framing)
    server.routes = {
        "/api/tags": Canned(json_bytes(doc.get("tags"))),
        "/api/generate": Canned(
            body, content_type="application/x-ndjson", cuts=data.draw(cuts(len(body)))
        ),
    }
    probe = OllamaProbe(ProbeTarget("m", server.url, PROBE_TIMEOUT_S, {"model": "m"}))
    run_probe(probe, "ollama probe", f"ollama {label} {framing} {body[:300]!r}")


TGI_INFO = {"model_id": "m", "model_sha": "abc123", "model_dtype": "float16", "version": "2.0"}
TGI_EVENTS: list[Any] = [
    {"token": {"id": 1, "text": "Hello", "logprob": -0.1, "special": False}, "details": None},
    {"token": {"id": 2, "text": " world", "logprob": -0.2, "special": False}, "details": None},
    {
        "token": {"id": 3, "text": "</s>", "logprob": -0.01, "special": True},
        "generated_text": "Hello world",
        "details": {"finish_reason": "eos_token", "generated_tokens": 3},
    },
]


@budget(ci=150, fuzz=5_000)
@given(data=st.data())
def test_tgi_probe_on_a_mutated_answer(server: CannedServer, data: st.DataObject) -> None:
    label, doc = data.draw(mutate({"info": TGI_INFO, "events": TGI_EVENTS}, toml=False))
    framing = data.draw(SSE_FRAMINGS, label="framing")
    events = doc.get("events")
    body = sse(events if isinstance(events, list) else [events], framing)
    server.routes = {
        "/health": Canned(b""),
        "/info": Canned(json_bytes(doc.get("info"))),
        "/generate_stream": Canned(
            body, content_type="text/event-stream", cuts=data.draw(cuts(len(body)))
        ),
    }
    probe = TgiProbe(ProbeTarget("m", server.url, PROBE_TIMEOUT_S, {}))
    run_probe(probe, "tgi probe", f"tgi {label} {framing} {body[:300]!r}")


@budget(ci=150, fuzz=10_000)
@given(data=st.data())
def test_stream_parsers_on_mutated_streams(data: st.DataObject) -> None:
    """The parsers alone, fed the same kind of streams cut anywhere: only StreamFormatError."""
    nd = data.draw(st.booleans(), label="ndjson")
    if nd:
        label, lines = data.draw(mutate(OLLAMA_LINES, toml=False))
        body = ndjson(lines, data.draw(NDJSON_FRAMINGS, label="framing"))
        parser: NDJSONParser | SSEParser = NDJSONParser()
    else:
        label, events = data.draw(mutate(OPENAI_CHAT, toml=False))
        body = sse(events, data.draw(SSE_FRAMINGS, label="framing"))
        parser = SSEParser()
    points = sorted(min(max(c, 0), len(body)) for c in data.draw(cuts(len(body)), label="cuts"))
    bounds = [0, *points, len(body)]
    target = "ndjson parser" if nd else "sse parser"
    with deadline(f"{target} {label} {body[:300]!r}"):
        try:
            units = [u for a, b in itertools.pairwise(bounds) for u in parser.feed(body[a:b], 0)]
            units += parser.close()
            parser.discarded()
        except StreamFormatError as exc:
            assert str(exc)
            outcome(target, "refused")
            return
    outcome(target, "accepted" if units else "empty")
