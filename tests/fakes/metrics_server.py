"""A fake model server's ``/metrics``: vLLM, llama.cpp, TGI or Triton, steerable and faulty.

``GET /metrics`` renders the page in the chosen server's own style (the names, types, labels and
quirks of the real thing, abridged):

- ``vllm``: prometheus-client output (``# HELP``/``# TYPE``, ``_total`` counters with their
  ``_created`` gauges, a TTFT histogram), labelled ``model_name``;
- ``llamacpp``: llama-server's hand-written page, ``llamacpp:`` names, no labels;
- ``tgi``: the Rust ``metrics`` exporter (counters without ``_total``, ``method`` labels);
- ``triton``: ``nv_`` metrics labelled ``model`` and ``version``, GPU gauges by ``gpu_uuid``.

The numbers come from :class:`Behaviour`: ``running`` and ``waiting`` requests, KV-cache use,
and ``tokens``, the progress counter (generated tokens for vLLM, decode steps for llama.cpp,
forward passes for TGI, inferences for Triton), which grows by ``advance`` on every scrape: a
working server has ``advance > 0``, a stalled one ``0``. Faults: ``status`` (an error page),
``garbage`` (an HTML body), ``delay_ms`` (answer late; released at shutdown).

Steering: in-process tests change ``app[STATE].behaviour``; a subprocess takes
``POST /_control`` with Behaviour fields as JSON. ``state.scrapes`` counts answered scrapes.

Run standalone: ``python -m tests.fakes.metrics_server --port 0 --format vllm``; it prints
``listening on http://127.0.0.1:PORT`` and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

FORMATS = ("vllm", "llamacpp", "tgi", "triton")
GARBAGE = "<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>\n"
GPU_UUID = "GPU-5f1b4a2e-0000-4c6e-9d1a-000000000001"


@dataclass
class Behaviour:
    """What the next scrape shows."""

    format: str = "vllm"
    model: str = "fake-model"
    running: float = 0
    waiting: float = 0
    kv_cache: float = 0.25
    tokens: float = 1000
    """The progress counter, before this scrape's ``advance``."""
    advance: float = 0
    prompt_tokens: float = 500
    extra: str = ""
    """Appended to the page as is (odd labels, many series, a bad line)."""
    status: int = 200
    garbage: bool = False
    delay_ms: float = 0


class FakeState:
    """The behaviour, the scrape count, and the event that frees delayed answers."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.scrapes = 0
        self.release = asyncio.Event()


STATE = web.AppKey("fake_metrics", FakeState)


# --- the four styles -----------------------------------------------------------------------


def _fmt(value: float) -> str:
    return repr(float(value))


def render_vllm(b: Behaviour) -> str:
    lbl = f'model_name="{b.model}"'
    out = []

    def metric(name: str, kind: str, help_: str, value: float, extra: str = "") -> None:
        labels = lbl + (f",{extra}" if extra else "")
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n{name}{{{labels}}} {_fmt(value)}")

    metric(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        b.running,
    )
    metric(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        b.waiting,
    )
    metric(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        b.kv_cache,
    )
    for name, value, what in (
        ("vllm:prompt_tokens", b.prompt_tokens, "prefill"),
        ("vllm:generation_tokens", b.tokens, "generation"),
        ("vllm:num_preemptions", 0, "preemption"),
    ):
        metric(f"{name}_total", "counter", f"Number of {what} tokens processed.", value)
        metric(f"{name}_created", "gauge", f"Number of {what} tokens processed.", 1.7e9)
    metric(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
        b.tokens // 16,
        'finished_reason="length"',
    )
    ttft = "vllm:time_to_first_token_seconds"
    out.append(
        f"# HELP {ttft} Histogram of time to first token in seconds.\n# TYPE {ttft} histogram"
    )
    for le in ("0.001", "0.01", "0.1", "1.0", "+Inf"):
        out.append(f'{ttft}_bucket{{le="{le}",{lbl}}} 3.0')
    out.append(f"{ttft}_count{{{lbl}}} 3.0\n{ttft}_sum{{{lbl}}} 0.042")
    return "\n".join(out) + "\n"


def render_llamacpp(b: Behaviour) -> str:
    rows = [
        ("prompt_tokens_total", "counter", "Number of prompt tokens processed.", b.prompt_tokens),
        ("prompt_seconds_total", "counter", "Prompt process time", 12.5),
        (
            "tokens_predicted_total",
            "counter",
            "Number of generation tokens processed.",
            b.tokens // 4,
        ),
        ("tokens_predicted_seconds_total", "counter", "Predict process time", 40.25),
        ("n_decode_total", "counter", "Total number of llama_decode() calls", b.tokens),
        (
            "n_busy_slots_per_decode",
            "counter",
            "Average number of busy slots per llama_decode() call",
            1,
        ),
        ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.", 410.5),
        ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.", 45.47),
        ("kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.", b.kv_cache),
        ("kv_cache_tokens", "gauge", "KV-cache tokens.", 1234),
        ("requests_processing", "gauge", "Number of requests processing.", b.running),
        ("requests_deferred", "gauge", "Number of requests deferred.", b.waiting),
    ]
    return "".join(
        f"# HELP llamacpp:{n} {h}\n# TYPE llamacpp:{n} {k}\nllamacpp:{n} {v:g}\n"
        for n, k, h, v in rows
    )


def render_tgi(b: Behaviour) -> str:
    prefill = max(b.tokens // 50, 1)
    lines = [
        "# TYPE tgi_request_count counter",
        f"tgi_request_count {prefill:g}",
        "# TYPE tgi_request_success counter",
        f"tgi_request_success {prefill:g}",
        "# TYPE tgi_batch_inference_count counter",
        f'tgi_batch_inference_count{{method="prefill"}} {prefill:g}',
        f'tgi_batch_inference_count{{method="decode"}} {b.tokens - prefill:g}',
        "# TYPE tgi_queue_size gauge",
        f"tgi_queue_size {b.waiting:g}",
        "# TYPE tgi_batch_current_size gauge",
        f"tgi_batch_current_size {b.running:g}",
        "# TYPE tgi_batch_current_max_tokens gauge",
        f"tgi_batch_current_max_tokens {b.running * 2048:g}",
        "# TYPE tgi_request_generated_tokens histogram",
        'tgi_request_generated_tokens_bucket{le="1"} 0',
        'tgi_request_generated_tokens_bucket{le="10"} 1',
        f'tgi_request_generated_tokens_bucket{{le="+Inf"}} {prefill:g}',
        f"tgi_request_generated_tokens_sum {b.tokens * 0.9:g}",
        f"tgi_request_generated_tokens_count {prefill:g}",
    ]
    return "\n".join(lines) + "\n\n"


def render_triton(b: Behaviour) -> str:
    lbl = f'model="{b.model}",version="1"'
    rows = [
        (
            "nv_inference_request_success",
            "counter",
            "Number of successful inference requests",
            b.tokens,
        ),
        ("nv_inference_request_failure", "counter", "Number of failed inference requests", 0),
        ("nv_inference_count", "counter", "Number of inferences performed", b.tokens),
        (
            "nv_inference_exec_count",
            "counter",
            "Number of model executions performed",
            b.tokens // 2,
        ),
        (
            "nv_inference_pending_request_count",
            "gauge",
            "Instantaneous number of pending requests awaiting execution per-model.",
            b.running,
        ),
        (
            "nv_inference_queue_duration_us",
            "counter",
            "Cumulative inference queuing duration in microseconds",
            8123,
        ),
    ]
    out = [f"# HELP {n} {h}\n# TYPE {n} {k}\n{n}{{{lbl}}} {v:g}" for n, k, h, v in rows]
    out.append(
        "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n"
        "# TYPE nv_gpu_utilization gauge\n"
        f'nv_gpu_utilization{{gpu_uuid="{GPU_UUID}"}} 0.5'
    )
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[Behaviour], str]] = {
    "vllm": render_vllm,
    "llamacpp": render_llamacpp,
    "tgi": render_tgi,
    "triton": render_triton,
}


# --- handlers -------------------------------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    b = state.behaviour
    if b.delay_ms:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.release.wait(), b.delay_ms / 1000)
    state.scrapes += 1
    if b.status != 200:
        return web.Response(status=b.status, text="Internal Server Error: engine dead\n")
    if b.garbage:
        return web.Response(text=GARBAGE, content_type="text/html")
    b.tokens += b.advance
    page = RENDERERS[b.format](b) + b.extra
    return web.Response(text=page, content_type="text/plain", charset="utf-8")


_FIELDS = {f.name for f in dataclasses.fields(Behaviour)}


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    changes: dict[str, Any] = await request.json()
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        return web.json_response({"error": f"unknown behaviour fields: {unknown}"}, status=400)
    state.behaviour = dataclasses.replace(state.behaviour, **changes)
    return web.json_response({**dataclasses.asdict(state.behaviour), "scrapes": state.scrapes})


def build_app(behaviour: Behaviour | None = None) -> web.Application:
    """The fake's app; its state is ``app[STATE]``."""
    app = web.Application()
    app[STATE] = FakeState(behaviour)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/_control", control)
    return app


@asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` on loopback; yield its base URL. Delayed answers are released at exit."""
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    behaviour = Behaviour(format=args.format, running=args.running, advance=args.advance)
    async with serving(build_app(behaviour), args.port) as url:
        print(f"listening on {url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the fake until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.metrics_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    parser.add_argument("--format", choices=FORMATS, default="vllm")
    parser.add_argument("--running", type=float, default=0)
    parser.add_argument("--advance", type=float, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
