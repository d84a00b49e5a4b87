"""The ONNX probe: a local model file run by onnxruntime in an isolated worker process.

``url = "file:///abs/path/model.onnx"``. The model is loaded by ``probes.onnx_worker``, a child
process started on the first run and reused (see :mod:`probes.onnx_client`). A worker that dies
makes that run ``protocol_error`` ("worker died: signal SIGKILL (exit -9)" with its last stderr
lines) and the next run starts a fresh one; a run over ``timeout_s`` kills it (``timeout``). A
missing or unreadable model file is ``refused``; a file onnxruntime cannot load is
``protocol_error``.

Loading has its own budget, ``load_timeout``: a big model may take longer to load than a canary
may take to answer. A run whose budget ends while the model is still loading is ``timeout``
("still loading"), but the load goes on and the next run uses it.

Each run ``stat``s the file; when inode, size, mtime or ctime changed, the worker is replaced
and the model reloaded (``info["reloaded_at"]``). ``info`` holds what the worker read at load:
``sha256``, ``size_bytes``, ``ir_version``, ``opset``, ``producer``, ``inputs``, ``outputs``...

Options, all optional:

- ``inputs``: ``{name: nested list}``; default generated from the signature (dynamic dimensions
  1, floats ``0.1 * (i % 10)``, integers ``i % 10``, booleans alternate).
- ``golden``: absolute path of a JSON file ``{"inputs"?, "outputs": {name: nested list}}``
  (``vigil probe record-golden`` writes one); its inputs, when present, are the canary's.
  ``expect_outputs`` is the inline alternative. Outputs match within ``rtol``/``atol``
  (defaults 1e-4/1e-5) as ``numpy.allclose`` has it; NaN anywhere is always ``wrong_output``.
- ``iterations``: session runs per probe run (1-1000, default 5). ``e2e_ms`` is their p50;
  ``phases_ms`` has ``p50``/``p95``/``p99`` (and ``load`` when this run waited for a load);
  each iteration becomes a ``probe.onnx.iteration_ms`` sample.
- ``max_latency``: a duration bound on the iterations' **p95** (p50 hides the tail a canary is
  meant to catch; p99 of 5 iterations is just the maximum); over it is ``slow``.
- ``load_timeout`` (default ``"60s"``), ``intra_op_threads`` (default 1), ``max_memory_mb``
  (the worker's address-space cap, default 2048), ``providers`` (default
  ``["CPUExecutionProvider"]``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from probes.base import OptionError, Probe, ProbeTarget, artifact_info, now_ms, register
from probes.common import (
    RunFailed,
    check_duration,
    duration_ms,
    elapsed_ms,
    is_number,
    make_run,
    over_bound,
    percentile,
)
from probes.httpclient import HttpClient
from probes.onnx_client import DEFAULT_MAX_MEMORY_MB, WorkerDied, WorkerProcess, load_golden
from storage.records import ProbeRun

DEFAULT_ITERATIONS = 5
MAX_ITERATIONS = 1000
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5
DEFAULT_LOAD_TIMEOUT_S = 60.0
_Signature = tuple[int, int, int, int]


def model_path(url: str) -> Path:
    """The local path of a ``file:///abs/path`` URL."""
    return Path(unquote(urlparse(url).path))


def _check_table(options: Mapping[str, Any], key: str, what: str) -> None:
    value = options.get(key)
    if key in options and (
        not isinstance(value, Mapping)
        or not value
        or not all(
            isinstance(k, str) and (isinstance(v, list) or is_number(v) or isinstance(v, bool))
            for k, v in value.items()
        )
    ):
        raise OptionError(key, f"expected a table of {what} name -> (nested) list, got {value!r}")


def _check_int(options: Mapping[str, Any], key: str, low: int, high: int) -> None:
    value = options.get(key)
    if key in options and (
        not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
    ):
        raise OptionError(key, f"expected an integer from {low} to {high}, got {value!r}")


@register
class OnnxProbe(Probe):
    """Runs a canary through a local ONNX model in an isolated worker process."""

    protocol = "onnx"
    allowed_options = frozenset(
        {
            "inputs",
            "golden",
            "expect_outputs",
            "rtol",
            "atol",
            "iterations",
            "max_latency",
            "load_timeout",
            "intra_op_threads",
            "max_memory_mb",
            "providers",
        }
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Validate keys and value types; raise OptionError naming the key."""
        super().check_options(options)
        _check_table(options, "inputs", "input")
        _check_table(options, "expect_outputs", "output")
        for key in ("rtol", "atol"):
            if key in options and (not is_number(options[key]) or options[key] < 0):
                raise OptionError(key, f"expected a number >= 0, got {options[key]!r}")
        _check_int(options, "iterations", 1, MAX_ITERATIONS)
        _check_int(options, "intra_op_threads", 1, 256)
        # Below about 200 MB not even numpy and onnxruntime can be imported.
        _check_int(options, "max_memory_mb", 256, 1 << 20)
        check_duration(options, "max_latency")
        check_duration(options, "load_timeout")
        providers = options.get("providers")
        if "providers" in options and (
            not isinstance(providers, list)
            or not providers
            or not all(isinstance(p, str) and p for p in providers)
        ):
            raise OptionError(
                "providers",
                f'expected a list of provider names such as ["CPUExecutionProvider"], '
                f"got {providers!r}",
            )
        if "golden" in options:
            golden = options["golden"]
            if not isinstance(golden, str) or not os.path.isabs(golden):
                raise OptionError("golden", f"expected an absolute file path, got {golden!r}")
            if "expect_outputs" in options:
                raise OptionError("golden", "give either golden or expect_outputs, not both")
            try:
                golden_inputs, _ = load_golden(golden)
            except ValueError as exc:
                raise OptionError("golden", str(exc)) from None
            if golden_inputs is not None and "inputs" in options:
                raise OptionError(
                    "inputs", "the golden file has its own inputs; its outputs belong to them"
                )

    def __init__(self, target: ProbeTarget) -> None:
        super().__init__(target)
        opts = target.options
        self._path = model_path(target.url)
        self._iterations = int(opts.get("iterations", DEFAULT_ITERATIONS))
        self._max_memory_mb = int(opts.get("max_memory_mb", DEFAULT_MAX_MEMORY_MB))
        load_timeout_ms = duration_ms(opts, "load_timeout")
        self._load_timeout_s = (
            load_timeout_ms / 1000.0 if load_timeout_ms is not None else DEFAULT_LOAD_TIMEOUT_S
        )
        self._worker: WorkerProcess | None = None
        self._loaded: _Signature | None = None  # stat signature of the file the worker holds
        self._previous: _Signature | None = None  # of the last file successfully loaded
        self._loading: asyncio.Task[float] | None = None
        self._loading_sig: _Signature | None = None
        self._golden_cache: tuple[tuple[int, int], tuple[Any, Any]] | None = None
        self._closed = False
        self.info["path"] = str(self._path)

    @property
    def worker_pid(self) -> int | None:
        """The live worker's pid, if one is running (tests and diagnostics)."""
        return self._worker.pid if self._worker is not None else None

    async def close(self) -> None:
        """Stop loading and terminate the worker (SIGTERM, then SIGKILL after 2 s)."""
        self._closed = True
        await self._stop_worker()

    async def preload(self) -> None:
        """Start the worker and load the model now, without a canary run (a warm-up).

        Raises:
            RunFailed: the model could not be loaded (category and error as a run reports).
        """
        await self._ensure_loaded(time.monotonic() + self._load_timeout_s, {})

    async def run(self, session: HttpClient | None) -> ProbeRun:
        """Probe once: (re)load if needed, run the iterations, judge. Never raises.

        ``session`` is unused: the model is a local file.
        """
        ts = now_ms()
        phases: dict[str, float] = {}
        deadline = time.monotonic() + self.target.timeout_s
        try:
            if self._closed:
                raise RunFailed("protocol_error", "the probe is closed")
            inputs, expect = self._canary()
            await self._ensure_loaded(deadline, phases)
            answer = await self._call(
                {
                    "op": "run",
                    "inputs": inputs,
                    "iterations": self._iterations,
                    "expect": expect,
                    "rtol": self.target.options.get("rtol", DEFAULT_RTOL),
                    "atol": self.target.options.get("atol", DEFAULT_ATOL),
                },
                deadline,
                f"{self._iterations} iteration(s)",
                # A run that spent its budget loading gives the canary only what was left:
                # killing the fresh worker then would make a model whose load takes about
                # `timeout` reload forever. Its late answer is skipped by id; a hung model is
                # killed by the next run, which has its whole budget.
                kill_on_timeout="load" not in phases,
            )
            if not answer.get("ok"):
                if answer.get("kind") != "request":
                    # The runtime failed (out of memory, an internal error): the session may be
                    # left in a bad state, so the next run starts from a fresh process.
                    await self._stop_worker()
                raise RunFailed("protocol_error", f"run failed: {answer.get('error')}")
            latencies = [float(x) for x in answer.get("latencies_ms") or []]
            if not latencies:
                raise RunFailed("protocol_error", "the worker answered no latencies")
        except RunFailed as failed:
            return make_run(
                self.target, failed.category, ts_ms=ts, error=failed.error, phases_ms=phases
            )
        stamp = 0
        for value, end in zip(latencies, answer.get("ends_ms") or [], strict=False):
            # Samples are keyed by (series, ms): sub-millisecond iterations would overwrite each
            # other, so stamps are nudged to be strictly increasing.
            stamp = max(int(end), stamp + 1)
            self.add_sample("probe.onnx.iteration_ms", value, stamp)
        for q in (50, 95, 99):
            phases[f"p{q}"] = percentile(latencies, q)
        category, error = "ok", None
        if answer.get("wrong"):
            category, error = "wrong_output", str(answer["wrong"])
        else:
            bound = duration_ms(self.target.options, "max_latency")
            slow = over_bound(phases["p95"], bound, "max_latency (on p95)")
            if slow:
                category, error = "slow", slow
        return make_run(
            self.target, category, ts_ms=ts, error=error, e2e_ms=phases["p50"], phases_ms=phases
        )

    def _canary(self) -> tuple[Any, Any]:
        """Inputs (None: generated) and expected outputs (None: only the NaN check)."""
        opts = self.target.options
        golden = opts.get("golden")
        if not isinstance(golden, str):
            return opts.get("inputs"), opts.get("expect_outputs")
        try:
            st = os.stat(golden)
            key = (st.st_mtime_ns, st.st_size)
            if self._golden_cache is None or self._golden_cache[0] != key:
                golden_inputs, outputs = load_golden(golden)
                self._golden_cache = (key, (golden_inputs or opts.get("inputs"), outputs))
        except (OSError, ValueError) as exc:
            raise RunFailed("protocol_error", f"golden file: {exc}") from None
        return self._golden_cache[1]

    async def _ensure_loaded(self, deadline: float, phases: dict[str, float]) -> None:
        """Have a worker holding the current model file, waiting for a load until ``deadline``.

        The load runs as its own task: a run that gives up waiting (or is cancelled) leaves it
        going, bounded by ``load_timeout``, for the next run to pick up.
        """
        try:
            st = os.stat(self._path)
        except OSError as exc:
            await self._stop_worker()
            raise RunFailed(
                "refused", f"model file unavailable: {exc.strerror or exc}: {self._path}"
            ) from None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._loaded == signature and self._worker is not None:
            return
        if self._loading is None or self._loading_sig != signature:
            # A changed file gets a fresh process rather than a second session in the old one.
            await self._stop_worker()
            self._loading = asyncio.create_task(self._load(signature))
            self._loading_sig = signature
        task = self._loading
        try:
            phases["load"] = await asyncio.wait_for(
                asyncio.shield(task), max(deadline - time.monotonic(), 0.001)
            )
        except TimeoutError:
            raise RunFailed(
                "timeout",
                f"model still loading (load_timeout {self._load_timeout_s:g}s); "
                f"the next run waits for the same load",
            ) from None
        finally:
            if task.done() and self._loading is task:
                self._loading = self._loading_sig = None

    async def _load(self, signature: _Signature) -> float:
        """Start a worker and load the model; the milliseconds it took."""
        start = time.perf_counter_ns()
        try:
            self._worker = await WorkerProcess.start(self._max_memory_mb)
        except OSError as exc:
            raise RunFailed("protocol_error", f"cannot start the ONNX worker: {exc}") from None
        if self._closed:  # closed while the worker was starting: it must not outlive the probe
            await self._stop_worker()
            raise RunFailed("protocol_error", "the probe is closed")
        opts = self.target.options
        answer = await self._call(
            {
                "op": "load",
                "path": str(self._path),
                "intra_op_threads": opts.get("intra_op_threads", 1),
                "providers": opts.get("providers"),
            },
            time.monotonic() + self._load_timeout_s,
            "loading the model",
            self._load_timeout_s,
        )
        # Rebuilt, not updated: nothing of a previous model may linger beside a new one's.
        meta = {k: v for k, v in answer.items() if k not in ("ok", "id", "error", "kind")}
        reloaded = self.info.get("reloaded_at")
        self.info = {"path": str(self._path), **meta}
        self.info.update(artifact_info(meta.get("sha256"), "sha256", signature[2] // 1_000_000))
        if not answer.get("ok"):
            await self._stop_worker()
            raise RunFailed("protocol_error", f"cannot load {self._path}: {answer.get('error')}")
        self._loaded = signature
        self.info["loaded_at"] = now_ms()
        if self._previous is not None and self._previous != signature:
            reloaded = self.info["loaded_at"]
        if reloaded is not None:
            self.info["reloaded_at"] = reloaded
        self._previous = signature
        return elapsed_ms(start)

    async def _call(
        self,
        payload: Mapping[str, Any],
        deadline: float,
        what: str,
        budget_s: float | None = None,
        *,
        kill_on_timeout: bool = True,
    ) -> dict[str, Any]:
        """One request within ``deadline``; a dead or late worker ends the run."""
        worker = self._worker
        if worker is None:
            raise RunFailed("protocol_error", "the ONNX worker was stopped")
        try:
            return await asyncio.wait_for(
                worker.request(payload), max(deadline - time.monotonic(), 0.001)
            )
        except TimeoutError:
            budget = budget_s if budget_s is not None else self.target.timeout_s
            if not kill_on_timeout:
                raise RunFailed(
                    "timeout",
                    f"ONNX worker did not finish {what} within {budget:g}s, most of it spent "
                    f"loading the model",
                ) from None
            await self._stop_worker(kill=True)
            raise RunFailed(
                "timeout", f"ONNX worker did not finish {what} within {budget:g}s; killed"
            ) from None
        except WorkerDied as exc:
            if self._worker is worker:
                self._worker, self._loaded = None, None
            raise RunFailed("protocol_error", str(exc)) from None
        except asyncio.CancelledError:
            # The agent's backstop gave up on this run: a late answer would come out of turn.
            worker.kill()
            if self._worker is worker:
                self._worker, self._loaded = None, None
            raise

    async def _stop_worker(self, *, kill: bool = False) -> None:
        loading, self._loading, self._loading_sig = self._loading, None, None
        if loading is not None and loading is not asyncio.current_task():
            loading.cancel()
            # wait() rather than await: the caller's own cancellation must not be swallowed.
            await asyncio.wait({loading})
            if not loading.cancelled():
                loading.exception()  # retrieved, so asyncio does not log it as lost
        worker, self._worker, self._loaded = self._worker, None, None
        if worker is None:
            return
        if kill:
            worker.kill()
        await worker.close()
