"""A fake LLM server speaking OpenAI, Ollama and TGI, with controlled timing and faults.

One aiohttp app serves all three APIs:

- OpenAI: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``
  (streamed as SSE or not; the usage chunk when ``stream_options.include_usage`` asks).
- Ollama: ``GET /api/tags``, ``POST /api/generate`` (NDJSON, the final object with Ollama's
  own counters, durations in ns as Ollama reports them).
- TGI: ``GET /health``, ``POST /generate_stream`` (SSE token events).

Streams send ``min(tokens, max_tokens)`` tokens: the first content after ``ttft_ms``, then one
every ``itl_ms`` (``asyncio.sleep`` between writes, each token in its own write). Real
servers send role-only / empty / special chunks first; so does this one, immediately, unless
``role_first`` is off (``empty_preamble`` adds more empty ones). Token counts: the server's
own (the usage chunk, ``eval_count``, ``details.generated_tokens``) unless ``usage`` is off;
``empty_tokens`` makes some tokens decode to nothing, each still its own chunk with empty
text, as llama.cpp streams them. Faults on demand (see :class:`Behaviour`): malformed units,
an error object, a disconnect or a stall after K tokens, slowloris (one byte every X ms),
error statuses, wrong content, a missing end marker.

Steering: in-process tests change ``app[STATE].behaviour``; a subprocess instance takes
``POST /_control`` with Behaviour fields as JSON (``"reset": true`` also clears the record).
Every generation request is recorded (headers, body, handler start, the perf_counter_ns before
and after each content write): ``GET /_stats``. Timestamps are ``time.perf_counter_ns()``,
which is CLOCK_MONOTONIC on Linux, shared by all processes, so a client on the same host can
compare.

Run standalone: ``python -m tests.fakes.llm_server --port 0 --ttft-ms 50 --itl-ms 20``; it
prints ``listening on http://127.0.0.1:PORT`` and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import itertools
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_MODEL = "fake-llm"
DEFAULT_REPLY = "The quick brown fox jumps over the lazy dog. "


@dataclass
class Behaviour:
    """How the fake answers. Token counts K are content tokens sent before the fault."""

    tokens: int = 16
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    reply: str = DEFAULT_REPLY
    """Token i is word i of the reply (cycled), trailing space included."""
    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    accept_any_model: bool = False
    role_first: bool = True
    """OpenAI: a role-only then an empty-content chunk first; TGI: a special BOS token."""
    empty_preamble: int = 0
    """This many more empty-text chunks before the first token, sent at once with the
    role/BOS ones (OpenAI ``{"content": ""}`` or ``""``, Ollama ``"response": ""``, TGI
    special tokens with no text). Not tokens: the server's count leaves them out."""
    empty_tokens: list[int] = field(default_factory=list)
    """Indices (0-based) of the generated tokens that decode to nothing printable: each is
    still sent as its own timed chunk, with empty text, and counted by the server. The
    other tokens spell the reply in order."""
    usage: bool = True
    """Send the server's own token count: OpenAI's usage chunk when the client asks for it,
    Ollama's ``eval_count``, TGI's ``details.generated_tokens``."""
    usage_tokens: int | None = None
    """Report this many tokens in usage/eval_count/details instead of the true count."""
    done: bool = True
    """Send the end marker ([DONE], ``done: true``, the final generated_text)."""
    status: int = 200
    error_body: str = '{"error": {"message": "internal error", "type": "server_error"}}'
    echo_key_status: int | None = None
    """Refuse generation requests with this status, echoing the Authorization header."""
    health_status: int = 200
    info_status: int = 200
    """TGI's /info: a non-200 answers with that status and no body."""
    malformed_after: int | None = None
    error_after: int | None = None
    disconnect_after: int | None = None
    stall_after: int | None = None
    slowloris_ms: float | None = None
    record: bool = True
    revision: str = "rev-1"
    """What is deployed: Ollama's digest, TGI's model_sha and vLLM's root derive from it."""
    modified_at: str = "2026-11-01T09:00:00.123456789+01:00"
    """Ollama's modified_at for the listed models."""


@dataclass
class Served:
    """One generation request as the fake saw and answered it."""

    path: str
    headers: dict[str, str]
    start_ns: int
    body: Any = None
    write_ns: list[int] = field(default_factory=list)
    """perf_counter_ns right before each token's write (empty-text tokens included): the
    token is on its way."""
    sent_ns: list[int] = field(default_factory=list)
    """perf_counter_ns right after each token's write returned (on a loaded host the
    receiver may already have run by then: loopback wake-ups can preempt the sender)."""
    end_ns: int | None = None


class FakeState:
    """The app's mutable state: the behaviour and the record of what was served."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.served: list[Served] = []
        self.release = asyncio.Event()
        """Set at shutdown: frees handlers stalled forever."""

    def begin(self, request: web.Request) -> Served:
        rec = Served(request.path, dict(request.headers), time.perf_counter_ns())
        if self.behaviour.record:
            self.served.append(rec)
        return rec

    def texts(self, n: int) -> list[str]:
        """The text of each of ``n`` tokens: ``""`` at ``empty_tokens``, else the reply's
        next word (cycled)."""
        words = re.findall(r"\S+\s*", self.behaviour.reply) or ["x "]
        empty = set(self.behaviour.empty_tokens)
        spelled = itertools.cycle(words)
        return ["" if i in empty else next(spelled) for i in range(n)]


STATE = web.AppKey("fake_llm", FakeState)


# --- streaming engine --------------------------------------------------------------------

PRE, CONTENT, POST = "pre", "content", "post"
Frame = tuple[str, bytes]


async def _stream(
    request: web.Request,
    rec: Served,
    frames: list[Frame],
    content_type: str,
    faults: dict[str, bytes],
) -> web.StreamResponse:
    """Send frames with the behaviour's timing and faults; PRE frames go out at once."""
    state = request.app[STATE]
    b = state.behaviour
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        if b.slowloris_ms is not None:
            data = b"".join(payload for _, payload in frames)
            for i in range(len(data)):
                await resp.write(data[i : i + 1])
                await asyncio.sleep(b.slowloris_ms / 1000)
            return resp
        sent = 0
        for kind, payload in frames:
            if kind == CONTENT:
                if b.stall_after == sent:
                    await state.release.wait()
                    return resp
                if b.disconnect_after == sent:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if b.malformed_after == sent:
                    await resp.write(faults["malformed"])
                    break
                if b.error_after == sent:
                    await resp.write(faults["error"])
                    break
                await asyncio.sleep((b.ttft_ms if sent == 0 else b.itl_ms) / 1000)
                rec.write_ns.append(time.perf_counter_ns())
            await resp.write(payload)
            if kind == CONTENT:
                rec.sent_ns.append(time.perf_counter_ns())
                sent += 1
        rec.end_ns = time.perf_counter_ns()
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client went away (or was meant to): nothing left to send
    return resp


def _refusal(request: web.Request, b: Behaviour) -> web.Response | None:
    if b.echo_key_status is not None:
        got = request.headers.get("Authorization", "")
        body = {"error": {"message": f"Incorrect API key provided: {got}", "type": "auth"}}
        return web.json_response(body, status=b.echo_key_status)
    if b.status != 200:
        return web.Response(status=b.status, text=b.error_body, content_type="application/json")
    return None


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}') from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body is not an object"}')
    return body


def _known(b: Behaviour, model: object) -> bool:
    return b.accept_any_model or model in b.models


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


# --- OpenAI ------------------------------------------------------------------------------


async def models(request: web.Request) -> web.Response:
    b = request.app[STATE].behaviour
    data = [
        {
            "id": m,
            "object": "model",
            "owned_by": "fake",
            "root": f"/models/{m}@{b.revision}",
            "max_model_len": 4096,
        }
        for m in b.models
    ]
    return web.json_response({"object": "list", "data": data})


async def chat(request: web.Request) -> web.StreamResponse:
    return await _openai(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, chat=False)


async def _openai(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    b = state.behaviour
    rec = state.begin(request)
    rec.body = body = await _body(request)
    refused = _refusal(request, b)
    if refused is not None:
        return refused
    model = body.get("model")
    if not _known(b, model):
        msg = f"The model `{model}` does not exist."
        return web.json_response({"error": {"message": msg, "type": "NotFoundError"}}, status=404)
    n = min(b.tokens, int(body.get("max_tokens") or b.tokens))
    texts = state.texts(n)
    usage = {
        "prompt_tokens": 7,
        "completion_tokens": b.usage_tokens if b.usage_tokens is not None else n,
    }
    kind, cid = ("chat.completion", "chatcmpl-fake") if chat else ("text_completion", "cmpl-fake")
    if not body.get("stream"):
        await asyncio.sleep((b.ttft_ms + b.itl_ms * max(n - 1, 0)) / 1000)
        text = "".join(texts)
        choice = {"index": 0, "finish_reason": "length"}
        choice.update(
            {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        )
        rec.end_ns = time.perf_counter_ns()
        return web.json_response(
            {"id": cid, "object": kind, "model": model, "choices": [choice], "usage": usage}
        )

    def chunk(delta: dict[str, Any] | str | None, finish: str | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["delta"] = delta if isinstance(delta, dict) else {}
        else:
            choice["text"] = delta if isinstance(delta, str) else ""
        return _sse({"id": cid, "object": f"{kind}.chunk", "model": model, "choices": [choice]})

    frames: list[Frame] = []
    if b.role_first:
        frames.append((PRE, chunk({"role": "assistant", "content": ""} if chat else "")))
        frames.append((PRE, chunk({"content": ""} if chat else "")))
    frames += [(PRE, chunk({"content": ""} if chat else "")) for _ in range(b.empty_preamble)]
    # One chunk per token, an empty-text token included (llama.cpp's way).
    frames += [(CONTENT, chunk({"content": t} if chat else t)) for t in texts]
    frames.append((POST, chunk({} if chat else "", "length")))
    options = body.get("stream_options")
    if b.usage and isinstance(options, dict) and options.get("include_usage"):
        frames.append(
            (POST, _sse({"id": cid, "object": f"{kind}.chunk", "choices": [], "usage": usage}))
        )
    if b.done:
        frames.append((POST, b"data: [DONE]\n\n"))
    faults = {
        "malformed": b'data: {"id": "chatcmpl-fake", "choices": [\n\n',
        "error": _sse(
            {"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}}
        ),
    }
    return await _stream(request, rec, frames, "text/event-stream", faults)


# --- Ollama ------------------------------------------------------------------------------


async def tags(request: web.Request) -> web.Response:
    b = request.app[STATE].behaviour
    listed = [m if ":" in m else f"{m}:latest" for m in b.models]
    entries = [
        {
            "name": m,
            "model": m,
            "size": 1_000_000,
            "digest": hashlib.sha256(f"{m}@{b.revision}".encode()).hexdigest(),
            "modified_at": b.modified_at,
            "details": {"family": "fake", "parameter_size": "1M", "quantization_level": "Q4_0"},
        }
        for m in listed
    ]
    return web.json_response({"models": entries})


async def generate(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    b = state.behaviour
    rec = state.begin(request)
    rec.body = body = await _body(request)
    refused = _refusal(request, b)
    if refused is not None:
        return refused
    model = str(body.get("model"))
    if not (
        b.accept_any_model
        or model in b.models
        or f"{model}:latest" in b.models
        or model.removesuffix(":latest") in b.models
    ):
        return web.json_response(
            {"error": f'model "{model}" not found, try pulling it first'}, status=404
        )
    options = body.get("options") or {}
    n = min(b.tokens, int(options.get("num_predict") or b.tokens))
    texts = state.texts(n)

    def line(obj: dict[str, Any]) -> bytes:
        return (
            json.dumps({"model": model, "created_at": "2025-01-01T00:00:00Z", **obj}).encode()
            + b"\n"
        )

    frames: list[Frame] = [
        (PRE, line({"response": "", "done": False})) for _ in range(b.empty_preamble)
    ]
    frames += [(CONTENT, line({"response": t, "done": False})) for t in texts]
    count = b.usage_tokens if b.usage_tokens is not None else n
    ttft_ns, itl_ns = int(b.ttft_ms * 1e6), int(b.itl_ms * 1e6)
    if b.done:
        final = {
            "response": "",
            "done": True,
            "done_reason": "length",
            "total_duration": ttft_ns + itl_ns * max(n - 1, 0) + 1_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": 7,
            "prompt_eval_duration": ttft_ns,
            "eval_duration": max(itl_ns * n, 1),
        }
        if b.usage:
            final["eval_count"] = count
        frames.append((POST, line(final)))
    faults = {
        "malformed": b'{"response": "oops", "done": fal\n',
        "error": line({"error": "an error was encountered while running the model"}),
    }
    return await _stream(request, rec, frames, "application/x-ndjson", faults)


# --- TGI ---------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return web.Response(status=request.app[STATE].behaviour.health_status)


async def info(request: web.Request) -> web.Response:
    b = request.app[STATE].behaviour
    if b.info_status != 200:
        return web.Response(status=b.info_status)
    return web.json_response(
        {
            "model_id": b.models[0],
            "model_sha": hashlib.sha1(
                b.revision.encode()
            ).hexdigest(),  # a git commit id, as TGI reports
            "model_dtype": "torch.float16",
            "version": "2.4.0",
        }
    )


async def generate_stream(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    b = state.behaviour
    rec = state.begin(request)
    rec.body = body = await _body(request)
    refused = _refusal(request, b)
    if refused is not None:
        return refused
    params = body.get("parameters") or {}
    if "temperature" in params and not params["temperature"] > 0:
        return web.json_response(
            {"error": "`temperature` must be strictly positive", "error_type": "validation"},
            status=422,
        )
    n = min(b.tokens, int(params.get("max_new_tokens") or b.tokens))
    texts = state.texts(n)

    def event(i: int, text: str, *, special: bool = False, final: bool = False) -> bytes:
        generated = "".join(texts) if final else None
        details: dict[str, Any] | None = None
        if final:
            details = {"finish_reason": "length", "seed": None}
            if b.usage:
                details["generated_tokens"] = b.usage_tokens if b.usage_tokens is not None else n
        token = {"id": i, "text": text, "logprob": -0.25, "special": special}
        return (
            b"data:"
            + json.dumps(
                {"index": i, "token": token, "generated_text": generated, "details": details}
            ).encode()
            + b"\n\n"
        )

    frames: list[Frame] = [(PRE, event(0, "<s>", special=True))] if b.role_first else []
    frames += [(PRE, event(0, "", special=True)) for _ in range(b.empty_preamble)]
    frames += [(CONTENT, event(i + 1, t, final=b.done and i == n - 1)) for i, t in enumerate(texts)]
    if not texts and b.done:  # TGI still ends a stream that generated nothing with its final event
        frames.append((POST, event(1, "", final=True)))
    faults = {
        "malformed": b'data:{"index": 3, "token": {\n\n',
        "error": _sse(
            {
                "error": "Request failed during generation: Server error: CUDA OOM",
                "error_type": "generation",
            }
        ),
    }
    return await _stream(request, rec, frames, "text/event-stream", faults)


# --- control -----------------------------------------------------------------------------

_FIELDS = {f.name for f in dataclasses.fields(Behaviour)}


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    changes = await _body(request)
    reset = bool(changes.pop("reset", False))
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        return web.json_response({"error": f"unknown behaviour fields: {unknown}"}, status=400)
    state.behaviour = dataclasses.replace(state.behaviour, **changes)
    if reset:
        state.served.clear()
    return web.json_response(dataclasses.asdict(state.behaviour))


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "DELETE":
        state.served.clear()
        return web.json_response({"served": []})
    return web.json_response({"served": [dataclasses.asdict(r) for r in state.served]})


def build_app(behaviour: Behaviour | None = None) -> web.Application:
    """The fake's app; its state is ``app[STATE]``."""
    app = web.Application()
    app[STATE] = FakeState(behaviour)

    async def on_shutdown(app: web.Application) -> None:
        app[STATE].release.set()

    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/generate", generate)
    app.router.add_get("/health", health)
    app.router.add_get("/info", info)
    app.router.add_post("/generate_stream", generate_stream)
    app.router.add_post("/_control", control)
    app.router.add_route("GET", "/_stats", stats)
    app.router.add_route("DELETE", "/_stats", stats)
    return app


@asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` on loopback; yield its base URL. Stalled handlers are released at exit."""
    # handler_cancellation: a handler stalled or trickling for a client that gave up is
    # cancelled, as a real server's would be when the socket closes.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, bound = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{bound}"
    finally:
        app[STATE].release.set()
        await runner.cleanup()


async def _main(args: argparse.Namespace) -> None:
    behaviour = Behaviour(
        tokens=args.tokens,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        accept_any_model=args.accept_any_model,
        record=not args.no_record,
    )
    if args.model:
        behaviour.models = list(args.model)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serving(build_app(behaviour), args.port) as url:
        print(f"listening on {url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the fake until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.llm_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--model", action="append", help="served model id (repeatable)")
    parser.add_argument("--accept-any-model", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="do not keep /_stats records")
    with suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
