"""The plain HTTP probe, and the helpers every HTTP-speaking probe shares.

``HttpProbe`` (protocol ``http``) sends one request and checks its status, body and latency.
Options, all optional:

- ``method``: HTTP method, default ``GET``.
- ``headers``: table of header name to string value.
- ``body``: request body text.
- ``expect_status``: accepted statuses, a list of ints and ``"2xx"``-style class strings (a
  single value is accepted too); default every status from 200 to 399. Redirects are not
  followed, so a 3xx answer is judged as itself.
- ``expect_body_regex``: a regular expression the body (decoded as UTF-8) must contain
  (``re.search``); a mismatch is ``wrong_output``.
- ``max_latency``: a duration (``"500ms"``); a slower answer is ``slow`` (ok=False).

"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from probes.base import OptionError, Probe, ProbeTarget, now_ms, register
from probes.common import (
    Deadline,
    body_snippet,
    check_duration,
    check_str,
    classify_exception,
    duration_ms,
    elapsed_ms,
    make_run,
    over_bound,
)
from storage.records import ProbeRun

SNIPPET_LIMIT = 200
"""How much of an unexpected body an error text quotes."""

_STATUS_CLASS = re.compile(r"^[1-5]xx$", re.IGNORECASE)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- http-specific ------------------------------------------------------------------------


def status_matches(status: int, accepted: list[int | str] | None) -> bool:
    """Whether ``status`` is in ``accepted`` (ints or ``"2xx"`` classes; None: 200-399)."""
    if accepted is None:
        return 200 <= status <= 399
    for want in accepted:
        if isinstance(want, str):
            if str(status)[0] == want[0]:
                return True
        elif status == want:
            return True
    return False


def _accepted_statuses(value: object) -> list[int | str] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, list) else [value]  # type: ignore[list-item]


@register
class HttpProbe(Probe):
    """Checks that a URL answers with an accepted status, body and latency."""

    protocol = "http"
    allowed_options = frozenset(
        {"method", "headers", "body", "expect_status", "expect_body_regex", "max_latency"}
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Validate keys and value types; raise OptionError naming the key."""
        super().check_options(options)
        method = options.get("method")
        if method is not None and (not isinstance(method, str) or method.upper() not in _METHODS):
            raise OptionError(
                "method", f"expected one of {', '.join(sorted(_METHODS))}, got {method!r}"
            )
        headers = options.get("headers")
        if headers is not None and (
            not isinstance(headers, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise OptionError("headers", "expected a table of header names to string values")
        if "body" in options and not isinstance(options["body"], str):
            raise OptionError("body", f"expected a string, got {options['body']!r}")
        statuses = _accepted_statuses(options.get("expect_status"))
        for want in statuses or ():
            ok_int = isinstance(want, int) and not isinstance(want, bool) and 100 <= want <= 599
            if not ok_int and not (isinstance(want, str) and _STATUS_CLASS.match(want)):
                raise OptionError(
                    "expect_status",
                    f'expected HTTP statuses (100-599) or classes like "2xx", got {want!r}',
                )
        if statuses == []:
            raise OptionError("expect_status", "expected at least one status")
        check_str(options, "expect_body_regex")
        if "expect_body_regex" in options:
            try:
                re.compile(options["expect_body_regex"])
            except re.error as exc:
                raise OptionError(
                    "expect_body_regex", f"expected a regular expression: {exc}"
                ) from exc
        check_duration(options, "max_latency")

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        opts = target.options
        self._method = str(opts.get("method", "GET")).upper()
        # The configured API key (never in the canary table itself) goes as a bearer token;
        # explicit headers win, for servers that want the key elsewhere.
        self._headers = {**target.auth_headers(), **dict(opts.get("headers") or {})}
        self._body: str | None = opts.get("body")
        self._statuses = _accepted_statuses(opts.get("expect_status"))
        regex = opts.get("expect_body_regex")
        self._regex = re.compile(regex) if isinstance(regex, str) else None

    async def run(self, session: aiohttp.ClientSession) -> ProbeRun:
        """Send the request once and judge status, body and latency; never raises."""
        ts = now_ms()
        start = time.perf_counter_ns()
        try:
            async with session.request(
                self._method,
                self.target.url,
                headers=self._headers,
                data=self._body,
                allow_redirects=False,
                timeout=Deadline(self.target.timeout_s).timeout(),
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            category, error = classify_exception(exc)
            e2e = elapsed_ms(start) if category == "timeout" else None
            return make_run(self.target, category, ts_ms=ts, error=error, e2e_ms=e2e)
        e2e = elapsed_ms(start)
        phases = {"request": e2e}
        if not status_matches(status, self._statuses):
            return make_run(
                self.target,
                "http_error",
                ts_ms=ts,
                e2e_ms=e2e,
                status=status,
                phases_ms=phases,
                error=f"HTTP {status}: {body_snippet(body)}",
            )
        if self._regex is not None and not self._regex.search(
            body.decode("utf-8", errors="replace")
        ):
            return make_run(
                self.target,
                "wrong_output",
                ts_ms=ts,
                e2e_ms=e2e,
                status=status,
                phases_ms=phases,
                error=f"body does not match {self._regex.pattern!r}: {body_snippet(body)}",
            )
        slow = over_bound(e2e, duration_ms(self.target.options, "max_latency"), "max_latency")
        return make_run(
            self.target,
            "slow" if slow else "ok",
            ts_ms=ts,
            e2e_ms=e2e,
            status=status,
            phases_ms=phases,
            error=slow,
        )
