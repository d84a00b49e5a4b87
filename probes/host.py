"""Host-wide resources through psutil: CPU, memory, swap, load, disks, disk I/O and network.

Counters (disk I/O, network) are turned into per-second rates by :class:`RateTracker`, so the
first collection after start emits no rate series: a rate needs two readings.
"""

from __future__ import annotations

import logging
import os
import re
import select
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import psutil

from probes.base import Collector
from storage.records import Labels, Sample, make_labels

log = logging.getLogger(__name__)

RateKey = tuple[str, Labels]
"""A rate's identity: the series name it will be emitted as, and its labels."""


class _Add(Protocol):
    def __call__(self, name: str, value: float, labels: Labels = ..., /) -> None: ...


class RateTracker:
    """Turns snapshots of monotonically increasing counters into per-second rates.

    Each :meth:`update` takes a complete snapshot of one source (all disks, all NICs) and
    replaces the previous one, so a device that disappears is forgotten and one that appears
    gets its first rate on the snapshot after. A counter that went backwards (device reset,
    driver reload, a 32-bit wrap psutil could not correct) yields no rate for that round
    rather than a huge negative spike.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Create an empty tracker.

        Args:
            clock: Monotonic seconds; injectable so tests need not sleep.
        """
        self._clock = clock
        self._last: dict[RateKey, float] = {}
        self._last_t: float | None = None

    def update(self, counters: Mapping[RateKey, float]) -> dict[RateKey, float]:
        """Record a snapshot and return the rates since the previous one.

        Args:
            counters: Current counter values by (series name, labels).

        Returns:
            Per-second rates for every key present in both snapshots whose counter did not
            go backwards; empty on the first snapshot or if no time has passed.
        """
        now = self._clock()
        prev, prev_t = self._last, self._last_t
        self._last, self._last_t = dict(counters), now
        if prev_t is None:
            return {}
        elapsed = now - prev_t
        if elapsed <= 0:
            return {}
        rates: dict[RateKey, float] = {}
        for key, value in counters.items():
            before = prev.get(key)
            if before is None or value < before:
                continue
            rates[key] = (value - before) / elapsed
        return rates


class HostCollector(Collector):
    """Samples host-wide resource usage; see the module docstring for what is emitted."""

    name = "host"

    def __init__(self) -> None:
        """Prime psutil's CPU counters so the first :meth:`collect` reports a real value."""
        # cpu_percent(interval=None) measures since the previous call and returns a
        # meaningless 0.0 the first time. psutil keeps that state module-wide, so another
        # caller in the same process only shortens our window; it cannot corrupt the value.
        psutil.cpu_percent(interval=None)
        psutil.cpu_percent(interval=None, percpu=True)
        self._disk_rates = RateTracker()
        self._net_rates = RateTracker()
        self._mounts = Mounts()

    def close(self) -> None:
        """Release the mount table's descriptor."""
        self._mounts.close()

    def collect(self, ts_ms: int) -> list[Sample]:
        """Return one sample per host series for this instant."""
        out: list[Sample] = []

        def add(name: str, value: float, labels: Labels = ()) -> None:
            out.append(Sample(name=name, labels=labels, ts_ms=ts_ms, value=float(value)))

        self._cpu(add)
        self._memory(add)
        self._disks(add, self._mounts.partitions())
        for (name, labels), rate in self._disk_rates.update(_disk_counters()).items():
            add(name, rate, labels)
        for (name, labels), rate in self._net_rates.update(_net_counters()).items():
            add(name, rate, labels)
        return out

    @staticmethod
    def _cpu(add: _Add) -> None:
        add("host.cpu.percent", psutil.cpu_percent(interval=None))
        for core, pct in enumerate(psutil.cpu_percent(interval=None, percpu=True)):
            add("host.cpu.percent", pct, make_labels(core=core))
        for window, load in zip(("1m", "5m", "15m"), psutil.getloadavg(), strict=True):
            add(f"host.load.{window}", load)

    @staticmethod
    def _memory(add: _Add) -> None:
        mem = psutil.virtual_memory()
        add("host.mem.total_bytes", mem.total)
        add("host.mem.used_bytes", mem.used)
        add("host.mem.available_bytes", mem.available)
        add("host.mem.percent", mem.percent)
        total, used, percent = swap_usage()
        add("host.swap.total_bytes", total)
        add("host.swap.used_bytes", used)
        add("host.swap.percent", percent)

    @staticmethod
    def _disks(add: _Add, partitions: list[Any]) -> None:
        seen: set[str] = set()
        for part in partitions:
            # Bind mounts and container overlays show the same device several times; the
            # first mount is enough, the numbers would only repeat.
            if part.device in seen:
                continue
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except OSError as exc:  # PermissionError included: e.g. another user's FUSE mount
                log.debug("disk.usage_skipped mount=%s error=%s", part.mountpoint, exc)
                continue
            seen.add(part.device)
            labels = make_labels(mount=part.mountpoint)
            add("host.disk.total_bytes", usage.total, labels)
            add("host.disk.used_bytes", usage.used, labels)
            add("host.disk.percent", usage.percent, labels)


class Mounts:
    """The mounted disk partitions, read again only when the mount table changes.

    ``psutil.disk_partitions()`` parses ``/proc/filesystems`` and the mount table at every call
    (about 0.27 ms, a fifth of host sampling each second), and mounts rarely change. Linux
    marks an open ``/proc/self/mounts`` with POLLPRI when one does (proc(5)), so the list is
    read again then: a new mount is sampled at the next collection, as before. Where the file
    cannot be polled (not Linux) it is read every time.
    """

    def __init__(self) -> None:
        self._parts: list[Any] | None = None
        self._fd: int | None = None
        self._poll: select.poll | None = None
        try:
            fd = os.open(f"{psutil.PROCFS_PATH}/self/mounts", os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        self._fd, self._poll = fd, select.poll()
        self._poll.register(fd, select.POLLPRI | select.POLLERR)

    def partitions(self) -> list[Any]:
        """``psutil.disk_partitions(all=False)``, as of now."""
        if self._poll is None or self._parts is None or self._poll.poll(0):
            self._parts = psutil.disk_partitions(all=False)
        return self._parts

    def close(self) -> None:
        """Close the mount table (later calls read it every time)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._poll = None


def swap_usage() -> tuple[float, float, float]:
    """Swap (total bytes, used bytes, percent) as ``psutil.swap_memory()`` reports them.

    From ``/proc/meminfo`` alone: psutil also parses ``/proc/vmstat`` (about 180 lines, 0.15 ms
    a second) for swap-in and swap-out counts, which are not sampled. Elsewhere, or without the
    two lines, psutil answers.
    """
    total = free = None
    try:
        with open(f"{psutil.PROCFS_PATH}/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"SwapTotal:"):
                    total = int(line.split()[1]) * 1024
                elif line.startswith(b"SwapFree:"):
                    free = int(line.split()[1]) * 1024
                    break  # after SwapTotal in every kernel's meminfo
    except (OSError, AttributeError, ValueError, IndexError):
        pass
    if total is None or free is None:
        swap = psutil.swap_memory()
        return swap.total, swap.used, swap.percent
    used = total - free
    return total, used, round(float(used) / total * 100, 1) if total else 0.0


# Virtual and partition devices, as node_exporter ignores them by default: loop and RAM disks
# are noise, and a partition's I/O is already counted in its whole disk.
IGNORED_DISK_DEVICES = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$")


def _disk_counters() -> dict[RateKey, float]:
    counters: dict[RateKey, float] = {}
    # None when the kernel exposes no disk stats at all (some containers).
    for device, io in (psutil.disk_io_counters(perdisk=True) or {}).items():
        if IGNORED_DISK_DEVICES.match(device):
            continue
        labels = make_labels(device=device)
        counters["host.diskio.read_bytes_per_s", labels] = io.read_bytes
        counters["host.diskio.write_bytes_per_s", labels] = io.write_bytes
        counters["host.diskio.read_ops_per_s", labels] = io.read_count
        counters["host.diskio.write_ops_per_s", labels] = io.write_count
    return counters


def _net_counters() -> dict[RateKey, float]:
    counters: dict[RateKey, float] = {}
    for iface, io in (psutil.net_io_counters(pernic=True) or {}).items():
        labels = make_labels(iface=iface)
        counters["host.net.rx_bytes_per_s", labels] = io.bytes_recv
        counters["host.net.tx_bytes_per_s", labels] = io.bytes_sent
        counters["host.net.rx_packets_per_s", labels] = io.packets_recv
        counters["host.net.tx_packets_per_s", labels] = io.packets_sent
        counters["host.net.errors_per_s", labels] = io.errin + io.errout + io.dropin + io.dropout
    return counters
