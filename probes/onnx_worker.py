"""The ONNX canary worker: ``python -m probes.onnx_worker [--max-memory-mb N] [--parent-pid P]``.

A persistent child process of the agent that owns one onnxruntime session, so a model that
segfaults the runtime, leaks or allocates without bound takes down this process and never the
agent. It speaks JSON lines: one request object per line on stdin, one answer per line on
stdout. Every answer has ``id`` (echoed) and ``ok``; a failed request has ``error`` and
``kind``: ``request`` when the request itself is wrong (inputs that do not fit the model: the
session is fine), ``runtime`` when onnxruntime failed (the session may be in a bad state).

Requests:

- ``{"op": "load", "path", "intra_op_threads", "providers"}`` opens a session and answers the
  model's metadata: ``sha256`` and ``size_bytes`` of the file, ``ir_version`` and ``opset``
  (``{domain: version}``, the default domain as ``ai.onnx``), ``producer``, ``graph``,
  ``domain``, ``version``, ``custom_metadata``, ``providers`` and ``inputs``/``outputs`` as
  ``{name, type, shape}`` (texts from the model clipped to 200 characters). The opset and IR
  version come from ``probes.onnx_file``; a failed load still reports the hash and size.
- ``{"op": "run", "inputs", "iterations", "expect", "rtol", "atol", "return_outputs"}`` runs
  the session ``iterations`` times on ``inputs`` (``{name: nested list}``, or null to generate
  them from the signature) and answers ``latencies_ms`` (``perf_counter_ns`` around each
  ``session.run``), ``ends_ms`` (wall clock at each iteration's end) and ``wrong`` (why the first
  iteration's outputs are wrong: NaN anywhere, or outside ``rtol``/``atol`` of ``expect``,
  naming the output and its worst element; null when right). With ``return_outputs`` it adds
  the first iteration's ``outputs`` and the ``inputs`` used, as nested lists.

The memory cap is ``RLIMIT_AS``, set before onnxruntime is imported: an allocation over it fails
inside this process (answered as an error) instead of growing until the host's OOM killer picks
a victim. Only numpy and onnxruntime are imported beyond the standard library, both lazily.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from probes.onnx_file import file_sha256, scan_opsets

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MAX_MEMORY_MB = 2048
_TEXT_LIMIT = 200  # model-supplied texts (producer, custom metadata) are served by the API
_METADATA_KEYS_LIMIT = 32
# ORT type strings of tensor inputs -> numpy dtype names.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class RequestError(Exception):
    """A request the worker cannot serve; the message is the answer's ``error``."""


def _clip(text: object) -> str:
    text = str(text)
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


# --- values ------------------------------------------------------------------------------


def _shape(dims: list[Any]) -> list[int]:
    """A concrete shape from a signature: symbolic or unknown dimensions become 1."""
    return [d if isinstance(d, int) and d > 0 else 1 for d in dims]


def generate_input(name: str, ort_type: str, dims: list[Any]) -> np.ndarray:
    """A deterministic canary value for one input.

    Floats are ``0.1 * (i % 10)`` over the flat index ``i`` (kept small so deep models do not
    overflow), integers ``i % 10``, booleans alternate. Strings and non-tensor types cannot be
    made up and need configured ``inputs``.

    Raises:
        RequestError: for a type that cannot be generated.
    """
    import numpy as np

    dtype = _DTYPES.get(ort_type)
    if dtype is None or dtype == "object":
        raise RequestError(
            f"cannot generate a {ort_type} value for input {name!r}; configure inputs"
        )
    shape = _shape(dims)
    flat = np.arange(int(np.prod(shape)), dtype=np.int64)
    if dtype == "bool":
        values = flat % 2 == 1
    elif dtype.startswith("float"):
        values = 0.1 * (flat % 10)
    else:
        values = flat % 10
    return values.astype(dtype).reshape(shape)


def jsonable(value: Any) -> Any:
    """Nested lists (and dicts, for sequence-of-map outputs) from whatever ORT returned."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _where(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def _num(value: Any) -> str:
    """A tensor element as plain text: ``0.84`` rather than ``np.float32(0.84)``."""
    item = value.item() if hasattr(value, "item") else value
    if isinstance(item, float):
        return f"{item:.7g}"  # float32 holds about 7 significant digits
    return _clip(repr(item))


def find_nan(outputs: Mapping[str, Any]) -> str | None:
    """Why the outputs are numerically broken (a NaN anywhere), or None."""
    import numpy as np

    for name, value in outputs.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            nan = np.isnan(value)
            if nan.any():
                first = tuple(np.argwhere(nan)[0])
                return (
                    f"output {name!r} holds NaN at {_where(first)} "
                    f"({int(nan.sum())} of {value.size} values)"
                )
    return None


def compare_outputs(
    got: Mapping[str, Any], expect: Mapping[str, Any], rtol: float, atol: float
) -> str | None:
    """What differs between ``got`` and ``expect`` (``{name: nested list}``), or None.

    Numbers match as ``numpy.allclose`` has it: ``|got - expected| <= atol + rtol * |expected|``,
    NaN never matching. A mismatch names the output and its worst element (the one furthest
    beyond the tolerance), which is what an operator compares against the golden file.
    Non-numeric outputs must be equal. Outputs not in ``expect`` are not judged.
    """
    import numpy as np

    for name, want_raw in expect.items():
        if name not in got:
            return f"output {name!r} missing; model outputs: {sorted(got)}"
        value = got[name]
        if not isinstance(value, np.ndarray):
            if jsonable(value) != want_raw:
                return f"output {name!r} differs from the expected value"
            continue
        try:
            want = np.asarray(want_raw)
        except ValueError:  # ragged nested lists
            return f"output {name!r}: the expected value is not a rectangular array"
        if value.shape != want.shape:
            return f"output {name!r} has shape {list(value.shape)}, expected {list(want.shape)}"
        if value.dtype.kind in "biuf" and want.dtype.kind in "biuf":
            g, w = value.astype(np.float64), want.astype(np.float64)
            bad = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=False)
            # NaN on either side is infinitely wrong, so it is the worst element.
            excess = np.nan_to_num(np.abs(g - w), nan=np.inf) - (atol + rtol * np.abs(w))
            tolerance = f"rtol {rtol:g}, atol {atol:g}"
        else:
            g, w = value, want
            bad = g != w
            excess = bad.astype(np.float64)
            tolerance = "exact"
        if bad.any():
            worst = np.unravel_index(int(np.argmax(np.where(bad, excess, -np.inf))), bad.shape)
            where = _where(tuple(int(i) for i in worst)) if bad.ndim else ""
            diff = ""
            if tolerance != "exact":
                diff = f" (off by {float(abs(g[worst] - w[worst])):.3g})"
            return (
                f"output {name!r}: {int(bad.sum())} of {w.size} values out of tolerance "
                f"({tolerance}); worst{' at ' + where if where else ''}: "
                f"got {_num(g[worst])}, expected {_num(w[worst])}{diff}"
            )
    return None


# --- the session -------------------------------------------------------------------------


class Worker:
    """Holds the session between requests and serves them."""

    def __init__(self, max_memory_mb: int) -> None:
        self.max_memory_mb = max_memory_mb
        self.session: Any = None

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Serve one request; failures become ``{"ok": false, "error": ...}``."""
        op = request.get("op")
        try:
            if op == "load":
                return self.load(request)
            if op == "run":
                return self.run(request)
            raise RequestError(f"unknown op {op!r}; expected load or run")
        except RequestError as exc:
            return {"ok": False, "kind": "request", "error": str(exc)}
        except Exception as exc:  # onnxruntime raises its own types for any bad model or input
            return {"ok": False, "kind": "runtime", "error": self._describe_error(exc)}

    def _describe_error(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}".strip()
        # ORT reports a failed allocation as a generic FAIL; the cap is the likely cause.
        if isinstance(exc, MemoryError) or "allocate memory" in text or "bad_alloc" in text:
            return f"out of memory (max_memory_mb={self.max_memory_mb}): {text}"
        return text

    def load(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Open the model named by ``path`` and describe it."""
        path = str(request["path"])
        self.session = None
        try:
            sha256, size = file_sha256(path)
        except OSError as exc:
            raise RequestError(f"cannot read model file: {exc}") from exc
        meta: dict[str, Any] = {"sha256": sha256, "size_bytes": size}
        try:
            meta["ir_version"], meta["opset"] = scan_opsets(path)
        except (ValueError, EOFError) as exc:
            return {"ok": False, "kind": "request", "error": f"not an ONNX model: {exc}", **meta}
        try:
            import onnxruntime as ort
        except (ImportError, MemoryError) as exc:
            # Under a tight max_memory_mb even the runtime's own import fails: say which cap.
            error = f"cannot import onnxruntime under max_memory_mb={self.max_memory_mb}: {exc}"
            return {"ok": False, "kind": "runtime", "error": error, **meta}
        try:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(request.get("intra_op_threads") or 1)
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3  # errors only: warnings would flood the stderr tail
            providers = request.get("providers") or ["CPUExecutionProvider"]
            session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as exc:  # a malformed graph, an unknown op, a provider, memory
            return {"ok": False, "kind": "runtime", "error": self._describe_error(exc), **meta}
        modelmeta = session.get_modelmeta()
        self.session = session
        custom = sorted(modelmeta.custom_metadata_map.items())[:_METADATA_KEYS_LIMIT]
        meta.update(
            producer=_clip(modelmeta.producer_name),
            graph=_clip(modelmeta.graph_name),
            domain=_clip(modelmeta.domain),
            # ORT reports an unset model_version as INT64_MAX (or -1).
            version=modelmeta.version if 0 <= modelmeta.version < 2**63 - 1 else None,
            custom_metadata={_clip(k): _clip(v) for k, v in custom},
            providers=list(session.get_providers()),
            inputs=[_describe(i) for i in session.get_inputs()],
            outputs=[_describe(o) for o in session.get_outputs()],
        )
        return {"ok": True, **meta}

    def run(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Run the loaded session and judge its first outputs."""
        if self.session is None:
            raise RequestError("no model loaded")
        feed = self._feed(request.get("inputs"))
        iterations = max(1, int(request.get("iterations") or 1))
        latencies: list[float] = []
        ends: list[int] = []
        first: list[Any] = []
        for i in range(iterations):
            start = time.perf_counter_ns()
            try:
                result = self.session.run(None, feed)
            except Exception as exc:
                # Inputs of the wrong shape or type: the config's fault, the session is fine.
                if type(exc).__name__ == "InvalidArgument":
                    raise RequestError(f"{type(exc).__name__}: {exc}") from exc
                raise
            latencies.append((time.perf_counter_ns() - start) / 1e6)
            ends.append(time.time_ns() // 1_000_000)
            if i == 0:
                first = result
        names = [o.name for o in self.session.get_outputs()]
        outputs = dict(zip(names, first, strict=True))
        wrong = find_nan(outputs)
        expect = request.get("expect")
        if wrong is None and isinstance(expect, Mapping):
            rtol, atol = float(request.get("rtol", 1e-4)), float(request.get("atol", 1e-5))
            wrong = compare_outputs(outputs, expect, rtol, atol)
        answer: dict[str, Any] = {
            "ok": True,
            "latencies_ms": latencies,
            "ends_ms": ends,
            "wrong": wrong,
        }
        if request.get("return_outputs"):
            answer["outputs"] = {k: jsonable(v) for k, v in outputs.items()}
            answer["inputs"] = {k: jsonable(v) for k, v in feed.items()}
        return answer

    def _feed(self, inputs: object) -> dict[str, Any]:
        import numpy as np

        specs = {i.name: i for i in self.session.get_inputs()}
        if inputs is None:
            return {n: generate_input(n, s.type, list(s.shape)) for n, s in specs.items()}
        if not isinstance(inputs, Mapping):
            raise RequestError("inputs: expected a table of input name -> nested list")
        unknown = sorted(set(inputs) - set(specs))
        missing = sorted(set(specs) - set(inputs))
        if unknown or missing:
            raise RequestError(
                f"inputs do not match the model: unknown {unknown}, missing {missing}; "
                f"model inputs: {sorted(specs)}"
            )
        feed = {}
        for name, value in inputs.items():
            dtype = _DTYPES.get(specs[name].type)
            if dtype is None:
                raise RequestError(f"input {name!r} has type {specs[name].type}; not supported")
            try:
                feed[name] = np.array(value, dtype=dtype)
            except (ValueError, TypeError) as exc:
                raise RequestError(f"input {name!r}: cannot make a {dtype} array: {exc}") from exc
        return feed


def _describe(arg: Any) -> dict[str, Any]:
    # Symbolic dimensions are names the model chose ("batch"): data, clipped like the rest.
    shape = [d if isinstance(d, int) or d is None else _clip(d) for d in arg.shape]
    return {"name": _clip(arg.name), "type": arg.type, "shape": shape}


# --- process -----------------------------------------------------------------------------


def set_memory_cap(max_memory_mb: int) -> None:
    """Cap this process's address space so a runaway allocation fails here, not on the host."""
    soft = max_memory_mb << 20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this worker if the agent dies, so no orphan keeps a model loaded."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, 9)
    # The parent may have died before prctl took effect: then nobody would ever ask.
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.exit(1)


def _protocol_out() -> IO[str]:
    """The answer stream: the original stdout, with fd 1 itself pointed at stderr.

    Native libraries and stray prints write to fd 1; moving fd 1 keeps them from corrupting
    the JSON lines the agent reads.
    """
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def main(argv: list[str] | None = None) -> int:
    """Serve requests until stdin closes (the agent went away or closed the probe).

    Args:
        argv: Command-line arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit code: 0 when stdin closed.
    """
    parser = argparse.ArgumentParser(prog="python -m probes.onnx_worker")
    parser.add_argument("--max-memory-mb", type=int, default=DEFAULT_MAX_MEMORY_MB)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    out = _protocol_out()
    set_memory_cap(args.max_memory_mb)
    worker = Worker(args.max_memory_mb)
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            bad = {"id": None, "ok": False, "kind": "request", "error": f"bad request: {exc}"}
            out.write(json.dumps(bad) + "\n")
            continue
        answer = worker.handle(request)
        answer["id"] = request.get("id")
        try:
            text = json.dumps(answer)
        except (TypeError, ValueError, MemoryError) as exc:
            error = f"cannot encode the answer: {type(exc).__name__}: {exc}"
            text = json.dumps({"id": answer["id"], "ok": False, "kind": "runtime", "error": error})
        out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
