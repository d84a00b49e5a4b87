"""Helpers every probe shares: option checks, the run deadline, error classification, runs.

Latency bounds in ``[model.canary]`` are durations like the rest of the config
(``max_latency = "500ms"``); they are parsed once when the probe is built.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from probes.base import OptionError, ProbeTarget, redact, truncate_error
from storage.records import ProbeRun
from storage.units import parse_duration

SNIPPET_LIMIT = 200
"""How much of an unexpected body an error text quotes."""


# --- option checks ------------------------------------------------------------------------


def is_number(value: object) -> bool:
    """True for ints and floats, but not bools (TOML ``true`` is no latency)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


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

    def timeout(self) -> aiohttp.ClientTimeout:
        """A client timeout for the next request: whatever is left of the budget."""
        # A spent budget still needs a positive value; aiohttp reads 0 as "no timeout".
        return aiohttp.ClientTimeout(total=max(self.end - time.monotonic(), 0.001))


def elapsed_ms(start_ns: int, end_ns: int | None = None) -> float:
    """Milliseconds between two ``perf_counter_ns`` readings (end defaults to now)."""
    return ((end_ns if end_ns is not None else time.perf_counter_ns()) - start_ns) / 1e6


def body_snippet(body: bytes, limit: int = SNIPPET_LIMIT) -> str:
    """The start of a response body as text, for error messages."""
    text = body[:limit].decode("utf-8", errors="replace").strip()
    return text + ("…" if len(body) > limit else "")


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """Map a request failure to a run category and an error text.

    Order matters: aiohttp's connect timeouts are both ClientErrors and TimeoutErrors.
    """
    if isinstance(exc, TimeoutError):
        return "timeout", f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "refused", f"cannot connect: {exc}"
    # Disconnects mid-answer, malformed HTTP, bad URLs: the server did not speak HTTP properly.
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
) -> ProbeRun:
    """Build a run; ok exactly when the category is ``ok``, error texts truncated."""
    return ProbeRun(
        model=target.name,
        ts_ms=ts_ms,
        ok=category == "ok",
        category=category,
        e2e_ms=e2e_ms,
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
        ok = parse_duration(value) > 0
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
            re.compile(options["expect_regex"])
        except re.error as exc:
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
