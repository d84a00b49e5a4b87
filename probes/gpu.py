"""NVIDIA GPUs through NVML (the ``pynvml`` module of the nvidia-ml-py package).

A host without an NVIDIA GPU, driver or library is a normal state, not an error: the collector
then reports ``available == False`` and collects nothing. Boards differ in what they support
(power readings are missing on many), so a metric NVML refuses is skipped on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from probes.base import Collector
from storage.records import Labels, Sample, make_labels

log = logging.getLogger(__name__)

T = TypeVar("T")


class GpuCollector(Collector):
    """Samples utilisation, memory, temperature, power and per-process memory of every GPU."""

    name = "gpu"

    def __init__(self, nvml: Any | None = None) -> None:
        """Create the collector; NVML is initialised on first use, not here.

        Args:
            nvml: The ``pynvml`` module or a stand-in with the same functions (tests).
                Default: ``import pynvml`` when first needed.
        """
        self._nvml: Any | None = nvml
        self._state = "new"  # new -> ready | unavailable; ready -> closed
        # The supervisor may ask processes_using_gpu() from another thread while collect()
        # runs; the lock keeps init and shutdown from racing either of them.
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether NVML initialised and GPUs can be read (initialises NVML if not yet tried)."""
        with self._lock:
            return self._ensure_init()

    def collect(self, ts_ms: int) -> list[Sample]:
        """Return the samples of every GPU, or [] when there is no usable NVML."""
        with self._lock:
            if not self._ensure_init():
                return []
            out: list[Sample] = []
            for index, handle in self._handles():
                out.extend(self._device_samples(index, handle, ts_ms))
            return out

    def processes_using_gpu(self) -> dict[int, int]:
        """GPU memory held per process, summed over all devices.

        Returns:
            ``{pid: bytes}``; empty when there is no usable NVML or no process holds memory.
        """
        with self._lock:
            if not self._ensure_init():
                return {}
            totals: dict[int, int] = {}
            for _, handle in self._handles():
                for pid, used in self._device_processes(handle).items():
                    totals[pid] = totals.get(pid, 0) + used
            return totals

    def inventory(self) -> dict[str, str]:
        """The ``gpu`` section of the serving-environment fingerprint: ``driver``,
        ``cuda_driver`` (the CUDA version the driver supports, ``12.4``), ``nvml``, ``count``
        and ``device.N`` (each GPU's model); empty when there is no usable NVML."""
        with self._lock:
            if not self._ensure_init():
                return {}
            nv = self._nv
            items = {
                "driver": _text(self._call(nv.nvmlSystemGetDriverVersion)),
                "nvml": _text(self._call(nv.nvmlSystemGetNVMLVersion)),
            }
            cuda = self._call(nv.nvmlSystemGetCudaDriverVersion)
            if isinstance(cuda, int) and cuda > 0:
                items["cuda_driver"] = f"{cuda // 1000}.{cuda % 1000 // 10}"  # 12040 -> 12.4
            handles = self._handles()
            items["count"] = str(len(handles))
            for index, handle in handles:
                items[f"device.{index}"] = _text(self._call(nv.nvmlDeviceGetName, handle))
            return {k: v for k, v in items.items() if v}

    def close(self) -> None:
        """Shut NVML down if this collector initialised it."""
        with self._lock:
            if self._state != "ready":
                return
            self._state = "closed"
            try:
                self._nv.nvmlShutdown()
            except self._nv.NVMLError as exc:
                log.warning("gpu.shutdown_failed error=%s", exc)

    @property
    def _nv(self) -> Any:
        assert self._nvml is not None  # set by _ensure_init before any NVML call
        return self._nvml

    def _ensure_init(self) -> bool:
        """Initialise NVML once; a failure is remembered, not retried every collection."""
        if self._state == "new":
            try:
                if self._nvml is None:
                    import pynvml  # deferred: only hosts that ask for GPUs pay for it

                    self._nvml = pynvml
                self._nvml.nvmlInit()
            except Exception as exc:
                self._unavailable(exc)
            else:
                self._state = "ready"
        return self._state == "ready"

    def _unavailable(self, exc: Exception) -> None:
        self._state = "unavailable"
        expected: tuple[type[BaseException], ...] = (ImportError, OSError)
        if self._nvml is not None:
            expected += (self._nvml.NVMLError,)
        if isinstance(exc, expected):
            # No GPU, driver or library is a normal state for a CPU-only host: say so once.
            log.info("gpu.unavailable reason=%s", str(exc) or type(exc).__name__)
        else:
            # Anything else is a bug or a broken driver; still not worth stopping the agent.
            log.warning("gpu.unavailable reason=unexpected error=%r", exc, exc_info=True)

    def _handles(self) -> list[tuple[int, Any]]:
        """Handles of the GPUs present now; a device NVML cannot open (GPU lost) is left out."""
        try:
            count = int(self._nv.nvmlDeviceGetCount())
        except self._nv.NVMLError as exc:
            log.warning("gpu.count_failed error=%s", exc)
            return []
        handles: list[tuple[int, Any]] = []
        for index in range(count):
            handle = self._call(self._nv.nvmlDeviceGetHandleByIndex, index)
            if handle is not None:
                handles.append((index, handle))
        return handles

    def _call(self, fn: Callable[..., T], *args: Any) -> T | None:
        """Call one NVML function; None if the board or driver refuses it (NOT_SUPPORTED...)."""
        try:
            return fn(*args)
        except self._nv.NVMLError as exc:
            log.debug("gpu.call_failed fn=%s error=%s", getattr(fn, "__name__", fn), exc)
            return None

    def _device_samples(self, index: int, handle: Any, ts_ms: int) -> list[Sample]:
        nv = self._nv
        gpu = make_labels(gpu=index)
        out: list[Sample] = []

        def add(name: str, value: float | None, labels: Labels = gpu) -> None:
            if value is not None:
                out.append(Sample(name=name, labels=labels, ts_ms=ts_ms, value=float(value)))

        name = _text(self._call(nv.nvmlDeviceGetName, handle))
        uuid = _text(self._call(nv.nvmlDeviceGetUUID, handle))
        add("gpu.info", 1.0, make_labels(gpu=index, name=name, uuid=uuid))

        util = self._call(nv.nvmlDeviceGetUtilizationRates, handle)
        if util is not None:
            add("gpu.util.percent", util.gpu)
            add("gpu.mem.util.percent", util.memory)
        mem = self._call(nv.nvmlDeviceGetMemoryInfo, handle)
        if mem is not None:
            add("gpu.mem.used_bytes", mem.used)
            add("gpu.mem.total_bytes", mem.total)
        add(
            "gpu.temperature_c",
            self._call(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU),
        )
        power_mw = self._call(nv.nvmlDeviceGetPowerUsage, handle)
        add("gpu.power_w", None if power_mw is None else power_mw / 1000.0)

        for pid, used in sorted(self._device_processes(handle).items()):
            add("gpu.process.mem_bytes", used, make_labels(gpu=index, pid=pid))
        return out

    def _device_processes(self, handle: Any) -> dict[int, int]:
        """GPU memory per pid on one device, compute and graphics contexts together."""
        nv = self._nv
        per_pid: dict[int, int] = {}
        for fn in (
            nv.nvmlDeviceGetComputeRunningProcesses,
            nv.nvmlDeviceGetGraphicsRunningProcesses,
        ):
            for info in self._call(fn, handle) or ():
                # None where the driver cannot attribute memory (WDDM, some MIG setups).
                if info.usedGpuMemory is None:
                    continue
                # A process with both a compute and a graphics context is listed in both with
                # the same figure ("C+G" in nvidia-smi); adding them would double-count.
                per_pid[int(info.pid)] = max(per_pid.get(int(info.pid), 0), int(info.usedGpuMemory))
        return per_pid


def _text(value: object) -> str:
    """NVML strings as str: older pynvml releases return bytes."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
