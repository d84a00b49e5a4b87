"""The plain HTTP probe, and the helpers every HTTP-speaking probe shares.

``HttpProbe`` (protocol ``http``) sends one request on a fresh connection and checks its
status, body and latency, with the latency split into phases as blackbox_exporter reports
them (``resolve_ms``, ``connect_ms``, ``tls_ms``, ``processing_ms``, ``transfer_ms``; see
:mod:`probes.httpwire`). Options, all optional:

- ``method``: HTTP method, default ``GET``.
- ``headers``: table of header name to string value.
- ``body``: request body text.
- ``expect_status``: accepted statuses, a list of ints, ``"2xx"``-style classes and
  ``"200-204"``-style ranges (a single value is accepted too); default every status from 200
  to 399. Redirects are not followed, so a 3xx answer is judged as itself.
- ``expect_body_regex``: a regular expression the body (decoded as UTF-8) must contain
  (``re.search``); a mismatch is ``wrong_output``.
- ``expect_json_path``: a JSONPath (``$.status``, ``$.models[0].ready``, ``$["a b"]``) that
  must exist in the JSON body; with ``expect_json_value`` its value must equal that value.
  A body that is not JSON, a missing path or another value is ``wrong_output``.
- ``max_latency``: a duration (``"500ms"``); a slower answer is ``slow`` (ok=False).
- ``tls_ca_file``: a CA bundle to verify https servers with (default: the system's);
  ``tls_insecure = true`` skips verification (a self-signed endpoint, on purpose only).

"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Mapping
from typing import Any

from probes.base import OptionError, Probe, ProbeTarget, now_ms, register
from probes.common import (
    Deadline,
    body_snippet,
    check_bool,
    check_duration,
    check_str,
    duration_ms,
    elapsed_ms,
    make_run,
    over_bound,
)
from probes.httpclient import HttpClient
from probes.httpwire import Exchange, WireError, request, tls_context
from storage.jsontext import loads_json
from storage.records import ProbeRun
from storage.text import compile_regex

SNIPPET_LIMIT = 200
"""How much of an unexpected body an error text quotes."""

_STATUS_CLASS = re.compile(r"^[1-5]xx$", re.IGNORECASE)
_STATUS_RANGE = re.compile(r"^([1-5][0-9][0-9])-([1-5][0-9][0-9])$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- http-specific ------------------------------------------------------------------------


def status_matches(status: int, accepted: list[int | str] | None) -> bool:
    """Whether ``status`` is in ``accepted`` (ints or ``"2xx"`` classes; None: 200-399)."""
    if accepted is None:
        return 200 <= status <= 399
    for want in accepted:
        if isinstance(want, str):
            span = _STATUS_RANGE.match(want)
            if span and int(span.group(1)) <= status <= int(span.group(2)):
                return True
            if not span and str(status)[0] == want[0]:
                return True
        elif status == want:
            return True
    return False


_PATH_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)"""
    r"""|\[(?P<index>-?[0-9]+)\]"""
    r"""|\[(?P<q>["'])(?P<key>(?:(?!(?P=q)).)*)(?P=q)\]"""
)


def parse_json_path(path: str) -> list[str | int]:
    """``$.a[0]["b c"]`` as steps ``["a", 0, "b c"]``; ValueError naming what is wrong.

    A subset of JSONPath: member names, quoted keys and array indexes (negative from the
    end). No wildcards, filters or recursion: a canary checks one value.
    """
    if not path.startswith("$"):
        raise ValueError(f"a JSONPath starts with '$', got {path!r}")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _PATH_STEP.match(path, pos)
        if m is None:
            raise ValueError(f"cannot read {path!r} from position {pos}: {path[pos:]!r}")
        if m.group("name") is not None:
            steps.append(m.group("name"))
        elif m.group("index") is not None:
            steps.append(int(m.group("index")))
        else:
            steps.append(m.group("key"))
        pos = m.end()
    return steps


def json_at(doc: Any, steps: list[str | int]) -> tuple[bool, Any]:
    """(found, value) of ``steps`` in a parsed JSON document."""
    for step in steps:
        in_list = isinstance(step, int) and isinstance(doc, list) and -len(doc) <= step < len(doc)
        in_dict = isinstance(step, str) and isinstance(doc, dict) and step in doc
        if not (in_list or in_dict):
            return False, None
        doc = doc[step]
    return True, doc


def _accepted_statuses(value: object) -> list[int | str] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, list) else [value]  # type: ignore[list-item]


@register
class HttpProbe(Probe):
    """Checks that a URL answers with an accepted status, body and latency."""

    protocol = "http"
    allowed_options = frozenset(
        {
            "method",
            "headers",
            "body",
            "expect_status",
            "expect_body_regex",
            "expect_json_path",
            "expect_json_value",
            "max_latency",
            "tls_ca_file",
            "tls_insecure",
        }
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
            ok_str = isinstance(want, str) and (
                _STATUS_CLASS.match(want)
                or ((m := _STATUS_RANGE.match(want)) and int(m.group(1)) <= int(m.group(2)))
            )
            if not ok_int and not ok_str:
                raise OptionError(
                    "expect_status",
                    'expected HTTP statuses (100-599), classes like "2xx" or ranges like '
                    f'"200-204", got {want!r}',
                )
        if statuses == []:
            raise OptionError("expect_status", "expected at least one status")
        check_str(options, "expect_body_regex")
        if "expect_body_regex" in options:
            try:
                compile_regex(options["expect_body_regex"])
            except ValueError as exc:
                raise OptionError(
                    "expect_body_regex", f"expected a regular expression: {exc}"
                ) from exc
        check_duration(options, "max_latency")
        check_str(options, "expect_json_path")
        if "expect_json_path" in options:
            try:
                parse_json_path(options["expect_json_path"])
            except ValueError as exc:
                raise OptionError("expect_json_path", f"expected a JSONPath: {exc}") from None
        elif "expect_json_value" in options:
            raise OptionError("expect_json_value", "needs expect_json_path (where to look)")
        check_str(options, "tls_ca_file")
        check_bool(options, "tls_insecure")
        if "tls_ca_file" in options:
            try:
                tls_context(options["tls_ca_file"])
            # ValueError: a NUL in the path (found by make fuzz: it escaped check-config).
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise OptionError(
                    "tls_ca_file", f"expected a readable PEM CA bundle: {exc}"
                ) from None

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        opts = target.options
        self._method = str(opts.get("method", "GET")).upper()
        # The configured API key (never in the canary table itself) goes as a bearer token;
        # explicit headers win, for servers that want the key elsewhere.
        self._headers = {**target.auth_headers(), **dict(opts.get("headers") or {})}
        body = opts.get("body")
        self._body = body.encode() if isinstance(body, str) else None
        self._statuses = _accepted_statuses(opts.get("expect_status"))
        regex = opts.get("expect_body_regex")
        self._regex = re.compile(regex) if isinstance(regex, str) else None
        path = opts.get("expect_json_path")
        self._json_path = parse_json_path(path) if isinstance(path, str) else None
        self._tls: ssl.SSLContext | None = None
        self._tls_error: str | None = None
        if target.url.startswith("https://"):
            try:
                self._tls = tls_context(opts.get("tls_ca_file"), bool(opts.get("tls_insecure")))
            except (OSError, ssl.SSLError) as exc:
                # Checked at load; a bundle removed since is this probe's failure, not the
                # agent's: every run says so until it is back (the config is reloaded).
                self._tls_error = f"cannot load tls_ca_file: {exc}"

    async def run(self, session: HttpClient) -> ProbeRun:
        """Send the request once and judge status, body and latency; never raises.

        ``session`` is not used: each run opens its own connection, so the connect and the
        TLS handshake are measured (and a server that stopped accepting is noticed) every
        time, as blackbox_exporter does.
        """
        ts = now_ms()
        if self._tls_error is not None:
            return make_run(self.target, "protocol_error", ts_ms=ts, error=self._tls_error)
        start = time.perf_counter_ns()
        exchange = Exchange()
        try:
            async with Deadline(self.target.timeout_s).scope():
                resp = await request(
                    self.target.url,
                    method=self._method,
                    headers=self._headers,
                    body=self._body,
                    tls=self._tls,
                    exchange=exchange,
                )
        except TimeoutError:
            return make_run(
                self.target,
                "timeout",
                ts_ms=ts,
                e2e_ms=elapsed_ms(start),
                phases_ms=exchange.phases_ms,
                error=f"no answer within {self.target.timeout_s:g}s (during {exchange.phase})",
            )
        except WireError as exc:
            return make_run(
                self.target,
                exc.category,
                ts_ms=ts,
                phases_ms=exchange.phases_ms,
                error=str(exc),
            )
        e2e = elapsed_ms(start)
        phases = exchange.phases_ms
        status = resp.status

        def judged(category: str, error: str | None = None) -> ProbeRun:
            return make_run(
                self.target,
                category,
                ts_ms=ts,
                e2e_ms=e2e,
                status=status,
                phases_ms=phases,
                error=error,
            )

        if not status_matches(status, self._statuses):
            return judged("http_error", f"HTTP {status}: {body_snippet(resp.body)}")
        mismatch = self._body_mismatch(resp.body)
        if mismatch:
            return judged("wrong_output", mismatch)
        slow = over_bound(e2e, duration_ms(self.target.options, "max_latency"), "max_latency")
        return judged("slow" if slow else "ok", slow)

    def _body_mismatch(self, body: bytes) -> str | None:
        if self._regex is not None and not self._regex.search(
            body.decode("utf-8", errors="replace")
        ):
            return f"body does not match {self._regex.pattern!r}: {body_snippet(body)}"
        if self._json_path is None:
            return None
        where = self.target.options["expect_json_path"]
        try:
            doc = loads_json(body)
        except ValueError:
            return f"body is not JSON (expected {where}): {body_snippet(body)}"
        found, value = json_at(doc, self._json_path)
        if not found:
            return f"{where} not found in the body: {body_snippet(body)}"
        if "expect_json_value" in self.target.options:
            want = self.target.options["expect_json_value"]
            if value != want or isinstance(value, bool) != isinstance(want, bool):
                shown = json.dumps(value)[:SNIPPET_LIMIT]
                return f"{where} is {shown}, expected {json.dumps(want, default=str)}"
        return None
