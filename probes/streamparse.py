"""Incremental parsers for streamed model answers: Server-Sent Events and NDJSON.

Both parsers are fed raw body chunks exactly as they come off the socket, split anywhere (mid
line, mid UTF-8 character, between the CR and LF of a CRLF), and return the units each chunk
completes. Every unit carries ``arrival_ns``: the ``time.perf_counter_ns()`` reading of the chunk
that completed it. Latencies are measured from chunk arrival, so a caller reads the body with
``resp.chunks()`` (:mod:`probes.httpclient`) and timestamps each chunk once, before parsing it;
parsing time is then never counted as model time.
"""

from __future__ import annotations

import codecs
import re
import time
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from storage.jsontext import loads_json

MAX_LINE_BYTES = 1 << 20
"""A line (or an SSE event) longer than this is refused: a broken or hostile server must not
grow the agent's memory without bound."""

SNIPPET_CHARS = 120

_LINE_END = re.compile(r"\r\n|\r|\n")


class StreamFormatError(ValueError):
    """The stream breaks its format: a malformed JSON line, a line over the size limit.

    Attributes:
        units: the units the same chunk completed before the bad one. A server often writes
            its last good tokens and the broken line in one TCP segment; they still count
            (for TTFT and the "after N content chunks" in the error).
    """

    def __init__(self, message: str, units: list[object] | None = None) -> None:
        super().__init__(message)
        self.units: list[object] = units or []


def _snippet(text: str) -> str:
    text = text.strip()
    return text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched server-sent event.

    Attributes:
        event: the event type; ``"message"`` when the stream named none.
        data: the event's ``data:`` lines joined with ``\\n``.
        id: the last event id seen so far in the stream (it persists across events).
        arrival_ns: perf_counter_ns of the chunk that completed the event; not compared, so
            events parsed from differently split streams are equal.
    """

    event: str
    data: str
    id: str = ""
    arrival_ns: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class JSONLine:
    """One NDJSON value and the arrival time of the chunk that completed its line."""

    value: object
    arrival_ns: int = field(default=0, compare=False)


U = TypeVar("U")


class StreamParser(Protocol[U]):
    """What :func:`read_stream` needs of a parser."""

    def feed(self, chunk: bytes, now_ns: int | None = None) -> list[U]:
        """Parse a chunk; return the units it completed."""
        ...

    def close(self) -> list[U]:
        """End of stream; return units only the end completes."""
        ...

    def discarded(self) -> str | None:
        """After close: a snippet of incomplete trailing input that was dropped, or None."""
        ...


class SSEParser:
    """``text/event-stream`` parsing as the WHATWG HTML standard (9.2.6) specifies it.

    Lines end with CRLF, LF or CR; a line starting with ``:`` is a comment; ``field: value``
    loses one leading space of the value; a line without a colon is a field with an empty
    value; ``data`` lines accumulate (joined with LF), ``event`` sets the type, ``id`` the last
    event id (ignored when it holds NUL), ``retry`` the reconnection time; a blank line
    dispatches the event unless no data was given. A leading BOM is dropped. Unknown fields
    are ignored. At the end of the stream an incomplete event is discarded, not dispatched;
    :meth:`discarded` tells what was dropped so a probe can say so.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._started = False
        self._skip_lf = False
        self._data: list[str] = []
        self._data_chars = 0
        self._event = ""
        self._last_id = ""
        self._dropped: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes, now_ns: int | None = None) -> list[SSEEvent]:
        """Parse ``chunk``; return the events it completed, stamped with ``now_ns``.

        Raises:
            StreamFormatError: a line or event grew past :data:`MAX_LINE_BYTES`.
        """
        arrival = time.perf_counter_ns() if now_ns is None else now_ns
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            # The previous chunk ended in CR: an LF starting this one is the rest of a CRLF,
            # not a second (blank, dispatching) line.
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buf = self._buf + text if self._buf else text
        events: list[SSEEvent] = []
        pos = 0
        for match in _LINE_END.finditer(buf):
            self._line(buf[pos : match.start()], arrival, events)
            pos = match.end()
        self._buf = buf[pos:]
        self._skip_lf = buf.endswith("\r")
        if len(self._buf) > MAX_LINE_BYTES:
            raise StreamFormatError(f"SSE line longer than {MAX_LINE_BYTES} characters")
        return events

    def _line(self, line: str, arrival: int, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                data = "\n".join(self._data)
                events.append(SSEEvent(self._event or "message", data, self._last_id, arrival))
            self._data, self._data_chars, self._event = [], 0, ""
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_chars += len(value)
            if self._data_chars > MAX_LINE_BYTES:
                raise StreamFormatError(f"SSE event larger than {MAX_LINE_BYTES} characters")
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)

    def close(self) -> list[SSEEvent]:
        """End of stream: an event without its blank line is discarded (see :meth:`discarded`).

        Returns:
            Always an empty list; the standard never dispatches an unterminated event.
        """
        tail = self._buf + self._decoder.decode(b"", final=True)
        pending = [*self._data, tail] if tail else self._data
        self._dropped = (_snippet("\n".join(pending)) or "(blank)") if pending else None
        self._buf, self._data, self._data_chars, self._event = "", [], 0, ""
        return []

    def discarded(self) -> str | None:
        """After :meth:`close`: a snippet of the incomplete event dropped, or None."""
        return self._dropped


class NDJSONParser:
    """Newline-delimited JSON: one JSON value per LF-terminated line (a CR before it is fine).

    Blank lines are skipped. A final line without its LF is still parsed at :meth:`close`
    (servers differ on the last newline; the value is complete either way).
    """

    def __init__(self) -> None:
        self._buf = b""
        self._last_ns = 0

    def feed(self, chunk: bytes, now_ns: int | None = None) -> list[JSONLine]:
        """Parse ``chunk``; return the values of the lines it completed, stamped ``now_ns``.

        Raises:
            StreamFormatError: a completed line is not one JSON value (the message quotes
                it), or a line grew past :data:`MAX_LINE_BYTES`.
        """
        arrival = time.perf_counter_ns() if now_ns is None else now_ns
        self._last_ns = arrival
        if b"\n" not in chunk:
            self._buf += chunk
            if len(self._buf) > MAX_LINE_BYTES:
                raise StreamFormatError(f"NDJSON line longer than {MAX_LINE_BYTES} bytes")
            return []
        # LF never occurs inside a multi-byte UTF-8 sequence, so splitting bytes is safe.
        lines = (self._buf + chunk).split(b"\n")
        self._buf = lines.pop()
        out: list[JSONLine] = []
        for line in lines:
            try:
                item = self._parse(line, arrival)
            except StreamFormatError as exc:
                exc.units = list(out)
                raise
            if item is not None:
                out.append(item)
        return out

    @staticmethod
    def _parse(line: bytes, arrival: int) -> JSONLine | None:
        if not line.strip():
            return None
        try:
            return JSONLine(loads_json(line), arrival)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError, nested too deeply
            text = line.decode("utf-8", errors="replace")
            raise StreamFormatError(f"malformed NDJSON line: {_snippet(text)!r}") from None

    def close(self) -> list[JSONLine]:
        """End of stream: parse a last line that lacked its newline.

        Raises:
            StreamFormatError: that line is not valid JSON.
        """
        tail, self._buf = self._buf, b""
        item = self._parse(tail, self._last_ns)
        return [item] if item is not None else []

    def discarded(self) -> str | None:
        """NDJSON drops nothing silently: a bad tail raises instead. Always None."""
        return None


# --- the measurement every streaming probe shares ----------------------------------------
