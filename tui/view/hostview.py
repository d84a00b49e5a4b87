"""What the host screen shows, extracted from an :class:`AgentStatus`'s flat resource list.

The agent reports resources as ``(name, labels, value)`` triples; this module groups them into
the rows a person reads (one per disk, interface, GPU) without any Textual, so it is tested on
its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from storage.records import AgentStatus, ResourceValue

LOOPBACK_IFACES = frozenset({"lo", "lo0"})
"""Interfaces not worth a row: traffic to oneself says nothing about serving load."""


@dataclass(frozen=True, slots=True)
class DiskRow:
    """One mounted filesystem."""

    mount: str
    used_bytes: float | None
    total_bytes: float | None
    percent: float | None


@dataclass(frozen=True, slots=True)
class NetRow:
    """One network interface's current rates."""

    iface: str
    rx_bytes_per_s: float | None
    tx_bytes_per_s: float | None


@dataclass(frozen=True, slots=True)
class GpuRow:
    """One GPU."""

    gpu: str
    util_percent: float | None
    mem_used_bytes: float | None
    mem_total_bytes: float | None
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """Resource use of one supervised process, keyed by its name."""

    cpu_percent: float | None = None
    rss_bytes: float | None = None
    threads: float | None = None
    open_files: float | None = None


@dataclass(frozen=True, slots=True)
class HostView:
    """A host's resources grouped for display. Every value is None when the agent lacks it."""

    cpu_percent: float | None = None
    cores: tuple[tuple[str, float], ...] = ()
    mem_total_bytes: float | None = None
    mem_used_bytes: float | None = None
    mem_available_bytes: float | None = None
    mem_percent: float | None = None
    swap_total_bytes: float | None = None
    swap_used_bytes: float | None = None
    swap_percent: float | None = None
    load: tuple[float | None, float | None, float | None] = (None, None, None)
    disks: tuple[DiskRow, ...] = ()
    disk_read_bytes_per_s: float | None = None
    disk_write_bytes_per_s: float | None = None
    nets: tuple[NetRow, ...] = ()
    gpus: tuple[GpuRow, ...] = ()
    processes: Mapping[str, ProcessUsage] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: AgentStatus) -> HostView:
        """Group a status's resources.

        Args:
            status: What the agent reported.

        Returns:
            The view; missing series simply stay None or empty.
        """
        return from_resources(status.resources)


def _natural(key: str) -> tuple[int, int, str]:
    """Sort ``"10"`` after ``"9"`` and numbers before names (cores, GPUs, devices)."""
    return (0, int(key), key) if key.isdigit() else (1, 0, key)


def _percent(used: float | None, total: float | None) -> float | None:
    if used is None or not total:
        return None
    return used / total * 100.0


def from_resources(resources: Iterable[ResourceValue]) -> HostView:
    """Group resource values into a :class:`HostView` (see :meth:`HostView.from_status`)."""
    plain: dict[str, float] = {}
    # name -> label value -> (value) for the series that carry exactly one identifying label.
    by_label: dict[str, dict[str, float]] = defaultdict(dict)
    label_for = {
        "host.cpu.percent": "core",
        "host.disk.": "mount",
        "host.diskio.": "device",
        "host.net.": "iface",
        "gpu.": "gpu",
        "process.": "process",
    }
    for res in resources:
        labels = dict(res.labels)
        if not labels:
            plain[res.name] = res.value
            continue
        for prefix, key in label_for.items():
            if res.name.startswith(prefix) and key in labels:
                by_label[res.name][labels[key]] = res.value
                break

    cores = tuple(sorted(by_label["host.cpu.percent"].items(), key=lambda kv: _natural(kv[0])))

    mem_total = plain.get("host.mem.total_bytes")
    mem_used = plain.get("host.mem.used_bytes")
    swap_total = plain.get("host.swap.total_bytes")
    swap_used = plain.get("host.swap.used_bytes")

    disk_used = by_label["host.disk.used_bytes"]
    disk_total = by_label["host.disk.total_bytes"]
    disk_pct = by_label["host.disk.percent"]
    mounts = sorted(set(disk_used) | set(disk_total) | set(disk_pct))
    disks = tuple(
        DiskRow(
            mount=m,
            used_bytes=disk_used.get(m),
            total_bytes=disk_total.get(m),
            percent=disk_pct.get(m, _percent(disk_used.get(m), disk_total.get(m))),
        )
        for m in mounts
    )

    reads = by_label["host.diskio.read_bytes_per_s"]
    writes = by_label["host.diskio.write_bytes_per_s"]

    rx = by_label["host.net.rx_bytes_per_s"]
    tx = by_label["host.net.tx_bytes_per_s"]
    ifaces = sorted((set(rx) | set(tx)) - LOOPBACK_IFACES, key=_natural)
    nets = tuple(
        NetRow(iface=i, rx_bytes_per_s=rx.get(i), tx_bytes_per_s=tx.get(i)) for i in ifaces
    )

    gpu_series = {
        k: by_label[f"gpu.{k}"]
        for k in ("util.percent", "mem.used_bytes", "mem.total_bytes", "temperature_c", "power_w")
    }
    gpu_ids = sorted(set().union(*(set(v) for v in gpu_series.values())), key=_natural)
    gpus = tuple(
        GpuRow(
            gpu=g,
            util_percent=gpu_series["util.percent"].get(g),
            mem_used_bytes=gpu_series["mem.used_bytes"].get(g),
            mem_total_bytes=gpu_series["mem.total_bytes"].get(g),
            temperature_c=gpu_series["temperature_c"].get(g),
            power_w=gpu_series["power_w"].get(g),
        )
        for g in gpu_ids
    )

    proc_series = {
        k: by_label[f"process.{k}"] for k in ("cpu.percent", "rss_bytes", "threads", "open_files")
    }
    proc_names = set().union(*(set(v) for v in proc_series.values()))
    processes = {
        p: ProcessUsage(
            cpu_percent=proc_series["cpu.percent"].get(p),
            rss_bytes=proc_series["rss_bytes"].get(p),
            threads=proc_series["threads"].get(p),
            open_files=proc_series["open_files"].get(p),
        )
        for p in proc_names
    }

    return HostView(
        cpu_percent=plain.get("host.cpu.percent"),
        cores=cores,
        mem_total_bytes=mem_total,
        mem_used_bytes=mem_used,
        mem_available_bytes=plain.get("host.mem.available_bytes"),
        mem_percent=plain.get("host.mem.percent", _percent(mem_used, mem_total)),
        swap_total_bytes=swap_total,
        swap_used_bytes=swap_used,
        swap_percent=plain.get("host.swap.percent", _percent(swap_used, swap_total)),
        load=(plain.get("host.load.1m"), plain.get("host.load.5m"), plain.get("host.load.15m")),
        disks=disks,
        disk_read_bytes_per_s=sum(reads.values()) if reads else None,
        disk_write_bytes_per_s=sum(writes.values()) if writes else None,
        nets=nets,
        gpus=gpus,
        processes=processes,
    )
