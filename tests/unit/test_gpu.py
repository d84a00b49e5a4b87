"""GpuCollector against a fake NVML (the only thing faked), and the real pynvml without a GPU."""

from __future__ import annotations

import ctypes.util
import logging
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from probes.gpu import GpuCollector
from storage.records import Sample, make_labels

NOT_SUPPORTED = 3  # pynvml.NVML_ERROR_NOT_SUPPORTED
LIBRARY_NOT_FOUND = 12  # pynvml.NVML_ERROR_LIBRARY_NOT_FOUND


class FakeNVMLError(Exception):
    """pynvml.NVMLError carries the NVML return code as ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


@dataclass
class FakeDevice:
    name: str
    uuid: str
    util_gpu: int
    util_mem: int
    mem_used: int
    mem_total: int
    temp_c: int
    power_mw: int | None  # None: the board does not report power (NOT_SUPPORTED)
    compute: list[tuple[int, int | None]] = field(default_factory=list)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)


class FakeNVML:
    """The slice of pynvml that GpuCollector uses, with the same call shapes.

    Handles are opaque to callers (ctypes pointers in pynvml); here they are the device objects.
    """

    NVMLError = FakeNVMLError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, devices: list[FakeDevice], init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str:
        return handle.name

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str:
        return handle.uuid

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> SimpleNamespace:
        return SimpleNamespace(gpu=handle.util_gpu, memory=handle.util_mem)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> SimpleNamespace:
        return SimpleNamespace(
            total=handle.mem_total, used=handle.mem_used, free=handle.mem_total - handle.mem_used
        )

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return handle.temp_c

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:
        if handle.power_mw is None:
            raise FakeNVMLError(NOT_SUPPORTED)
        return handle.power_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle.compute]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle.graphics]


GIB = 1024**3


def two_gpus() -> list[FakeDevice]:
    return [
        FakeDevice(
            name="NVIDIA A100-SXM4-80GB",
            uuid="GPU-aaaa",
            util_gpu=87,
            util_mem=40,
            mem_used=30 * GIB,
            mem_total=80 * GIB,
            temp_c=61,
            power_mw=245_500,
            compute=[(1001, 20 * GIB), (1002, None)],
            graphics=[(1003, GIB)],
        ),
        FakeDevice(
            name="NVIDIA L4",
            uuid="GPU-bbbb",
            util_gpu=3,
            util_mem=1,
            mem_used=2 * GIB,
            mem_total=24 * GIB,
            temp_c=38,
            power_mw=None,
            compute=[(1001, 2 * GIB)],
            graphics=[(1001, 2 * GIB)],
        ),
    ]


def by_key(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    keys = [(s.name, s.labels) for s in samples]
    assert len(keys) == len(set(keys))
    return {(s.name, s.labels): s.value for s in samples}


def test_two_gpus_series_values_and_units() -> None:
    collector = GpuCollector(nvml=FakeNVML(two_gpus()))
    assert collector.available
    samples = collector.collect(ts_ms=42)
    assert all(s.ts_ms == 42 for s in samples)
    values = by_key(samples)
    g0, g1 = make_labels(gpu=0), make_labels(gpu=1)

    assert (
        values["gpu.info", make_labels(gpu=0, name="NVIDIA A100-SXM4-80GB", uuid="GPU-aaaa")] == 1.0
    )
    assert values["gpu.info", make_labels(gpu=1, name="NVIDIA L4", uuid="GPU-bbbb")] == 1.0
    assert values["gpu.util.percent", g0] == 87.0
    assert values["gpu.mem.util.percent", g0] == 40.0
    assert values["gpu.mem.used_bytes", g0] == 30 * GIB
    assert values["gpu.mem.total_bytes", g0] == 80 * GIB
    assert values["gpu.temperature_c", g0] == 61.0
    assert values["gpu.power_w", g0] == pytest.approx(245.5)  # milliwatts -> watts
    assert values["gpu.util.percent", g1] == 3.0
    assert values["gpu.mem.total_bytes", g1] == 24 * GIB
    assert values["gpu.temperature_c", g1] == 38.0

    procs = {
        (dict(s.labels)["gpu"], dict(s.labels)["pid"]): s.value
        for s in samples
        if s.name == "gpu.process.mem_bytes"
    }
    # pid 1002's memory is unknown (None): skipped. pid 1001 on gpu 1 is listed as both a
    # compute and a graphics context with the same figure: counted once.
    assert procs == {("0", "1001"): 20 * GIB, ("0", "1003"): GIB, ("1", "1001"): 2 * GIB}


def test_not_supported_power_skips_only_power() -> None:
    samples = GpuCollector(nvml=FakeNVML(two_gpus())).collect(ts_ms=1)
    g1 = make_labels(gpu=1)
    names_g1 = {s.name for s in samples if s.labels == g1}
    assert names_g1 == {
        "gpu.util.percent",
        "gpu.mem.util.percent",
        "gpu.mem.used_bytes",
        "gpu.mem.total_bytes",
        "gpu.temperature_c",
    }
    assert ("gpu.power_w", make_labels(gpu=0)) in by_key(samples)


def test_processes_using_gpu_sums_over_devices() -> None:
    collector = GpuCollector(nvml=FakeNVML(two_gpus()))
    assert collector.processes_using_gpu() == {1001: 22 * GIB, 1003: GIB}


def test_device_that_cannot_be_opened_is_skipped() -> None:
    class LostSecond(FakeNVML):
        def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
            if index == 1:
                raise FakeNVMLError(15)  # NVML_ERROR_GPU_IS_LOST
            return super().nvmlDeviceGetHandleByIndex(index)

    samples = GpuCollector(nvml=LostSecond(two_gpus())).collect(ts_ms=1)
    assert samples
    assert {dict(s.labels)["gpu"] for s in samples} == {"0"}


def test_init_failure_means_unavailable_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNVML(two_gpus(), init_error=LIBRARY_NOT_FOUND)
    collector = GpuCollector(nvml=nvml)
    with caplog.at_level(logging.INFO, logger="probes.gpu"):
        assert not collector.available
        assert collector.collect(ts_ms=1) == []
        assert collector.collect(ts_ms=2) == []
        assert collector.processes_using_gpu() == {}
    assert nvml.init_calls == 1
    logged = [r for r in caplog.records if r.name == "probes.gpu"]
    assert len(logged) == 1
    assert logged[0].levelno == logging.INFO
    collector.close()
    assert nvml.shutdown_calls == 0  # never initialised: nothing to shut down


def test_missing_pynvml_module_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    collector = GpuCollector()
    assert not collector.available
    assert collector.collect(ts_ms=1) == []


def test_close_shuts_nvml_down_once_and_stops_collecting() -> None:
    nvml = FakeNVML(two_gpus())
    collector = GpuCollector(nvml=nvml)
    assert collector.collect(ts_ms=1)
    collector.close()
    collector.close()
    assert nvml.shutdown_calls == 1
    assert not collector.available
    assert collector.collect(ts_ms=2) == []


def test_init_is_lazy() -> None:
    nvml = FakeNVML(two_gpus())
    GpuCollector(nvml=nvml)
    assert nvml.init_calls == 0


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None, reason="this machine has an NVIDIA driver"
)
def test_real_pynvml_without_gpu_is_unavailable() -> None:
    collector = GpuCollector()
    try:
        assert collector.available is False
        assert collector.collect(ts_ms=1) == []
        assert collector.processes_using_gpu() == {}
    finally:
        collector.close()
