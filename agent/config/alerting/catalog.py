"""The series an alert rule may watch, with the labels each one carries.

A rule naming a series outside this catalogue is refused at config load (a typo would
otherwise watch nothing, silently). The names are those the collectors and probes write (see
the README's "Series collected"); ``model.metric.*`` are the metrics a ``metrics`` probe keeps.
"""

from __future__ import annotations

_HOST = {
    "host.cpu.percent": ("core",),
    "host.load.1m": (),
    "host.load.5m": (),
    "host.load.15m": (),
    "host.mem.total_bytes": (),
    "host.mem.used_bytes": (),
    "host.mem.available_bytes": (),
    "host.mem.percent": (),
    "host.swap.total_bytes": (),
    "host.swap.used_bytes": (),
    "host.swap.percent": (),
    "host.disk.total_bytes": ("mount",),
    "host.disk.used_bytes": ("mount",),
    "host.disk.percent": ("mount",),
}
_DISKIO = ("read_bytes_per_s", "write_bytes_per_s", "read_ops_per_s", "write_ops_per_s")
_NET = ("rx_bytes_per_s", "tx_bytes_per_s", "rx_packets_per_s", "tx_packets_per_s", "errors_per_s")
_PROCESS = ("cpu.percent", "rss_bytes", "threads", "open_files", "children")
_GPU = (
    "util.percent",
    "mem.util.percent",
    "mem.used_bytes",
    "mem.total_bytes",
    "temperature_c",
    "power_w",
)
_PROBE = (
    "up",
    "e2e_ms",
    "ttft_ms",
    "itl_ms",
    "tokens_per_s",
    "server_eval_tokens_per_s",
    "onnx.iteration_ms",
)

SERIES: dict[str, tuple[str, ...]] = {
    **_HOST,
    **{f"host.diskio.{n}": ("device",) for n in _DISKIO},
    **{f"host.net.{n}": ("iface",) for n in _NET},
    **{f"process.{n}": ("process",) for n in _PROCESS},
    **{f"gpu.{n}": ("gpu",) for n in _GPU},
    "gpu.process.mem_bytes": ("gpu", "pid"),
    **{f"probe.{n}": ("model",) for n in _PROBE},
}
"""Series name -> the label keys its series carry."""

SERIES_PREFIXES: dict[str, tuple[str, ...]] = {"model.metric.": ("model",)}
"""Families of series whose names are made at run time (a ``metrics`` probe's kept metrics)."""


def series_labels(name: str) -> tuple[str, ...] | None:
    """The label keys of series ``name``, or None when no such series is collected."""
    if name in SERIES:
        return SERIES[name]
    for prefix, keys in SERIES_PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return keys
    return None


def subject_of(labels: dict[str, str]) -> str:
    """The subject (as incidents and events name it) a series' labels point at."""
    if "model" in labels:
        return f"model:{labels['model']}"
    if "process" in labels:
        return f"process:{labels['process']}"
    if "gpu" in labels:
        return f"gpu:{labels['gpu']}"
    return "host"
