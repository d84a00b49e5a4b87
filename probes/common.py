"""Helpers every probe shares: option checks, the run deadline, error classification, runs.

Latency bounds in ``[model.canary]`` are durations like the rest of the config
(``max_latency = "500ms"``); they are parsed once when the probe is built.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probes.base import OptionError, ProbeTarget, redact, truncate_error
from probes.httpclient import Response, WireError
from storage.jsontext import loads_json
from storage.records import ProbeRun
from storage.text import compile_regex
from storage.tomlschema import MAX_DURATION_S
from storage.units import parse_duration

SNIPPET_LIMIT = 200
"""How much of an unexpected body an error text quotes."""

BODY_LIMIT = 1 << 20
"""Non-streamed bodies (errors, model lists) are read up to this many bytes."""


MAX_SERVER_COUNT = 2**53
"""The largest count a server may report (tokens, nanoseconds): exact as a float, and within
SQLite's 64-bit integers (a ``completion_tokens`` of 2**63 made the run unstorable, one of
10**400 an OverflowError in the tokens/s division)."""


def server_count(value: object) -> int | None:
    """A count from a server's answer (``usage.completion_tokens``, ``eval_count``,
    ``eval_duration``): a JSON integer from 0 to :data:`MAX_SERVER_COUNT`, else None (not
    reported: the probe counts for itself)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SERVER_COUNT:
        return value
    return None


# --- option checks ------------------------------------------------------------------------


def is_number(value: object) -> bool:
    """True for finite ints and floats, but not bools (TOML ``true`` is no latency) nor TOML's
    ``nan`` and ``inf``, which no option means."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float: no number any setting means
        return False


def check_str(options: Mapping[str, Any], key: str) -> None:
    """Refuse ``options[key]`` unless it is a non-empty string (absent is fine)."""
    if key in options and (not isinstance(options[key], str) or not options[key]):
        raise OptionError(key, f"expected a non-empty string, got {options[key]!r}")


def check_bool(options: Mapping[str, Any], key: str) -> None:
    """Refuse ``options[key]`` unless it is a boolean (absent is fine)."""
    if key in options and not isinstance(options[key], bool):
        raise OptionError(key, f"expected true or false, got {options[key]!r}")


# --- running ------------------------------------------------------------------------------


class Deadline:
    """One time budget for a whole run, however many requests it takes."""

    def __init__(self, timeout_s: float) -> None:
        self.end = time.monotonic() + timeout_s

    def remaining_s(self) -> float:
        """Seconds left of the budget (0 once spent)."""
        return max(self.end - time.monotonic(), 0.0)

    def timeout(self) -> float:
        """The next request's time limit in seconds: whatever is left of the budget (a spent
        one still gives a moment, so the request fails as a timeout, not as a bad argument)."""
        return max(self.remaining_s(), 0.001)

    def scope(self) -> asyncio.Timeout:
        """An ``async with`` scope cancelled when the budget is spent, raising TimeoutError.

        Per-request timeouts alone do not bound a run that reads a streamed body: a server
        that trickles one byte at a time never lets a single read time out. Wrapping the whole
        run in this scope does.
        """
        return asyncio.timeout(self.remaining_s())


def elapsed_ms(start_ns: int, end_ns: int | None = None) -> float:
    """Milliseconds between two ``perf_counter_ns`` readings (end defaults to now)."""
    return ((end_ns if end_ns is not None else time.perf_counter_ns()) - start_ns) / 1e6


def body_snippet(body: bytes, limit: int = SNIPPET_LIMIT) -> str:
    """The start of a response body as text, for error messages."""
    text = body[:limit].decode("utf-8", errors="replace").strip()
    return text + ("…" if len(body) > limit else "")


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """Map a request failure to a run category and an error text.

    The client's errors carry their category (``refused``: what the OS said about which
    address; ``protocol_error``: disconnects mid-answer, malformed HTTP, bad URLs).
    """
    if isinstance(exc, TimeoutError):
        return "timeout", f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, WireError):
        return exc.category, str(exc)
    return "protocol_error", f"{type(exc).__name__}: {exc}"


def make_run(
    target: ProbeTarget,
    category: str,
    *,
    ts_ms: int,
    error: str | None = None,
    e2e_ms: float | None = None,
    status: int | None = None,
    phases_ms: Mapping[str, float] | None = None,
    ttft_ms: float | None = None,
    itl_ms: float | None = None,
    output_tokens: int | None = None,
    tokens_per_s: float | None = None,
) -> ProbeRun:
    """Build a run; ok exactly when the category is ``ok``, error texts truncated.

    The api key is scrubbed from the error text: servers echo it back in 401 bodies.
    """
    return ProbeRun(
        model=target.name,
        ts_ms=ts_ms,
        ok=category == "ok",
        category=category,
        e2e_ms=e2e_ms,
        ttft_ms=ttft_ms,
        itl_ms=itl_ms,
        output_tokens=output_tokens,
        tokens_per_s=tokens_per_s,
        status=status,
        error=truncate_error(redact(error, target.api_key)) if error is not None else None,
        phases_ms=dict(phases_ms or {}),
    )


def check_duration(options: Mapping[str, Any], key: str) -> None:
    """Refuse ``options[key]`` unless it is a positive duration string such as ``"500ms"``."""
    if key not in options:
        return
    value = options[key]
    try:
        if not isinstance(value, str):
            raise ValueError
        ok = 0 < parse_duration(value) <= MAX_DURATION_S
    except ValueError:
        ok = False
    if not ok:
        raise OptionError(
            key, f'expected a positive duration such as "500ms" or "2s", got {value!r}'
        )


def duration_ms(options: Mapping[str, Any], key: str) -> float | None:
    """A checked duration option in milliseconds, or None when absent."""
    value = options.get(key)
    return parse_duration(value) * 1000.0 if isinstance(value, str) else None


def over_bound(measured_ms: float | None, bound_ms: float | None, option: str) -> str | None:
    """The ``slow`` error text when a measurement exceeds its bound, else None.

    Args:
        option: the canary option that set the bound, named in the text so the operator
            knows which limit was crossed.
    """
    if measured_ms is not None and bound_ms is not None and measured_ms > bound_ms:
        return f"{measured_ms:.1f} ms, over {option} ({bound_ms:g} ms)"
    return None


def check_text_expectations(options: Mapping[str, Any]) -> None:
    """Validate the output checks shared by text-generating probes.

    ``expect_contains`` (string), ``expect_regex`` (regular expression), ``expect_exact``
    (string, compared after stripping surrounding white space).
    """
    check_str(options, "expect_contains")
    check_str(options, "expect_exact")
    check_str(options, "expect_regex")
    if "expect_regex" in options:
        try:
            compile_regex(options["expect_regex"])
        except ValueError as exc:
            raise OptionError("expect_regex", f"expected a regular expression: {exc}") from exc


def text_mismatch(text: str, options: Mapping[str, Any]) -> str | None:
    """Why a model's output fails the configured checks, or None when it passes."""
    shown = body_snippet(text.encode("utf-8"), 80)
    want = options.get("expect_contains")
    if isinstance(want, str) and want not in text:
        return f"output does not contain {want!r}: {shown!r}"
    pattern = options.get("expect_regex")
    if isinstance(pattern, str) and not re.search(pattern, text):
        return f"output does not match /{pattern}/: {shown!r}"
    exact = options.get("expect_exact")
    if isinstance(exact, str) and text.strip() != exact.strip():
        return f"output is not exactly {exact!r}: {shown!r}"
    return None


# --- text generation (openai, ollama, tgi) -------------------------------------------------

DEFAULT_PROMPT = "Say hello in one short sentence."
"""The canary prompt when none is configured: short, so a probe costs the server little."""

DEFAULT_MAX_TOKENS = 16

GENERATION_OPTIONS = frozenset(
    {
        "model",
        "prompt",
        "max_tokens",
        "temperature",
        "expect_contains",
        "expect_regex",
        "expect_exact",
        "max_latency",
        "max_ttft",
        "max_itl",
        "min_tokens_per_s",
    }
)
"""Canary options every text-generating protocol accepts."""


# --- steps of multi-request runs ---------------------------------------------------------


class RunFailed(Exception):
    """Ends a generation run early with a category, the error text and maybe a status."""

    def __init__(self, category: str, error: str, status: int | None = None) -> None:
        super().__init__(error)
        self.category = category
        self.error = error
        self.status = status


async def read_body(resp: Response, limit: int = BODY_LIMIT) -> bytes:
    """Read a body up to ``limit`` bytes (an error page need not be read whole)."""
    return await resp.read(limit)


async def check_status(resp: Response, step: str) -> None:
    """Raise ``http_error`` quoting the body when ``resp`` is not 2xx.

    Args:
        step: what was asked (``GET /v1/models``), the error text's prefix.
    """
    if not 200 <= resp.status <= 299:
        body = await read_body(resp, 4096)
        error = f"{step}: HTTP {resp.status}: {body_snippet(body)}"
        raise RunFailed("http_error", error, resp.status)


def parse_json(body: bytes, step: str) -> Any:
    """Parse a JSON body, or raise ``protocol_error`` quoting it."""
    try:
        return loads_json(body)
    except ValueError:
        raise RunFailed(
            "protocol_error", f"{step}: response is not JSON: {body_snippet(body)}"
        ) from None


def error_message(obj: Mapping[str, Any]) -> str | None:
    """The message of an error a server put in a body or stream chunk, else None.

    OpenAI and vLLM send ``{"error": {"message": ...}}``; older vLLM and some proxies
    ``{"object": "error", "message": ...}``; Ollama and TGI ``{"error": "text"}``.
    """
    err = obj.get("error")
    if isinstance(err, Mapping):
        return str(err.get("message") or err)
    if err is not None:
        return str(err)
    if obj.get("object") == "error":
        return str(obj.get("message") or obj)
    return None


def stream_object(value: object, raw: str) -> Mapping[str, Any]:
    """A parsed stream unit as a JSON object, or the run's end.

    Raises:
        RunFailed: ``protocol_error`` when it is not an object (quoting ``raw``),
            ``http_error`` when it is the server reporting an error mid-stream.
    """
    if not isinstance(value, Mapping):
        raise RunFailed("protocol_error", f"stream unit is not a JSON object: {raw[:120]!r}")
    message = error_message(value)
    if message is not None:
        raise RunFailed("http_error", f"server error in stream: {message}")
    return value


def parse_data(data: str) -> Mapping[str, Any]:
    """An SSE ``data`` field holding one JSON object (see :func:`stream_object`)."""
    try:
        value = loads_json(data)
    except ValueError:
        raise RunFailed("protocol_error", f"malformed JSON in data line: {data[:120]!r}") from None
    return stream_object(value, data)


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile, interpolating linearly between ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The latency and throughput bounds of a generation canary (None: not checked)."""

    max_latency_ms: float | None = None
    max_ttft_ms: float | None = None
    max_itl_ms: float | None = None
    min_tokens_per_s: float | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Bounds:
        """Parse ``max_latency``, ``max_ttft``, ``max_itl``, ``min_tokens_per_s`` (checked)."""
        min_tps = options.get("min_tokens_per_s")
        return cls(
            duration_ms(options, "max_latency"),
            duration_ms(options, "max_ttft"),
            duration_ms(options, "max_itl"),
            float(min_tps) if min_tps is not None else None,
        )

    def crossed(
        self, e2e: float, ttft: float | None, itl: float | None, tps: float | None
    ) -> str | None:
        """The ``slow`` text naming every bound crossed, or None."""
        found = [
            over_bound(e2e, self.max_latency_ms, "max_latency"),
            over_bound(ttft, self.max_ttft_ms, "max_ttft"),
            over_bound(itl, self.max_itl_ms, "max_itl"),
        ]
        if self.min_tokens_per_s is not None and tps is not None and tps < self.min_tokens_per_s:
            found.append(f"{tps:.1f} tokens/s, under min_tokens_per_s ({self.min_tokens_per_s:g})")
        problems = [p for p in found if p]
        return "; ".join(problems) or None
