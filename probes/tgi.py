"""The Text Generation Inference probe: ``/health``, then a streamed ``/generate_stream`` canary.

Each SSE event's data is ``{"token": {"id", "text", "logprob", "special"}, "generated_text",
"details"}``; the last event carries ``generated_text`` (and, as the probe asks for
``details``, ``details.generated_tokens``). Special tokens (BOS/EOS) are not content, so TTFT is
the first real text. Output tokens are ``details.generated_tokens``, else the token events
counted: from the first non-empty text on, every event with a ``token`` is one, special or empty
text included; the checked output is ``generated_text``. Metrics as
:class:`probes.streaming.GenerationRun` defines them.

Options, all optional: ``model`` (only a label here: a TGI server serves one model; default
the target's name), ``prompt``, ``max_tokens`` (sent as ``max_new_tokens``, default 16),
``temperature`` (TGI refuses 0, so 0 means "not sent", which is greedy decoding),
``expect_contains``, ``expect_regex``, ``expect_exact``, ``max_latency``, ``max_ttft``,
``max_itl``, ``min_tokens_per_s``, and ``check_health`` (ask ``/health`` first, default true;
non-2xx is ``http_error``; then ``/info`` for the model id and the repository revision served,
``model_sha``, whose changes are deployments; a server without ``/info`` still passes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from probes.base import ProbeTarget, artifact_info, register
from probes.common import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROMPT,
    GENERATION_OPTIONS,
    RunFailed,
    check_status,
    parse_data,
    parse_json,
    server_count,
)
from probes.httpclient import HttpClient, WireError
from probes.streaming import (
    GenerationProbe,
    GenerationRun,
    StreamTimer,
    read_stream,
)
from probes.streamparse import SSEEvent, SSEParser
from storage.records import ProbeRun


@register
class TgiProbe(GenerationProbe):
    """Sends one canary generation to a TGI server and times it."""

    protocol = "tgi"
    flags = ("check_health",)
    allowed_options = GENERATION_OPTIONS | set(flags)

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        opts = target.options
        parameters: dict[str, Any] = {
            "max_new_tokens": int(opts.get("max_tokens", DEFAULT_MAX_TOKENS)),
            "details": True,
        }
        temperature = opts.get("temperature", 0)
        if temperature > 0:
            parameters["temperature"] = temperature
        self._payload = {
            "inputs": str(opts.get("prompt") or DEFAULT_PROMPT),
            "parameters": parameters,
        }

    async def _attempt(self, session: HttpClient, run: GenerationRun) -> ProbeRun:
        if self.target.options.get("check_health", True):
            run.step = "GET /health"
            await run.get(session, f"{self._base}/health", "health_ms")
            await self._read_info(session, run)
        run.step = "POST /generate_stream"
        timer = run.start_timer()
        async with session.post(
            f"{self._base}/generate_stream",
            json=self._payload,
            headers=self.target.auth_headers(),
            timeout_s=run.deadline.timeout(),
        ) as resp:
            run.status = resp.status
            await check_status(resp, run.step)
            on_event = _on_event(timer)
            await read_stream(resp, SSEParser(), timer, on_event, end="the final generated_text")
        return run.finish()

    async def _read_info(self, session: HttpClient, run: GenerationRun) -> None:
        run.step = "GET /info"
        try:
            info = parse_json(await run.get(session, f"{self._base}/info", "info_ms"), run.step)
        except (RunFailed, WireError):
            return  # /info is for the record, not part of the verdict
        if isinstance(info, Mapping):
            keys = ("model_id", "model_sha", "model_dtype", "version")
            self.info = {k: info[k] for k in keys if k in info}
            self.info.update(artifact_info(info.get("model_sha"), "tgi_model_sha"))


def _on_event(timer: StreamTimer) -> Callable[[SSEEvent], bool]:
    def on_event(event: SSEEvent) -> bool:
        if event.event == "error":
            raise RunFailed("http_error", f"server error in stream: {event.data[:200]}")
        obj = parse_data(event.data)
        token = obj.get("token")
        if isinstance(token, Mapping):
            # Every event carries one token; a special one (BOS, EOS) has no text to show.
            special = token.get("special") is True
            timer.token("" if special else token.get("text"), event.arrival_ns)
        if obj.get("generated_text") is None and obj.get("details") is None:
            return False
        timer.end_ns = event.arrival_ns
        if isinstance(obj.get("generated_text"), str):
            timer.final_text = obj["generated_text"]
        details = obj.get("details")
        tokens = (
            server_count(details.get("generated_tokens")) if isinstance(details, Mapping) else None
        )
        if tokens is not None:
            timer.reported_tokens = tokens
        return True

    return on_event
