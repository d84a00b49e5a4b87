"""The measurement every streaming probe shares: a :class:`StreamTimer` collecting content and
token arrivals, :func:`read_stream` driving a parser (:mod:`probes.streamparse`) under the run's
deadline, and :class:`GenerationRun` turning the timings into a judged ``ProbeRun``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from probes.base import Probe, ProbeTarget, now_ms
from probes.common import (
    GENERATION_OPTIONS,
    Bounds,
    Deadline,
    RunFailed,
    check_status,
    check_text_expectations,
    classify_exception,
    elapsed_ms,
    make_run,
    percentile,
    read_body,
    text_mismatch,
)
from probes.httpclient import HttpClient, Response, WireError
from probes.options import Flag, GenerationOptions, schema_for
from probes.streamparse import StreamFormatError, StreamParser, U
from storage.records import ProbeRun

DRAIN_GRACE_S = 0.05
"""How long to wait, after the end marker, for the rest of the body (the chunked-encoding
terminator): a fully read answer lets the client reuse the connection for the next run, so
TTFT does not sometimes include a TCP connect and sometimes not."""
DRAIN_BYTES = 64 * 1024
"""At most this much is read after the end marker; what follows it is tiny."""


@dataclass
class StreamTimer:
    """Arrival times of one answer, counted from the instant the request was sent.

    Two kinds of chunk are told apart:

    - A *content unit* carries non-empty generated text. The first one is the first token:
      TTFT is its arrival, the text a user would see first. Role-only, empty and
      special-token chunks before it are not content (GenAI-Perf and AIPerf skip them too)
      and are not counted as tokens either: they are the server's preamble, not output.
    - A *token chunk* is one the protocol says carries a generated token, whatever its text
      decodes to: llama.cpp, for one, streams one chunk per token and sends ``""`` for a
      token that decodes to nothing printable (half a UTF-8 character, a control token).
      From the first content unit on, every token chunk counts, empty or not; before it,
      none does. Which chunks carry a token is the probe's call (:meth:`token`); a chunk
      handed to :meth:`content` carries one only when its text is non-empty.

    ``token_ns`` is then the token arrivals: the first content unit and every token chunk
    after it. Its length is the counted token count, used when the server gives none.
    """

    start_ns: int = field(default_factory=time.perf_counter_ns)
    content_ns: list[int] = field(default_factory=list)
    """Arrivals of the content units (non-empty text)."""
    token_ns: list[int] = field(default_factory=list)
    """Arrivals of the token chunks from the first content unit on (empty text included)."""
    parts: list[str] = field(default_factory=list)
    end_ns: int | None = None
    last_bytes_ns: int | None = None
    reported_tokens: int | None = None
    """Output tokens as the server reports them (usage, eval_count, generated_tokens)."""
    final_text: str | None = None
    """The whole output when the server states it (non-streamed answers, TGI's
    generated_text); otherwise the content units joined."""
    streamed: bool = True

    def token(self, text: object, arrival_ns: int) -> None:
        """Record a chunk that carries one generated token; its text may be empty.

        Before the first non-empty text such a chunk is preamble and not counted; from it
        on, each one is a token arrival.
        """
        if isinstance(text, str) and text:
            self.content_ns.append(arrival_ns)
            self.parts.append(text)
        if self.content_ns:
            self.token_ns.append(arrival_ns)

    def content(self, text: object, arrival_ns: int) -> None:
        """Record a chunk's generated text where an empty text means no token was carried
        (an end marker's empty ``response``, say): only non-empty text counts."""
        if isinstance(text, str) and text:
            self.token(text, arrival_ns)

    @property
    def text(self) -> str:
        """The generated output."""
        return self.final_text if self.final_text is not None else "".join(self.parts)


async def read_stream(
    resp: Response,
    parser: StreamParser[U],
    timer: StreamTimer,
    on_unit: Callable[[U], bool],
    end: str,
) -> None:
    """Feed the body to ``parser`` chunk by chunk until ``on_unit`` sees the end marker.

    Each chunk is timestamped once on arrival, before parsing. The caller bounds the whole
    loop with the run's deadline (:meth:`GenerationRun.guard`), so a server trickling bytes
    cannot keep it going.

    Args:
        on_unit: called with each parsed unit; returns True for the stream's end marker and
            raises :class:`RunFailed` for a unit that ends the run.
        end: the end marker, named in the error when the body ends without it.

    Raises:
        RunFailed: ``protocol_error`` for a malformed unit or a body that ends too early.
    """
    try:
        async for chunk in resp.chunks():
            now = time.perf_counter_ns()
            timer.last_bytes_ns = now
            for unit in parser.feed(chunk, now):
                if on_unit(unit):
                    await resp.drain(DRAIN_BYTES, DRAIN_GRACE_S)
                    return
        for unit in parser.close():
            if on_unit(unit):
                return
    except StreamFormatError as exc:
        for good in exc.units:  # the good units that came in the bad one's chunk
            on_unit(cast("U", good))
        raise RunFailed("protocol_error", str(exc)) from None
    dropped = parser.discarded()
    tail = f"; incomplete event dropped: {dropped!r}" if dropped else ""
    raise RunFailed("protocol_error", f"stream ended before {end}{tail}")


class GenerationRun:
    """One run of a text-generation probe: its deadline, phases, timer and verdict.

    Metrics follow GenAI-Perf / AIPerf, with the token arrivals of :class:`StreamTimer`:

    - ``output_tokens``: the server's own count when it gives one (OpenAI ``usage`` from
      ``stream_options.include_usage``, Ollama's ``eval_count``, TGI's
      ``details.generated_tokens``); otherwise the token chunks counted (``token_ns``: the
      first non-empty text and every token-carrying chunk after it, empty text included).
      ``phases_ms["counted_chunks"]`` is that count for every streamed run: beside a server
      count, the two disagreeing shows a server that batches tokens into fewer chunks (or
      sends chunks that carry none).
    - TTFT: request sent to the first content unit (non-empty text).
    - ``itl_ms``: (last token arrival - first token arrival) / (output_tokens - 1), the mean
      time per token after the first over the count reported; with one chunk per token it is
      the mean gap between token chunks. It needs two token arrivals and two tokens.
    - ``phases_ms["itl_p50_ms"]``, ``["itl_p95_ms"]``: percentiles of the gaps between
      consecutive token arrivals (empty-text token chunks included: each is a token).
    - ``phases_ms["itl_mean_formula_ms"]``: (e2e - TTFT) / (output_tokens - 1), GenAI-Perf's
      own ITL (its e2e runs to the end marker, so the tail after the last token is in it).
    - e2e: request sent to the end marker; ``tokens_per_s`` = output_tokens / e2e,
      GenAI-Perf's per-request output token throughput (TTFT included);
      ``phases_ms["decode_tokens_per_s"]`` = (output_tokens - 1) / (e2e - TTFT), the per-user
      decode rate.
    """

    def __init__(self, target: ProbeTarget, bounds: Bounds) -> None:
        self.target = target
        self.bounds = bounds
        self.ts_ms = now_ms()
        self.deadline = Deadline(target.timeout_s)
        self.phases: dict[str, float] = {}
        self.timer: StreamTimer | None = None
        self.status: int | None = None
        self.step = "request"
        """What the run is doing (``POST /v1/chat/completions``), named in errors."""

    def start_timer(self) -> StreamTimer:
        """Start the clock: call right before sending the generation request."""
        self.timer = StreamTimer()
        return self.timer

    async def guard(self, attempt: Awaitable[ProbeRun]) -> ProbeRun:
        """Await the run's steps within the deadline and turn every failure into a run."""
        try:
            async with self.deadline.scope():
                return await attempt
        except RunFailed as failed:
            return self.failed(failed.category, failed.error, failed.status)
        except (WireError, TimeoutError, ValueError) as exc:
            category, error = classify_exception(exc)
            if category == "timeout":
                error = self._timeout_text()
            return self.failed(category, f"{self.step}: {error}")

    async def get(self, session: HttpClient, url: str, phase: str) -> bytes:
        """GET a side endpoint (model list, health), timed as ``phase``; non-2xx ends the run."""
        start = time.perf_counter_ns()
        async with session.get(
            url, headers=self.target.auth_headers(), timeout_s=self.deadline.timeout()
        ) as resp:
            await check_status(resp, self.step)
            body = await read_body(resp)
        self.phases[phase] = elapsed_ms(start)
        return body

    def failed(self, category: str, error: str, status: int | None = None) -> ProbeRun:
        """A failed run; the TTFT of a stream that broke later is kept in ``phases_ms``.

        The top-level latency fields stay empty (e2e only for timeouts, as other probes do):
        the latency series then describe complete answers only.
        """
        timer = self.timer
        e2e = None
        if timer is not None:
            if timer.content_ns:
                self.phases["ttft_ms"] = (timer.content_ns[0] - timer.start_ns) / 1e6
                error += f" (after {len(timer.content_ns)} content chunks)"
            if category == "timeout":
                e2e = elapsed_ms(timer.start_ns)
        return make_run(
            self.target,
            category,
            ts_ms=self.ts_ms,
            error=error,
            e2e_ms=e2e,
            status=status if status is not None else self.status,
            phases_ms=self.phases,
        )

    def _timeout_text(self) -> str:
        budget = f"{self.target.timeout_s:g}s"
        timer = self.timer
        if timer is None or timer.last_bytes_ns is None:
            return f"no answer within {budget}"
        quiet = elapsed_ms(timer.last_bytes_ns)
        return f"answer not finished within {budget}; last bytes arrived {quiet:.0f} ms before"

    def finish(self) -> ProbeRun:
        """Judge a complete answer: metrics, then output checks, then bounds."""
        timer = self.timer
        if timer is None:  # a probe bug, not a server fault
            raise RuntimeError("finish() before start_timer()")
        e2e = ((timer.end_ns or time.perf_counter_ns()) - timer.start_ns) / 1e6
        text = timer.text
        if not text:
            return self.failed("protocol_error", f"{self.step}: the answer has no content")
        tokens = timer.reported_tokens
        if timer.streamed:
            counted = len(timer.token_ns)
            self.phases["counted_chunks"] = float(counted)
            if tokens is None:
                tokens = counted
        ttft = itl = None
        if timer.content_ns:
            ttft = (timer.content_ns[0] - timer.start_ns) / 1e6
            self.phases["ttft_ms"] = ttft
            arrivals = timer.token_ns
            gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(arrivals)]
            if gaps:
                self.phases["itl_p50_ms"] = percentile(gaps, 50)
                self.phases["itl_p95_ms"] = percentile(gaps, 95)
                if tokens is not None and tokens > 1:
                    itl = (arrivals[-1] - arrivals[0]) / 1e6 / (tokens - 1)
            if tokens is not None and tokens > 1 and e2e > ttft:
                self.phases["itl_mean_formula_ms"] = (e2e - ttft) / (tokens - 1)
                self.phases["decode_tokens_per_s"] = (tokens - 1) / ((e2e - ttft) / 1000)
        tps = tokens / (e2e / 1000) if tokens and e2e > 0 else None
        mismatch = text_mismatch(text, self.target.options)
        slow = None if mismatch else self.bounds.crossed(e2e, ttft, itl, tps)
        category = "wrong_output" if mismatch else "slow" if slow else "ok"
        return make_run(
            self.target,
            category,
            ts_ms=self.ts_ms,
            error=mismatch or slow,
            e2e_ms=e2e,
            status=self.status,
            phases_ms=self.phases,
            ttft_ms=ttft,
            itl_ms=itl,
            output_tokens=tokens,
            tokens_per_s=tps,
        )


class GenerationProbe(Probe):
    """What the text-generation probes (openai, ollama, tgi) share: the generation options,
    the latency bounds, and one run guarded by its deadline. A subclass names its own boolean
    options in ``flags`` and does the requests in ``_attempt``."""

    allowed_options = GENERATION_OPTIONS
    flags: tuple[str, ...] = ()
    own_options: ClassVar[dict[str, Any]] = {}
    """Options of the subclass's protocol alone, beyond its ``flags`` (name -> type)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = {flag: Flag for flag in cls.flags} | cls.own_options
        cls.options_schema = schema_for(cls.protocol, GenerationOptions, own)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Validate keys and value types; raise OptionError naming the key."""
        super().check_options(options)
        check_text_expectations(options)

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        self._base = target.url.rstrip("/")
        self._bounds = Bounds.from_options(target.options)

    async def run(self, session: HttpClient) -> ProbeRun:
        """Probe once (side request, canary, judgement); never raises."""
        run = GenerationRun(self.target, self._bounds)
        result = await run.guard(self._attempt(session, run))
        self.last_output = (
            run.timer.text if run.timer is not None and result.category in ("ok", "slow") else None
        )
        return result

    async def _attempt(self, session: HttpClient, run: GenerationRun) -> ProbeRun:
        raise NotImplementedError
