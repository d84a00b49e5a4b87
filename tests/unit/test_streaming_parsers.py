"""The SSE and NDJSON parsers: WHATWG event-stream rules, and split-anywhere properties.

The central property: however the bytes of a stream are cut into chunks (mid line, mid UTF-8
character, between CR and LF), the parser yields exactly the units it yields for the whole.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.streamparse import (
    MAX_LINE_BYTES,
    JSONLine,
    NDJSONParser,
    SSEEvent,
    SSEParser,
    StreamFormatError,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given positions (clamped, sorted, duplicates allowed)."""
    points = sorted(min(max(c, 0), len(data)) for c in cuts)
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def sse(data: bytes, chunks: list[bytes] | None = None) -> list[SSEEvent]:
    parser = SSEParser()
    out: list[SSEEvent] = []
    for chunk in chunks if chunks is not None else [data]:
        out.extend(parser.feed(chunk, 0))
    out.extend(parser.close())
    return out


# --- SSE: the standard's rules -------------------------------------------------------------


def test_sse_basic_fields_and_defaults() -> None:
    stream = b"data: hello\n\nevent: add\ndata: 7\nid: 1\n\ndata:no-space\n\n"
    assert sse(stream) == [
        SSEEvent("message", "hello", ""),
        SSEEvent("add", "7", "1"),
        SSEEvent("message", "no-space", "1"),  # the last event id persists
    ]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_line_endings(eol: bytes) -> None:
    stream = eol.join([b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert sse(stream) == [SSEEvent("message", "a\nb"), SSEEvent("message", "c")]


def test_sse_mixed_line_endings_and_crlf_split_between_chunks() -> None:
    stream = b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"
    expected = [SSEEvent("message", "a"), SSEEvent("message", "b"), SSEEvent("message", "c")]
    assert sse(stream) == expected
    # CR at the end of one chunk and LF at the start of the next are one line end.
    assert sse(b"", [b"data: a\r", b"\n\r", b"\n"]) == [SSEEvent("message", "a")]


def test_sse_comments_and_unknown_fields_are_ignored() -> None:
    stream = b": keep-alive\n:\nfoo: bar\ndata: x\n: inside\n\n"
    assert sse(stream) == [SSEEvent("message", "x")]


def test_sse_only_one_leading_space_is_stripped() -> None:
    assert sse(b"data:  two\n\n") == [SSEEvent("message", " two")]
    assert sse(b"data:\tx\n\n") == [SSEEvent("message", "\tx")]


def test_sse_field_without_colon_has_empty_value() -> None:
    # "data" alone appends an empty line; two of them make one newline.
    assert sse(b"data\ndata\n\n") == [SSEEvent("message", "\n")]
    assert sse(b"data\n\n") == [SSEEvent("message", "")]


def test_sse_blank_line_without_data_dispatches_nothing() -> None:
    assert sse(b"event: ping\n\n\n\nid: 5\n\ndata: after\n\n") == [
        SSEEvent("message", "after", "5")  # the event type was reset, the id kept
    ]


def test_sse_id_with_nul_is_ignored_and_retry_needs_digits() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: a\x00b\nretry: 12x\ndata: d\n\nretry: 250\n\n", 0)
    assert events == [SSEEvent("message", "d", "")]
    assert parser.retry_ms == 250


def test_sse_bom_is_dropped_once() -> None:
    assert sse(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent("message", "x")]
    # Split inside the BOM itself.
    assert sse(b"", [b"\xef", b"\xbb\xbfdata: x\n\n"]) == [SSEEvent("message", "x")]


def test_sse_utf8_split_mid_character() -> None:
    data = "data: ünïcødé ✓ 🦊\n\n".encode()
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert sse(data, chunks) == [SSEEvent("message", "ünïcødé ✓ 🦊")]


def test_sse_incomplete_trailing_event_is_discarded_and_reported() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: one\n\ndata: two\ndata: thr", 0) == [SSEEvent("message", "one")]
    assert parser.close() == []
    assert parser.discarded() == "two\ndata: thr"  # data so far, then the raw partial line
    clean = SSEParser()
    clean.feed(b"data: x\n\n", 0)
    clean.close()
    assert clean.discarded() is None


def test_sse_arrival_time_is_that_of_the_completing_chunk() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n", 100) == []
    events = parser.feed(b"\ndata: b\n\n", 200)
    assert [e.arrival_ns for e in events] == [200, 200]
    assert parser.feed(b"data: c\n", 300) == []
    assert [e.arrival_ns for e in parser.feed(b"\n", 400)] == [400]


def test_sse_refuses_endless_lines() -> None:
    parser = SSEParser()
    with pytest.raises(StreamFormatError, match="longer than"):
        for _ in range(MAX_LINE_BYTES // 65536 + 2):
            parser.feed(b"x" * 65536, 0)


# --- SSE: properties -----------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"),
    max_size=20,
)
_event = st.tuples(
    st.one_of(st.none(), _text.filter(lambda s: s.strip() == s)),
    st.lists(_text, min_size=1, max_size=3),
    st.one_of(st.none(), _text),
)


def serialise(
    events: list[tuple[str | None, list[str], str | None]], eol: str, noise: bool
) -> bytes:
    out = []
    for name, lines, ident in events:
        if noise:
            out.append(": comment" + eol)
        if name is not None:
            out.append(f"event: {name}{eol}")
        out.extend(f"data: {line}{eol}" for line in lines)
        if ident is not None:
            out.append(f"id: {ident}{eol}")
        out.append(eol)
    return "".join(out).encode()


@given(
    events=st.lists(_event, max_size=6),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    noise=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_sse_split_anywhere_yields_the_same_events(
    events: list[tuple[str | None, list[str], str | None]],
    eol: str,
    noise: bool,
    cuts: list[int],
) -> None:
    data = serialise(events, eol, noise)
    whole = sse(data)
    assert sse(data, split(data, cuts)) == whole
    # And whole is what was serialised.
    assert [(e.event, e.data) for e in whole] == [
        (name or "message", "\n".join(lines)) for name, lines, _ in events
    ]


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=20))
def test_sse_arbitrary_bytes_never_crash_and_split_is_invisible(
    data: bytes, cuts: list[int]
) -> None:
    assert sse(data, split(data, cuts)) == sse(data)


# --- NDJSON ------------------------------------------------------------------------------


def ndjson(chunks: list[bytes]) -> list[JSONLine]:
    parser = NDJSONParser()
    out: list[JSONLine] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk, 0))
    out.extend(parser.close())
    return out


def test_ndjson_lines_blank_lines_crlf_and_missing_final_newline() -> None:
    data = b'{"a": 1}\n\n  \r\n{"b": "\xc3\xbc"}\r\n[1, 2]'
    assert [line.value for line in ndjson([data])] == [{"a": 1}, {"b": "ü"}, [1, 2]]


def test_ndjson_malformed_line_raises_with_snippet() -> None:
    parser = NDJSONParser()
    assert [x.value for x in parser.feed(b'{"ok": true}\n', 0)] == [{"ok": True}]
    with pytest.raises(StreamFormatError, match=r"malformed NDJSON line: '\{\"response\": tru'"):
        parser.feed(b'{"response": tru\n', 0)
    with pytest.raises(StreamFormatError, match="malformed"):
        ndjson([b'{"a": 1} {"b": 2}\n'])  # two values on one line
    with pytest.raises(StreamFormatError, match="malformed"):
        ndjson([b'{"a": 1}\n{"cut'])  # a bad unterminated tail is not silently dropped


def test_ndjson_arrival_time_is_that_of_the_completing_chunk() -> None:
    parser = NDJSONParser()
    assert parser.feed(b'{"a"', 10) == []
    assert [x.arrival_ns for x in parser.feed(b': 1}\n{"b": 2}\n', 20)] == [20, 20]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    values=st.lists(_json, max_size=8),
    crlf=st.booleans(),
    blank=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_ndjson_split_anywhere_yields_the_same_values(
    values: list[object], crlf: bool, blank: bool, cuts: list[int]
) -> None:
    eol = "\r\n" if crlf else "\n"
    lines = [json.dumps(v, ensure_ascii=False) + eol + (eol if blank else "") for v in values]
    data = "".join(lines).encode()
    assert [x.value for x in ndjson(split(data, cuts))] == values


@given(
    good=st.lists(_json, max_size=4),
    bad=st.sampled_from(["{", '{"a": }', "nul", "[1,", "{'single': 1}", '"open']),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=10),
)
def test_ndjson_malformed_line_raises_however_split(
    good: list[object], bad: str, cuts: list[int]
) -> None:
    data = ("".join(json.dumps(v) + "\n" for v in good) + bad + "\n").encode()
    with pytest.raises(StreamFormatError, match="malformed"):
        ndjson(split(data, cuts))
