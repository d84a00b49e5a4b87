"""The agent's side of the ONNX worker: start ``probes.onnx_worker``, talk to it, record goldens.

onnxruntime is never imported here: everything that touches a model happens in the worker
process, so a model that crashes the runtime or eats memory costs a worker, not the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probes.base import now_ms

DEFAULT_MAX_MEMORY_MB = 2048
STDERR_TAIL_LINES = 5
_STREAM_LIMIT = 64 << 20  # one answer line can hold whole output tensors (record-golden)
_CLOSE_GRACE_S = 2.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
# numpy's BLAS would start one thread per core, each reserving address space that counts
# against the worker's RLIMIT_AS; the worker only converts small arrays with numpy.
_SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class OnnxError(RuntimeError):
    """The worker could not load or run a model."""


class WorkerDied(OnnxError):
    """The worker process exited; the message says how and quotes its last stderr lines."""


class GoldenInputError(OnnxError):
    """What :func:`record_golden` was given is wrong (model file, inputs): a usage error."""


class WorkerProcess:
    """One ``python -m probes.onnx_worker`` child and the JSON-lines conversation with it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._next_id = 0
        # Drained continuously: a worker blocked on a full stderr pipe would look hung.
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    @classmethod
    async def start(cls, max_memory_mb: int = DEFAULT_MAX_MEMORY_MB) -> WorkerProcess:
        """Start a worker in its own session (process group) under a memory cap.

        Raises:
            OSError: the interpreter could not be started.
        """
        env = {**os.environ, **_SINGLE_THREADED}
        # The worker imports probes.onnx_worker from this checkout or install, whatever the cwd;
        # -P keeps the cwd off sys.path, so a stray numpy.py there is not imported.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "probes.onnx_worker",
            "--max-memory-mb",
            str(max_memory_mb),
            "--parent-pid",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=env,
            limit=_STREAM_LIMIT,
        )
        return cls(proc)

    @property
    def pid(self) -> int:
        """The worker's process id (also its process group id)."""
        return self.proc.pid

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(ValueError, ConnectionError):
            while line := await self.proc.stderr.readline():
                self.stderr_tail.append(line.decode("utf-8", errors="replace").rstrip())

    async def request(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer.

        Raises:
            WorkerDied: the worker exited (or spoke garbage and was killed) before answering.
        """
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._next_id += 1
        line = json.dumps({**payload, "id": self._next_id}) + "\n"
        try:
            self.proc.stdin.write(line.encode("utf-8"))
            await self.proc.stdin.drain()
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise WorkerDied(await self.describe_exit())
                answer = json.loads(raw)
                if isinstance(answer, dict) and answer.get("id") == self._next_id:
                    return answer
        except (BrokenPipeError, ConnectionResetError):
            raise WorkerDied(await self.describe_exit()) from None
        except ValueError as exc:  # an undecodable or over-long line: the protocol is broken
            self.kill()
            raise WorkerDied(f"worker sent a malformed answer ({exc}); killed") from None

    async def describe_exit(self) -> str:
        """How the worker ended: ``signal SIGKILL (exit -9)`` or ``exit 1``, and stderr's end."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), _CLOSE_GRACE_S)
        except TimeoutError:
            self.kill()
            code = await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        if code < 0:
            try:
                how = f"signal {signal.Signals(-code).name} (exit {code})"
            except ValueError:
                how = f"signal {-code} (exit {code})"
        else:
            how = f"exit {code}"
        tail = " | ".join(line for line in self.stderr_tail if line)
        return f"worker died: {how}" + (f"; stderr: {tail}" if tail else "")

    def kill(self) -> None:
        """SIGKILL the worker's whole process group, now."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        """End the worker: stdin closed and SIGTERM, then SIGKILL after a grace period."""
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), _CLOSE_GRACE_S)
            except TimeoutError:
                self.kill()
                await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stderr_task, 1.0)


async def record_golden_async(
    model: Path,
    inputs: Mapping[str, Any] | None,
    out_path: Path,
    *,
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Run ``model`` once in a worker and write its inputs and outputs as a golden file.

    Args:
        model: the ``.onnx`` file.
        inputs: ``{input name: nested list}``; None generates them from the signature (they
            are written to the file, so later runs feed the same values).
        out_path: where the golden JSON goes (written atomically).

    Returns:
        What was written: ``model``, ``sha256``, ``recorded_at_ms``, ``inputs``, ``outputs``.

    Raises:
        GoldenInputError: the model file is missing or not a loadable ONNX model, or the
            inputs do not fit it.
        OnnxError: the model did not run (the worker died or took over ``timeout_s``), or its
            outputs hold NaN.
    """
    if not await asyncio.to_thread(model.is_file):  # no worker for a typo
        raise GoldenInputError(f"{model}: no such model file")
    worker = await WorkerProcess.start(max_memory_mb)
    try:
        async with asyncio.timeout(timeout_s):
            load = await worker.request({"op": "load", "path": str(model)})
            if not load.get("ok"):
                raise GoldenInputError(f"cannot load {model}: {load.get('error')}")
            run = await worker.request(
                {"op": "run", "inputs": inputs, "iterations": 1, "return_outputs": True}
            )
        if not run.get("ok"):
            cls = GoldenInputError if run.get("kind") == "request" else OnnxError
            raise cls(f"cannot run {model}: {run.get('error')}")
        if run.get("wrong"):
            raise OnnxError(f"refusing to record a broken output: {run['wrong']}")
    except TimeoutError:
        worker.kill()
        raise OnnxError(f"{model} did not answer within {timeout_s:g}s") from None
    finally:
        await worker.close()
    golden = {
        "model": str(model),
        "sha256": load.get("sha256"),
        "recorded_at_ms": now_ms(),
        "inputs": run["inputs"],
        "outputs": run["outputs"],
    }
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(golden) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)  # a probe reading the golden never sees half a file
    return golden


def record_golden(
    model: Path,
    inputs: Mapping[str, Any] | None,
    out_path: Path,
    *,
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Synchronous :func:`record_golden_async` for the CLI (no event loop may be running)."""
    return asyncio.run(
        record_golden_async(
            model, inputs, out_path, max_memory_mb=max_memory_mb, timeout_s=timeout_s
        )
    )


def load_golden(path: str | Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The inputs (or None) and expected outputs of a golden file.

    Raises:
        ValueError: the file is unreadable or not ``{"inputs"?, "outputs": {...}}``.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    outputs = data.get("outputs") if isinstance(data, dict) else None
    inputs = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        raise ValueError(f"{path}: expected an object with non-empty 'outputs'")
    if inputs is not None and not isinstance(inputs, dict):
        raise ValueError(f"{path}: 'inputs' must be an object of input name -> list")
    return inputs, outputs
