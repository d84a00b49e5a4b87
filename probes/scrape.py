"""The metrics scrape probe: a model server's own Prometheus ``/metrics``, kept as series.

Protocol ``metrics``; the URL is the metrics endpoint itself (``http://127.0.0.1:8000/metrics``;
Triton serves it on its own port, 8002 by default). One run is one ``GET``, following redirects
as Prometheus does; the page is parsed (:mod:`probes.promtext`), the configured metrics are
queued as samples, and the run is judged:

- ``ok``, or ``slow`` over ``max_latency``;
- ``stalled`` when requests are running and the progress counter has not moved for
  ``stall_after`` scrapes in a row (:mod:`probes.stall`); the error text says how many requests,
  which counter, its value and for how long;
- ``http_error`` for a non-2xx answer, ``protocol_error`` for a body that is not the Prometheus
  text format (naming the first bad line), ``refused`` and ``timeout`` as usual.

Kept metrics become the series ``model.metric.<name>`` (``:`` written as ``_``, so
``vllm:num_requests_running`` is ``model.metric.vllm_num_requests_running``), labelled with the
model and the metric's own labels; a server label called ``model`` is renamed
``exported_model``, as Prometheus does, so it cannot hide Vigil's. Gauges are stored as read.
**Counters are stored raw, as the server's running total**: rates are the reader's job (a
difference over time, minding resets), as in Prometheus. Histograms and summaries keep their
``_sum`` and ``_count`` (their buckets are too many series for what they tell here).

Options (``[model.canary]``):

- ``preset``: ``vllm``, ``llamacpp``, ``tgi`` or ``triton``: the server's usual metric names
  (:data:`PRESETS`), including the two that stall detection reads.
- ``metrics``: more metric names to keep, added to the preset's (without a preset, the list).
- ``running``, ``tokens``: the gauge of requests in progress and the counter that moves while
  they make progress, overriding the preset's; without a preset, give both or neither (neither:
  no stall detection, only series).
- ``stall_after``: flat scrapes in a row that make a stall, default 3. The probe interval times
  this is how long a stall must last; make it longer than the slowest decode step.
- ``labels``: a table of label values a sample must carry to be kept and counted
  (``{ model_name = "meta-llama/Llama-3.1-8B-Instruct" }`` for one model of several).
- ``max_latency``: a duration; a slower scrape is ``slow``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from probes.base import OptionError, Probe, ProbeTarget, now_ms, register
from probes.common import (
    Deadline,
    body_snippet,
    check_duration,
    classify_exception,
    duration_ms,
    elapsed_ms,
    make_run,
    over_bound,
    read_body,
)
from probes.httpclient import HttpClient, WireError
from probes.promtext import (
    LABEL_NAME,
    METRIC_NAME,
    ExpositionError,
    Value,
    parse_exposition,
    select,
    series_name,
    total,
)
from probes.stall import StallDetector
from storage.records import ProbeRun, Sample, make_labels

DEFAULT_STALL_AFTER = 3
PAGE_LIMIT = 16 << 20
"""A metrics page larger than this is refused (a server exporting per-request series)."""
MAX_SERIES = 1000
"""Kept samples per scrape beyond this are dropped, so a label exploding on the server side
cannot flood the database; ``info["dropped_series"]`` says how many."""
ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"
"""Ask for the classic text format: prometheus-client servers send OpenMetrics only when asked."""


@dataclass(frozen=True, slots=True)
class Preset:
    """A server's metric names: the stall pair and what else is worth keeping."""

    running: str
    tokens: str
    keep: tuple[str, ...]


PRESETS: Mapping[str, Preset] = {
    # vLLM counts generated tokens every engine step. gpu_cache_usage_perc is the V0 name,
    # kv_cache_usage_perc the V1 one; whichever the server has is kept.
    "vllm": Preset(
        running="vllm:num_requests_running",
        tokens="vllm:generation_tokens_total",
        keep=(
            "vllm:num_requests_waiting",
            "vllm:gpu_cache_usage_perc",
            "vllm:kv_cache_usage_perc",
            "vllm:prompt_tokens_total",
            "vllm:num_preemptions_total",
            "vllm:request_success_total",
            "vllm:time_to_first_token_seconds",
        ),
    ),
    # llama.cpp (llama-server --metrics) adds to tokens_predicted_total only when a request
    # finishes, so a long generation would look flat; n_decode_total moves on every decode.
    "llamacpp": Preset(
        running="llamacpp:requests_processing",
        tokens="llamacpp:n_decode_total",
        keep=(
            "llamacpp:requests_deferred",
            "llamacpp:kv_cache_usage_ratio",
            "llamacpp:kv_cache_tokens",
            "llamacpp:tokens_predicted_total",
            "llamacpp:prompt_tokens_total",
        ),
    ),
    # TGI records tgi_request_generated_tokens when a request ends (same problem as above);
    # tgi_batch_inference_count counts every prefill and decode forward pass.
    "tgi": Preset(
        running="tgi_batch_current_size",
        tokens="tgi_batch_inference_count",
        keep=(
            "tgi_queue_size",
            "tgi_batch_current_max_tokens",
            "tgi_request_count",
            "tgi_request_success",
            "tgi_request_failure",
            "tgi_request_generated_tokens",
            "tgi_request_input_length",
        ),
    ),
    # Triton has no token counter: requests waiting for a backend that completes none is the
    # closest thing to a stalled generation it shows.
    "triton": Preset(
        running="nv_inference_pending_request_count",
        tokens="nv_inference_count",
        keep=(
            "nv_inference_request_success",
            "nv_inference_request_failure",
            "nv_inference_exec_count",
            "nv_inference_queue_duration_us",
            "nv_inference_request_duration_us",
            "nv_gpu_utilization",
            "nv_gpu_memory_used_bytes",
        ),
    ),
}


def _check_name(options: Mapping[str, Any], key: str) -> None:
    value = options.get(key)
    if key in options and not (isinstance(value, str) and METRIC_NAME.match(value)):
        raise OptionError(key, f"expected a Prometheus metric name, got {value!r}")


@register
class MetricsScrapeProbe(Probe):
    """Scrapes a model server's Prometheus metrics; keeps series and detects stalls."""

    protocol = "metrics"
    allowed_options = frozenset(
        {"preset", "metrics", "running", "tokens", "stall_after", "labels", "max_latency"}
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Validate keys and value types; raise OptionError naming the key."""
        super().check_options(options)
        preset = options.get("preset")
        if "preset" in options and not (isinstance(preset, str) and preset in PRESETS):
            raise OptionError("preset", f"expected one of {', '.join(PRESETS)}, got {preset!r}")
        metrics = options.get("metrics", [])
        if not isinstance(metrics, list):
            raise OptionError("metrics", f"expected a list of metric names, got {metrics!r}")
        for name in metrics:
            if not (isinstance(name, str) and METRIC_NAME.match(name)):
                raise OptionError("metrics", f"expected Prometheus metric names, got {name!r}")
        _check_name(options, "running")
        _check_name(options, "tokens")
        if preset is None:
            given = [k for k in ("running", "tokens") if k in options]
            if len(given) == 1:
                missing = "tokens" if given == ["running"] else "running"
                raise OptionError(
                    missing,
                    f"missing; without a preset, stall detection needs both running and "
                    f"tokens (only {given[0]} is set)",
                )
            if not metrics and not given:
                raise OptionError(
                    "metrics",
                    f"missing; expected a preset ({', '.join(PRESETS)}) or a list of "
                    f"metric names to keep",
                )
        after = options.get("stall_after", DEFAULT_STALL_AFTER)
        if not isinstance(after, int) or isinstance(after, bool) or after < 1:
            raise OptionError("stall_after", f"expected a whole number >= 1, got {after!r}")
        labels = options.get("labels", {})
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and LABEL_NAME.match(k) and isinstance(v, str)
            for k, v in labels.items()
        ):
            raise OptionError(
                "labels", f"expected a table of label names to string values, got {labels!r}"
            )
        check_duration(options, "max_latency")

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        opts = target.options
        preset = PRESETS.get(str(opts.get("preset")))
        running = opts.get("running") or (preset.running if preset else None)
        tokens = opts.get("tokens") or (preset.tokens if preset else None)
        self._stall_pair: tuple[str, str] | None = (
            (str(running), str(tokens)) if running and tokens else None
        )
        keep = list(preset.keep if preset else ()) + list(opts.get("metrics") or ())
        self._wanted = tuple(dict.fromkeys([*keep, *(self._stall_pair or ())]))
        self._labels: dict[str, str] = dict(opts.get("labels") or {})
        self._detector = StallDetector(int(opts.get("stall_after", DEFAULT_STALL_AFTER)))
        self._max_latency_ms = duration_ms(opts, "max_latency")
        self._headers = {"Accept": ACCEPT, **target.auth_headers()}
        self.info = {
            "preset": opts.get("preset"),
            "running": self._stall_pair[0] if self._stall_pair else None,
            "tokens": self._stall_pair[1] if self._stall_pair else None,
            "stall_after": self._detector.after,
        }

    async def run(self, session: HttpClient) -> ProbeRun:
        """Scrape once, keep the series, judge stall and latency; never raises."""
        ts = now_ms()
        deadline = Deadline(self.target.timeout_s)
        start = time.perf_counter_ns()
        try:
            async with (
                deadline.scope(),
                session.get(
                    self.target.url,
                    headers=self._headers,
                    timeout_s=deadline.timeout(),
                ) as resp,
            ):
                status = resp.status
                body = await read_body(resp, PAGE_LIMIT if status < 300 else 4096)
        except (WireError, TimeoutError, ValueError) as exc:
            category, error = classify_exception(exc)
            e2e = elapsed_ms(start) if category == "timeout" else None
            return make_run(self.target, category, ts_ms=ts, error=error, e2e_ms=e2e)
        e2e = elapsed_ms(start)
        phases = {"scrape": e2e}

        def result(category: str, error: str | None = None) -> ProbeRun:
            return make_run(
                self.target,
                category,
                ts_ms=ts,
                error=error,
                e2e_ms=e2e,
                status=status,
                phases_ms=phases,
            )

        if not 200 <= status <= 299:
            return result("http_error", f"HTTP {status}: {body_snippet(body)}")
        if len(body) >= PAGE_LIMIT:
            return result("protocol_error", f"metrics page over {PAGE_LIMIT >> 20} MiB")
        parse_start = time.perf_counter_ns()
        try:
            # A busy vLLM page is hundreds of KiB of histograms; parsing is pure Python, so it
            # runs off the event loop where it cannot delay other probes' timings.
            values = await asyncio.to_thread(self._read, body)
        except ExpositionError as exc:
            return result("protocol_error", str(exc))
        phases["parse"] = elapsed_ms(parse_start)
        self._keep(values, ts)
        stalled = self._judge(values, ts)
        if stalled is not None:
            return result("stalled", stalled)
        slow = over_bound(e2e, self._max_latency_ms, "max_latency")
        return result("slow", slow) if slow else result("ok")

    def _read(self, body: bytes) -> list[Value]:
        text = body.decode("utf-8", errors="replace")
        return select(parse_exposition(text), self._wanted, self._labels)

    def _keep(self, values: list[Value], ts: int) -> None:
        """Queue the kept values as samples, at most :data:`MAX_SERIES` of them."""
        for v in values[:MAX_SERIES]:
            labels = {("exported_model" if k == "model" else k): val for k, val in v.labels}
            # Built here rather than through add_sample(**labels): a server label may be called
            # `name` or `value`, which keyword arguments cannot carry.
            self._samples.append(
                Sample(
                    series_name(v.name),
                    make_labels(labels, model=self.target.name),
                    ts,
                    v.value,
                )
            )
        self.info["dropped_series"] = max(len(values) - MAX_SERIES, 0)

    def _judge(self, values: list[Value], ts: int) -> str | None:
        """Feed the stall detector; the ``stalled`` error text, or None."""
        if self._stall_pair is None:
            return None
        running_name, tokens_name = self._stall_pair
        running = total(values, running_name)
        tokens = total(values, tokens_name)
        # Servers create some metrics lazily (TGI's appear with the first batch), so an absent
        # one reads as zero, as Prometheus treats a counter not yet incremented. `missing`
        # shows a misspelt name in the API.
        self.info["missing"] = [
            name for name, v in ((running_name, running), (tokens_name, tokens)) if v is None
        ]
        stall = self._detector.observe(ts, running or 0.0, tokens or 0.0)
        return stall.describe(running_name, tokens_name) if stall else None
