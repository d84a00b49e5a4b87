"""The Ollama probe: ``/api/tags``, then a streamed ``/api/generate`` canary (NDJSON).

Our own measurement (TTFT, ITL, e2e, tokens/s, as :class:`probes.streaming.GenerationRun`
defines them) is kept beside Ollama's own counters from the final ``"done": true`` object:
``phases_ms`` gets ``server_eval_ms`` (eval_duration), ``server_prompt_eval_ms``,
``server_total_ms`` and ``server_load_ms``; the series ``probe.server_eval_tokens_per_s`` gets
eval_count / eval_duration; ``output_tokens`` is eval_count. A gap between the two views points
at the network or the HTTP layer rather than the model. Without eval_count the token lines are
counted: from the first non-empty ``response`` on, every ``"done": false`` line is one token,
an empty ``response`` included (``phases_ms["counted_chunks"]`` holds that count either way).

Options, all optional: ``model`` (default the target's name; ``llama3`` matches the tag
``llama3:latest`` as Ollama itself resolves it), ``prompt``, ``max_tokens`` (sent as
``options.num_predict``, default 16), ``temperature`` (default 0), ``expect_contains``,
``expect_regex``, ``expect_exact``, ``max_latency``, ``max_ttft``, ``max_itl``,
``min_tokens_per_s``, and ``check_tags`` (list the local models first, default true; a missing
model is ``wrong_output``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from probes.base import ProbeTarget, artifact_info, register
from probes.common import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROMPT,
    GENERATION_OPTIONS,
    RunFailed,
    check_status,
    parse_json,
    server_count,
    stream_object,
)
from probes.httpclient import HttpClient
from probes.streaming import (
    GenerationProbe,
    GenerationRun,
    StreamTimer,
    read_stream,
)
from probes.streamparse import JSONLine, NDJSONParser
from storage.records import ProbeRun

_SERVER_PHASES = {
    "eval_duration": "server_eval_ms",
    "prompt_eval_duration": "server_prompt_eval_ms",
    "total_duration": "server_total_ms",
    "load_duration": "server_load_ms",
}


def tag_matches(wanted: str, name: str) -> bool:
    """Whether a listed model ``name`` is ``wanted`` (an untagged name means ``:latest``)."""
    return name == wanted or (":" not in wanted and name == f"{wanted}:latest")


def _count(value: object) -> int | None:
    return server_count(value)


@register
class OllamaProbe(GenerationProbe):
    """Sends one canary generation to Ollama and times it."""

    protocol = "ollama"
    flags = ("check_tags",)
    allowed_options = GENERATION_OPTIONS | set(flags)

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        opts = target.options
        self._model = str(opts.get("model") or target.name)
        self._payload = {
            "model": self._model,
            "prompt": str(opts.get("prompt") or DEFAULT_PROMPT),
            "stream": True,
            "options": {
                "num_predict": int(opts.get("max_tokens", DEFAULT_MAX_TOKENS)),
                "temperature": opts.get("temperature", 0),
            },
        }

    async def _attempt(self, session: HttpClient, run: GenerationRun) -> ProbeRun:
        if self.target.options.get("check_tags", True):
            await self._check_tags(session, run)
        run.step = "POST /api/generate"
        timer = run.start_timer()
        final: dict[str, Any] = {}
        async with session.post(
            f"{self._base}/api/generate",
            json=self._payload,
            headers=self.target.auth_headers(),
            timeout_s=run.deadline.timeout(),
        ) as resp:
            run.status = resp.status
            await check_status(resp, run.step)
            on_line = _on_line(timer, final)
            await read_stream(resp, NDJSONParser(), timer, on_line, end='"done": true')
        self._keep_server_view(final, run)
        return run.finish()

    async def _check_tags(self, session: HttpClient, run: GenerationRun) -> None:
        run.step = "GET /api/tags"
        tags = parse_json(await run.get(session, f"{self._base}/api/tags", "tags_ms"), run.step)
        models = tags.get("models") if isinstance(tags, Mapping) else None
        if not isinstance(models, list):
            raise RunFailed("protocol_error", f"{run.step}: no model list in the answer")
        listed = [m for m in models if isinstance(m, Mapping)]
        entry = next((m for m in listed if tag_matches(self._model, str(m.get("name", "")))), None)
        if entry is None:
            names = [str(m.get("name")) for m in listed]
            shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "") if names else "none"
            raise RunFailed("wrong_output", f"model {self._model!r} not present; local: {shown}")
        details = entry.get("details")
        info = {
            "name": entry.get("name"),
            "digest": entry.get("digest"),
            "size_bytes": entry.get("size"),
            **artifact_info(
                entry.get("digest"), "ollama_digest", _time_ms(entry.get("modified_at"))
            ),
        }
        if isinstance(details, Mapping):
            for key in ("family", "parameter_size", "quantization_level"):
                if key in details:
                    info[key] = details[key]
        self.info = info

    def _keep_server_view(self, final: Mapping[str, Any], run: GenerationRun) -> None:
        """Ollama's own counters (nanoseconds) beside our measurement."""
        for key, phase in _SERVER_PHASES.items():
            value = _count(final.get(key))
            if value is not None:
                run.phases[phase] = value / 1e6
        eval_count = _count(final.get("eval_count"))
        eval_ns = _count(final.get("eval_duration"))
        if run.timer is not None and eval_count is not None:
            run.timer.reported_tokens = eval_count
        if eval_count and eval_ns:
            self.add_sample(
                "probe.server_eval_tokens_per_s", eval_count / (eval_ns / 1e9), run.ts_ms
            )


def _on_line(timer: StreamTimer, final: dict[str, Any]) -> Callable[[JSONLine], bool]:
    def on_line(line: JSONLine) -> bool:
        obj = stream_object(line.value, repr(line.value))
        if obj.get("done") is True:
            # The final object's "response" is empty: a token only if it has text.
            timer.content(obj.get("response"), line.arrival_ns)
            timer.end_ns = line.arrival_ns
            final.update(obj)
            return True
        # Every other line carries one token, its "response" empty when it decodes to nothing.
        timer.token(obj.get("response"), line.arrival_ns)
        return False

    return on_line


def _time_ms(value: object) -> int | None:
    """Ollama's ``modified_at`` (RFC 3339, nanoseconds and an offset) as epoch ms."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:  # not what Ollama sends; a naive time would be read as local
        return None
    ms = int(when.timestamp() * 1000)
    return ms if ms > 0 else None  # Go's zero time (0001-01-01) means "unknown"
