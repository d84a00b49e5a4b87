"""The OpenAI-compatible probe: vLLM, llama.cpp server, SGLang, TGI's Messages API, LM Studio.

One run optionally lists ``GET /v1/models`` (the model must be served), then sends one canary
to ``/v1/chat/completions`` or ``/v1/completions`` and measures it (see
:class:`probes.streaming.GenerationRun` for the metric definitions). The target URL is the
server root; a trailing ``/v1`` is accepted too. The api key goes out as a bearer token.

Options, all optional:

- ``model``: the server's model id; default the target's name.
- ``endpoint``: ``"chat"`` (default) or ``"completions"``.
- ``prompt``: the canary text (a short fixed prompt by default); for chat it becomes one user
  message. ``messages``: a list of ``{role, content}`` for chat instead of ``prompt``.
- ``max_tokens`` (default 16), ``temperature`` (default 0).
- ``stream``: default true. Streaming asks for ``stream_options.include_usage`` so the token
  count comes from the server's usage chunk; a server that sends none gets its token chunks
  counted: from the first non-empty text on, every choice with a delta (``text`` for
  completions) is one token, ``{"content": ""}`` included (llama.cpp streams one chunk per
  token, empty for a token that decodes to nothing); role-only deltas, the finish chunk
  without text and the usage chunk are not tokens, nor is anything before the first
  non-empty text. Non-streamed runs measure e2e only (tokens from ``usage``); ``max_ttft``
  and ``max_itl`` then cannot apply.
- ``check_models``: list the served models first (default true); a missing model is
  ``wrong_output``.
- ``expect_contains``, ``expect_regex``, ``expect_exact``: output checks (``wrong_output``).
- ``max_latency`` (e2e), ``max_ttft``, ``max_itl`` (mean ITL): durations;
  ``min_tokens_per_s``: a number. Any bound crossed is ``slow``.

Stream faults: a chunk that is not JSON, a body ending without ``data: [DONE]`` or without any
content are ``protocol_error``; an ``error`` object in the stream is ``http_error`` with its
message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from probes.base import OptionError, ProbeTarget, artifact_info, register
from probes.common import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROMPT,
    GENERATION_OPTIONS,
    RunFailed,
    check_status,
    error_message,
    parse_data,
    parse_json,
    read_body,
    server_count,
)
from probes.httpclient import HttpClient
from probes.options import Endpoint
from probes.streaming import (
    GenerationProbe,
    GenerationRun,
    StreamTimer,
    read_stream,
)
from probes.streamparse import SSEEvent, SSEParser
from storage.records import ProbeRun

_ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def _check_messages(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise OptionError("messages", "expected a non-empty list of {role, content} tables")
    for i, msg in enumerate(value):
        if (
            not isinstance(msg, Mapping)
            or set(msg) != {"role", "content"}
            or not all(isinstance(msg[k], str) for k in ("role", "content"))
        ):
            raise OptionError(
                "messages", f"messages[{i}]: expected {{role = string, content = string}}"
            )


@register
class OpenAIProbe(GenerationProbe):
    """Sends one canary completion to an OpenAI-compatible server and times it."""

    protocol = "openai"
    flags = ("stream", "check_models")
    allowed_options = GENERATION_OPTIONS | {"endpoint", "messages", *flags}
    own_options: ClassVar[dict[str, Any]] = {"endpoint": Endpoint, "messages": Any}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Validate keys and value types; raise OptionError naming the key."""
        super().check_options(options)
        endpoint = options.get("endpoint", "chat")
        if "messages" in options:
            _check_messages(options["messages"])
            if "prompt" in options:
                raise OptionError("messages", "expected either prompt or messages, not both")
            if endpoint != "chat":
                raise OptionError(
                    "messages",
                    'is only for endpoint = "chat"; expected prompt for endpoint = "completions"',
                )
        if options.get("stream") is False:
            for key in ("max_ttft", "max_itl"):
                if key in options:
                    raise OptionError(key, "needs stream = true (TTFT and ITL need a stream)")

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        opts = target.options
        self._model = str(opts.get("model") or target.name)
        self._chat = opts.get("endpoint", "chat") == "chat"
        self._stream = bool(opts.get("stream", True))
        self._base = self._base.removesuffix("/v1")
        self._path = _ENDPOINTS["chat" if self._chat else "completions"]
        prompt = str(opts.get("prompt") or DEFAULT_PROMPT)
        payload: dict[str, Any] = {
            "model": self._model,
            "max_tokens": int(opts.get("max_tokens", DEFAULT_MAX_TOKENS)),
            "temperature": opts.get("temperature", 0),
            "stream": self._stream,
        }
        if self._chat:
            payload["messages"] = [dict(m) for m in opts.get("messages") or ()] or [
                {"role": "user", "content": prompt}
            ]
        else:
            payload["prompt"] = prompt
        if self._stream:
            payload["stream_options"] = {"include_usage": True}
        self._payload = payload

    async def _attempt(self, session: HttpClient, run: GenerationRun) -> ProbeRun:
        if self.target.options.get("check_models", True):
            await self._check_models(session, run)
        run.step = f"POST {self._path}"
        timer = run.start_timer()
        async with session.post(
            self._base + self._path,
            json=self._payload,
            headers=self.target.auth_headers(),
            timeout_s=run.deadline.timeout(),
        ) as resp:
            run.status = resp.status
            await check_status(resp, run.step)
            if self._stream:
                await read_stream(
                    resp, SSEParser(), timer, self._on_event(timer), end="data: [DONE]"
                )
            else:
                body = await read_body(resp)
                timer.end_ns = time.perf_counter_ns()
                self._read_whole(parse_json(body, run.step), timer, run.step)
        return run.finish()

    async def _check_models(self, session: HttpClient, run: GenerationRun) -> None:
        run.step = "GET /v1/models"
        listing = parse_json(
            await run.get(session, f"{self._base}/v1/models", "models_ms"), run.step
        )
        data = listing.get("data") if isinstance(listing, Mapping) else None
        if not isinstance(data, list):
            raise RunFailed("protocol_error", f"{run.step}: no model list in the answer")
        ids = [str(m.get("id")) for m in data if isinstance(m, Mapping)]
        if self._model not in ids:
            served = (", ".join(ids[:10]) + (", …" if len(ids) > 10 else "")) if ids else "none"
            raise RunFailed("wrong_output", f"model {self._model!r} not served; served: {served}")
        entry = next(m for m in data if isinstance(m, Mapping) and m.get("id") == self._model)
        self.info = {k: entry[k] for k in ("id", "owned_by", "root", "max_model_len") if k in entry}
        # vLLM's root is the path or repository the served name points at: another root under
        # the same name is another model deployed. llama.cpp and others send none.
        self.info.update(artifact_info(entry.get("root"), "served_root"))

    def _on_event(self, timer: StreamTimer) -> Callable[[SSEEvent], bool]:
        chat = self._chat

        def on_event(event: SSEEvent) -> bool:
            if event.data == "[DONE]":
                timer.end_ns = event.arrival_ns
                return True
            chunk = parse_data(event.data)
            choices = chunk.get("choices")
            if choices and isinstance(choices, list) and isinstance(choices[0], Mapping):
                carried = _carried_token(choices[0], chat)
                if carried is not None:
                    timer.token(carried, event.arrival_ns)
            tokens = _completion_tokens(chunk)
            if tokens is not None:
                timer.reported_tokens = tokens
            return False

        return on_event

    def _read_whole(self, answer: Any, timer: StreamTimer, step: str) -> None:
        timer.streamed = False
        if not isinstance(answer, Mapping):
            raise RunFailed("protocol_error", f"{step}: expected a JSON object")
        message = error_message(answer)
        if message is not None:
            raise RunFailed("http_error", f"{step}: server error: {message}")
        choices = answer.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, Mapping):
            raise RunFailed("protocol_error", f"{step}: the answer has no choices")
        if self._chat:
            msg = first.get("message")
            text = msg.get("content") if isinstance(msg, Mapping) else None
        else:
            text = first.get("text")
        timer.final_text = text if isinstance(text, str) else ""
        timer.reported_tokens = _completion_tokens(answer)


def _carried_token(choice: Mapping[str, Any], chat: bool) -> str | None:
    """The text of the token a streamed choice carries (maybe ``""``), or None if it carries
    none.

    A choice carries a token when it has a delta (chat) or a ``text`` (completions), unless
    it is a role-only delta (``{"role": "assistant"}``, with empty or no content) or the
    finish chunk with no text. llama.cpp sends ``{"content": ""}`` for a token that decodes
    to nothing printable: that is a token. vLLM puts the last token's text into the chunk
    with ``finish_reason``: that is one too. The usage chunk has no choices at all.
    """
    if chat:
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return None
        text = delta.get("content")
        role_only = "role" in delta
    else:
        text = choice.get("text")
        if not isinstance(text, str):
            return None
        role_only = False
    text = text if isinstance(text, str) else ""
    if not text and (role_only or choice.get("finish_reason") is not None):
        return None
    return text


def _completion_tokens(obj: Mapping[str, Any]) -> int | None:
    usage = obj.get("usage")
    if isinstance(usage, Mapping):
        return server_count(usage.get("completion_tokens"))
    return None
