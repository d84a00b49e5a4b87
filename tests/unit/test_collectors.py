"""Host and process collectors against this real machine, and the rate helper with a fake clock."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from probes.host import HostCollector, RateTracker
from probes.process import ProcessCollector
from storage.records import Sample, make_labels

SCALAR_SERIES = (
    "host.cpu.percent",
    "host.mem.total_bytes",
    "host.mem.used_bytes",
    "host.mem.available_bytes",
    "host.mem.percent",
    "host.swap.total_bytes",
    "host.swap.used_bytes",
    "host.swap.percent",
    "host.load.1m",
    "host.load.5m",
    "host.load.15m",
)
DISKIO_SERIES = (
    "host.diskio.read_bytes_per_s",
    "host.diskio.write_bytes_per_s",
    "host.diskio.read_ops_per_s",
    "host.diskio.write_ops_per_s",
)
NET_SERIES = (
    "host.net.rx_bytes_per_s",
    "host.net.tx_bytes_per_s",
    "host.net.rx_packets_per_s",
    "host.net.tx_packets_per_s",
    "host.net.errors_per_s",
)


def by_key(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    keys = [(s.name, s.labels) for s in samples]
    assert len(keys) == len(set(keys)), "a series was emitted twice in one collection"
    return {(s.name, s.labels): s.value for s in samples}


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# --- RateTracker -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rate_tracker_first_snapshot_has_no_rates_then_rates_per_second() -> None:
    clock = FakeClock()
    rates = RateTracker(clock)
    key = ("x.per_s", make_labels(device="sda"))
    assert rates.update({key: 1000.0}) == {}
    clock.t += 2.0
    assert rates.update({key: 1500.0}) == {key: 250.0}


def test_rate_tracker_skips_counter_reset_and_recovers() -> None:
    clock = FakeClock()
    rates = RateTracker(clock)
    key = ("x.per_s", ())
    rates.update({key: 1000.0})
    clock.t += 1.0
    assert rates.update({key: 10.0}) == {}  # went backwards: no rate, not a negative one
    clock.t += 1.0
    assert rates.update({key: 30.0}) == {key: 20.0}


def test_rate_tracker_devices_appearing_and_disappearing() -> None:
    clock = FakeClock()
    rates = RateTracker(clock)
    a, b = ("r", make_labels(iface="a")), ("r", make_labels(iface="b"))
    rates.update({a: 0.0})
    clock.t += 1.0
    assert rates.update({a: 5.0, b: 100.0}) == {a: 5.0}  # b is new: needs a second reading
    clock.t += 1.0
    assert rates.update({b: 110.0}) == {b: 10.0}  # a vanished
    clock.t += 1.0
    assert rates.update({a: 50.0, b: 110.0}) == {b: 0.0}  # a is back: treated as new


def test_rate_tracker_no_elapsed_time_gives_no_rates() -> None:
    clock = FakeClock()
    rates = RateTracker(clock)
    rates.update({("r", ()): 1.0})
    assert rates.update({("r", ()): 2.0}) == {}


# --- HostCollector -----------------------------------------------------------------------


def test_host_collector_first_call_scalars_cores_memory_disks() -> None:
    collector = HostCollector()
    samples = collector.collect(ts_ms=1234)
    values = by_key(samples)
    assert all(s.ts_ms == 1234 for s in samples)

    for name in SCALAR_SERIES:
        assert (name, ()) in values, name

    ncores = psutil.cpu_count()
    assert ncores
    assert 0.0 <= values["host.cpu.percent", ()] <= 100.0 * ncores
    cores = [s for s in samples if s.name == "host.cpu.percent" and s.labels]
    assert len(cores) == ncores
    assert {s.labels for s in cores} == {make_labels(core=i) for i in range(ncores)}
    assert all(0.0 <= s.value <= 100.0 for s in cores)

    mem = psutil.virtual_memory()
    total = values["host.mem.total_bytes", ()]
    assert total == mem.total
    assert 0 < values["host.mem.used_bytes", ()] <= total
    assert 0 < values["host.mem.available_bytes", ()] <= total
    # Memory moves between two reads; within a tenth of RAM is "the same reading".
    assert abs(values["host.mem.used_bytes", ()] - mem.used) < 0.1 * total
    assert 0.0 <= values["host.mem.percent", ()] <= 100.0
    assert values["host.swap.used_bytes", ()] <= values["host.swap.total_bytes", ()]
    assert values["host.load.1m", ()] >= 0.0

    disks = [s for s in samples if s.name == "host.disk.total_bytes"]
    assert disks, "this machine has at least its root filesystem"
    for s in disks:
        mount = dict(s.labels)["mount"]
        assert values["host.disk.used_bytes", s.labels] <= s.value
        assert 0.0 <= values["host.disk.percent", s.labels] <= 100.0
        assert mount

    # Rates need two readings.
    assert not [s for s in samples if s.name.startswith(("host.diskio.", "host.net."))]


def test_host_collector_second_call_emits_rates() -> None:
    collector = HostCollector()
    collector.collect(ts_ms=1)
    # monotonic() must move on between the calls; generating a little traffic helps too.
    start = time.monotonic()
    wait_until(lambda: time.monotonic() > start)
    samples = collector.collect(ts_ms=2)
    values = by_key(samples)

    ifaces = set(psutil.net_io_counters(pernic=True))
    assert ifaces
    for iface in ifaces:
        for name in NET_SERIES:
            assert values[name, make_labels(iface=iface)] >= 0.0

    devices = set(psutil.disk_io_counters(perdisk=True) or {})
    rate_devices = {dict(s.labels)["device"] for s in samples if s.name.startswith("host.diskio")}
    assert rate_devices <= devices
    if devices:  # some containers expose no disk stats at all
        assert rate_devices
    for s in samples:
        if s.name.startswith(("host.diskio.", "host.net.")):
            assert s.value >= 0.0, s


def test_host_collector_dedupes_devices_and_skips_unreadable_mounts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = [
        SimpleNamespace(device="/dev/x", mountpoint="/"),
        SimpleNamespace(device="/dev/x", mountpoint="/bind-of-root"),
        SimpleNamespace(device="/dev/y", mountpoint="/forbidden"),
        SimpleNamespace(device="/dev/z", mountpoint="/gone"),
    ]
    real_usage = psutil.disk_usage

    def fake_usage(path: str) -> Any:
        if path == "/forbidden":
            raise PermissionError(13, "Permission denied", path)
        if path == "/gone":
            raise OSError(2, "No such file or directory", path)
        return real_usage("/")

    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: parts)
    monkeypatch.setattr(psutil, "disk_usage", fake_usage)
    samples = HostCollector().collect(ts_ms=1)
    mounts = {dict(s.labels)["mount"] for s in samples if s.name.startswith("host.disk.")}
    assert mounts == {"/"}


# --- ProcessCollector --------------------------------------------------------------------

# Forks a worker that burns CPU (so the tree's CPU is visibly non-zero), says "ready" and
# sleeps. On SIGTERM it kills and reaps the worker itself, so teardown need not wait for init
# to reap an orphan.
PARENT_SCRIPT = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time\\nprint('up', flush=True)\\n"
                          "end = time.time() + 60\\nwhile time.time() < end: pass"],
                         stdout=subprocess.PIPE)
child.stdout.readline()  # the worker's interpreter is up: its RSS is what the test sums
def stop(*_):
    child.kill()
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # the handler did not run: take the tree down by force
        children = psutil.Process(proc.pid).children(recursive=True)
        for p in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.kill()
        proc.wait(timeout=10)
        psutil.wait_procs(children, timeout=10)


@pytest.fixture
def forking_parent() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        # "ready" comes after the worker's interpreter is up and the SIGTERM handler is in place.
        assert proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        stop_tree(proc)
        proc.stdout.close()


def series(samples: list[Sample], process: str) -> dict[str, float]:
    labels = make_labels(process=process)
    return {s.name: s.value for s in samples if s.labels == labels}


def test_process_collector_sums_over_the_tree(forking_parent: subprocess.Popen[bytes]) -> None:
    collector = ProcessCollector(lambda: {"server": forking_parent.pid})
    got = series(collector.collect(ts_ms=7), "server")
    assert set(got) == {
        "process.cpu.percent",
        "process.rss_bytes",
        "process.threads",
        "process.open_files",
        "process.children",
    }
    assert got["process.children"] >= 1
    root = psutil.Process(forking_parent.pid)
    assert got["process.rss_bytes"] > root.memory_info().rss * 1.2  # the child's RSS counts
    assert got["process.threads"] >= 2  # one per process at least
    assert got["process.open_files"] >= 3  # stdin/stdout/stderr
    assert got["process.cpu.percent"] >= 0.0

    # The cached Process objects make the second reading a real CPU measurement: the busy
    # child shows up (without the cache every reading would be the priming 0.0).
    def busy() -> bool:
        return series(collector.collect(ts_ms=8), "server")["process.cpu.percent"] > 10.0

    wait_until(busy)


def test_process_collector_skips_exited_pid_without_raising(
    forking_parent: subprocess.Popen[bytes],
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=10)
    collector = ProcessCollector(lambda: {"gone": gone.pid, "server": forking_parent.pid})
    samples = collector.collect(ts_ms=1)
    assert series(samples, "gone") == {}
    assert series(samples, "server")["process.rss_bytes"] > 0


def test_process_collector_forgets_processes_that_exit() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    targets = {"p": proc.pid}
    collector = ProcessCollector(lambda: targets)
    try:
        assert series(collector.collect(ts_ms=1), "p")["process.children"] == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert collector.collect(ts_ms=2) == []
    targets.clear()
    assert collector.collect(ts_ms=3) == []
    assert collector._procs == {}


@pytest.mark.parametrize(
    ("device", "ignored"),
    [
        ("loop0", True),
        ("zram0", True),
        ("ram1", True),
        ("vda1", True),
        ("sda2", True),
        ("nvme0n1p1", True),
        ("vda", False),
        ("sda", False),
        ("nvme0n1", False),
        ("dm-0", False),
        ("md0", False),
    ],
)
def test_virtual_and_partition_devices_are_ignored(device: str, ignored: bool) -> None:
    from probes.host import IGNORED_DISK_DEVICES

    assert bool(IGNORED_DISK_DEVICES.match(device)) is ignored
