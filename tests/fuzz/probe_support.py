"""Running a real probe against fuzzed server answers, and the stream framings the generation
probes share (SSE for OpenAI and TGI, NDJSON for Ollama)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import strategies as st

from probes.base import CATEGORIES, Probe
from probes.httpclient import HttpClient
from storage.records import ProbeRun
from tests.fuzz.canned import check_storable
from tests.fuzz.mutate import DEEP, json_text
from tests.fuzz.support import EXAMPLE_DEADLINE_S, deadline, outcome

PROBE_TIMEOUT_S = 3.0


def run_probe(probe: Probe, target: str, what: str) -> ProbeRun:
    """``probe.run`` once against the canned server; the run must come back (never an
    exception), within the deadline, in a known category, and storable."""

    async def once() -> ProbeRun:
        async with HttpClient() as session:
            return await asyncio.wait_for(probe.run(session), PROBE_TIMEOUT_S + 2)

    with deadline(what, EXAMPLE_DEADLINE_S):
        run = asyncio.run(once())
    assert isinstance(run, ProbeRun), run
    assert run.category in CATEGORIES, run.category
    assert run.ok == (run.category == "ok")
    check_storable(run)
    outcome(target, "accepted" if run.ok else run.category)
    return run


def sse(events: list[Any], framing: str) -> bytes:
    """Events as an SSE body: a string is sent as ``data:`` text as it is, anything else as
    JSON (NaN and infinities as Python writes them); ``framing`` varies the lines around."""
    blocks = []
    for event in events:
        data = event if isinstance(event, str) and event != DEEP else json_text(event)
        block = "".join(f"data: {line}\n" for line in data.split("\n"))
        if framing == "event-error" and event is events[-1]:
            block = "event: error\n" + block
        blocks.append(block)
    text = "\n".join(blocks) + "\n"
    if framing == "crlf":
        text = text.replace("\n", "\r\n")
    elif framing == "cr":
        text = text.replace("\n", "\r")
    elif framing == "comments":
        text = ": ping\n\nretry: 10\nid: 7\n\n" + text.replace("\n\n", "\n: keep-alive\n\n")
    elif framing == "no-space":
        text = text.replace("data: ", "data:")
    elif framing == "no-blank-line":
        text = text.replace("\n\n", "\n")
    elif framing == "bom":
        text = "\ufeff" + text
    elif framing == "unknown-fields":
        text = "foo: bar\nevent\nid: a\x00b\n" + text
    elif framing == "truncated":
        text = text[: len(text) // 2]
    elif framing == "long-line":
        text = "data: " + "x" * (1 << 20) + "\n\n" + text
    return text.encode("utf-8")


SSE_FRAMINGS = st.sampled_from(
    ["plain"] * 6
    + ["crlf", "cr", "comments", "no-space", "no-blank-line", "bom", "unknown-fields"]
    + ["truncated", "event-error", "long-line"]
)


def ndjson(lines: list[Any], framing: str) -> bytes:
    """Objects as NDJSON lines (a string is sent as it is); ``framing`` varies the lines."""
    texts = [v if isinstance(v, str) and v != DEEP else json_text(v) for v in lines]
    text = "\n".join(texts) + "\n"
    if framing == "crlf":
        text = text.replace("\n", "\r\n")
    elif framing == "blank-lines":
        text = "\n" + text.replace("\n", "\n\n")
    elif framing == "no-final-newline":
        text = text.rstrip("\n")
    elif framing == "garbage-tail":
        text += "{not json\n"
    elif framing == "truncated":
        text = text[: len(text) // 2]
    elif framing == "long-line":
        text = '{"response": "' + "x" * (1 << 20) + '"}\n' + text
    return text.encode("utf-8")


NDJSON_FRAMINGS = st.sampled_from(
    ["plain"] * 6
    + ["crlf", "blank-lines", "no-final-newline", "garbage-tail", "truncated", "long-line"]
)


def cuts(body_size_hint: int = 2000) -> st.SearchStrategy[list[int]]:
    """Where a body is cut into chunks (anywhere: mid line, mid UTF-8 character, mid CRLF)."""
    return st.lists(st.integers(0, body_size_hint), max_size=6)
