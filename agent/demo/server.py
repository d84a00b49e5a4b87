"""A minimal KServe V2 (Open Inference Protocol) HTTP server for one ONNX model.

Run as ``python -m agent.demo.server --model PATH --name NAME --host 127.0.0.1 --port PORT``
(``--port 0`` picks a free port). Once bound it prints ``listening on http://HOST:PORT`` to
stdout, which is what the agent's supervisor and the tests wait for. SIGTERM or SIGINT stop it
cleanly with exit code 0. ``GET /metrics`` serves Prometheus counters, the way Triton does.

It is the model server of ``vigil demo`` and of the integration tests, so it is deliberately
small: JSON tensors only (no binary extension), one model, version ``1``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from agent import __version__

log = logging.getLogger("vigil.demo.server")

MODEL_VERSION = "1"
# ONNX Runtime type strings to V2 datatypes; the demo model only uses FP32.
_V2_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}
_NP_TYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


class BadRequest(ValueError):
    """The request breaks the protocol or the model's signature; answered with 400."""


class DemoModel:
    """One ONNX model behind an onnxruntime session, with its V2 signature."""

    def __init__(self, path: str, name: str) -> None:
        self.name = name
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.inputs = [self._tensor_meta(t) for t in self.session.get_inputs()]
        self.outputs = [self._tensor_meta(t) for t in self.session.get_outputs()]

    @staticmethod
    def _tensor_meta(arg: Any) -> dict[str, Any]:
        # Symbolic or unknown dimensions are dynamic, which V2 spells -1.
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        return {"name": arg.name, "datatype": _V2_TYPES.get(arg.type, arg.type), "shape": shape}

    def metadata(self) -> dict[str, Any]:
        """The V2 model metadata response."""
        return {
            "name": self.name,
            "versions": [MODEL_VERSION],
            "platform": "onnxruntime_onnx",
            "inputs": self.inputs,
            "outputs": self.outputs,
        }

    def parse(self, body: Any) -> tuple[dict[str, np.ndarray], list[str]]:
        """Turn a V2 infer request body into feeds and the output names to return.

        Raises:
            BadRequest: naming the input or field that is wrong.
        """
        if not isinstance(body, Mapping) or not isinstance(body.get("inputs"), list):
            raise BadRequest("request must be a JSON object with an 'inputs' list")
        wanted = {m["name"]: m for m in self.inputs}
        feeds: dict[str, np.ndarray] = {}
        for item in body["inputs"]:
            if not isinstance(item, Mapping):
                raise BadRequest("each entry of 'inputs' must be an object")
            name = item.get("name")
            if not isinstance(name, str) or name not in wanted:
                raise BadRequest(
                    f"unknown input {name!r}; model {self.name!r} expects {sorted(wanted)}"
                )
            feeds[name] = _tensor(item, wanted[name])
        missing = sorted(set(wanted) - set(feeds))
        if missing:
            raise BadRequest(f"missing input(s) {missing}")
        known_outputs = [m["name"] for m in self.outputs]
        requested = body.get("outputs")
        if requested is None:
            return feeds, known_outputs
        if not isinstance(requested, list):
            raise BadRequest("'outputs' must be a list")
        names = [o.get("name") if isinstance(o, Mapping) else None for o in requested]
        for name in names:
            if name not in known_outputs:
                raise BadRequest(f"unknown output {name!r}; model has {known_outputs}")
        return feeds, [str(n) for n in names]

    def infer(self, feeds: dict[str, np.ndarray], names: list[str]) -> list[dict[str, Any]]:
        """Run the model (blocking) and shape the V2 ``outputs`` list."""
        results = self.session.run(names, feeds)
        out_types = {m["name"]: m["datatype"] for m in self.outputs}
        return [
            {
                "name": n,
                "shape": list(r.shape),
                "datatype": out_types[n],
                "data": r.reshape(-1).tolist(),
            }
            for n, r in zip(names, results, strict=True)
        ]


def _tensor(item: Mapping[str, Any], meta: Mapping[str, Any]) -> np.ndarray:
    """Validate one V2 input against the model's signature and build its array."""
    name = meta["name"]
    if item.get("datatype") != meta["datatype"]:
        raise BadRequest(
            f"input {name!r}: datatype {item.get('datatype')!r} does not match "
            f"the model's {meta['datatype']!r}"
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    expected = meta["shape"]
    if len(shape) != len(expected) or any(
        e not in (-1, d) for d, e in zip(shape, expected, strict=True)
    ):
        raise BadRequest(f"input {name!r}: shape {shape} does not match the model's {expected}")
    if not isinstance(item.get("data"), list):
        raise BadRequest(f"input {name!r}: 'data' must be a list (flat or nested)")
    try:
        # V2 allows data flat or nested in row-major order; numpy flattens either.
        dtype = _NP_TYPES[meta["datatype"]]
        flat: np.ndarray = np.asarray(item["data"], dtype=dtype).reshape(-1)
    except (TypeError, ValueError, KeyError) as exc:
        raise BadRequest(f"input {name!r}: data is not a {meta['datatype']} tensor") from exc
    if flat.size != math.prod(shape):
        raise BadRequest(f"input {name!r}: {flat.size} values do not fill shape {shape}")
    return flat.reshape(shape)


def build_app(model: DemoModel) -> web.Application:
    """Build the aiohttp application serving ``model`` and its metrics."""
    registry = CollectorRegistry()
    requests = Counter(
        "demo_inference_requests_total",
        "Inference requests by outcome.",
        ["model", "outcome"],
        registry=registry,
    )
    # Sub-millisecond buckets: the demo model answers in well under 5 ms.
    duration = Histogram(
        "demo_inference_duration_seconds",
        "Inference request handling time.",
        ["model"],
        registry=registry,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    )

    def error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    def known(request: web.Request) -> bool:
        version = request.match_info.get("version", MODEL_VERSION)
        return request.match_info["name"] == model.name and version == MODEL_VERSION

    def unknown(request: web.Request) -> web.Response:
        return error(
            404,
            f"model {request.match_info['name']!r} (version "
            f"{request.match_info.get('version', MODEL_VERSION)!r}) not found",
        )

    async def live(_: web.Request) -> web.Response:
        return web.Response(status=200)  # V2: the status code is the answer, body empty

    async def server_metadata(_: web.Request) -> web.Response:
        return web.json_response({"name": "vigil-demo", "version": __version__, "extensions": []})

    async def model_metadata(request: web.Request) -> web.Response:
        return web.json_response(model.metadata()) if known(request) else unknown(request)

    async def model_ready(request: web.Request) -> web.Response:
        return web.Response(status=200) if known(request) else unknown(request)

    async def infer(request: web.Request) -> web.Response:
        # Unknown names are not counted: a label per arbitrary name would be unbounded.
        if not known(request):
            return unknown(request)
        start = time.perf_counter()
        outcome = "success"
        try:
            try:
                body = await request.json()
            except ValueError as exc:
                raise BadRequest(f"request body is not JSON: {exc}") from exc
            feeds, names = model.parse(body)
            loop = asyncio.get_running_loop()
            # Tiny model, but a real one would block the loop for the whole inference.
            outputs = await loop.run_in_executor(None, model.infer, feeds, names)
        except BadRequest as exc:
            outcome = "bad_request"
            return error(400, str(exc))
        except Exception as exc:  # a model failure is the server's fault: 500, keep serving
            outcome = "error"
            log.exception("inference failed model=%s", model.name)
            return error(500, f"inference failed: {exc}")
        finally:
            requests.labels(model.name, outcome).inc()
            duration.labels(model.name).observe(time.perf_counter() - start)
        reply: dict[str, Any] = {
            "model_name": model.name,
            "model_version": MODEL_VERSION,
            "outputs": outputs,
        }
        if isinstance(body, Mapping) and "id" in body:
            reply["id"] = body["id"]
        return web.json_response(reply)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    routes = [
        web.get("/v2/health/live", live),
        web.get("/v2/health/ready", live),
        web.get("/v2", server_metadata),
        web.get("/metrics", metrics),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            web.get(prefix, model_metadata),
            web.get(f"{prefix}/ready", model_ready),
            web.post(f"{prefix}/infer", infer),
        ]
    app.add_routes(routes)
    return app


async def serve(model: DemoModel, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, printing the bound address once listening."""
    runner = web.AppRunner(build_app(model), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"listening on http://{shown}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping model=%s", model.name)
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, load the model and serve it.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit code: 0 after a clean shutdown, 2 when the model cannot be loaded.
    """
    parser = argparse.ArgumentParser(
        prog="python -m agent.demo.server", description="Serve one ONNX model over KServe V2 HTTP."
    )
    parser.add_argument("--model", required=True, help="path of the .onnx file")
    parser.add_argument("--name", default="demo", help="model name in URLs (default: demo)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks one")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    try:
        model = DemoModel(args.model, args.name)
    except Exception as exc:  # onnxruntime raises its own types; any load failure is fatal
        print(f"cannot load model {args.model}: {exc}", file=sys.stderr)
        return 2
    log.info("model loaded name=%s path=%s", args.name, args.model)
    asyncio.run(serve(model, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
