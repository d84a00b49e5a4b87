"""The host part of the serving-environment fingerprint: OS, kernel, CPU model, C library.

Read from files (``/etc/os-release``, ``/proc/cpuinfo``) and the standard library, never by
running a command; blocking but cheap (a few small reads): the agent calls it in a thread.
Every value is made printable and bounded, since a file's text is data, not markup.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from storage.text import printable

__all__ = ["MAX_VALUE_CHARS", "clean", "host_items", "read_os_release"]

MAX_VALUE_CHARS = 200
"""Longest value kept for one item (a version, a model name, a path)."""

OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
CPUINFO = Path("/proc/cpuinfo")
_CPU_KEYS = ("model name", "Model", "cpu model", "Hardware", "cpu")
"""``/proc/cpuinfo``'s name for the model: x86 says ``model name``; arm64 boards ``Model``
or only ``Hardware``; others ``cpu model`` or ``cpu``."""


def clean(value: object) -> str:
    """A value as stored: printable, stripped, at most :data:`MAX_VALUE_CHARS` characters."""
    return printable(value).strip()[:MAX_VALUE_CHARS]


def read_os_release(paths: tuple[Path, ...] = OS_RELEASE) -> dict[str, str]:
    """The first readable os-release file as ``{KEY: value}`` (quotes removed)."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        out: dict[str, str] = {}
        for line in text.splitlines()[:200]:
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                    value = value[1:-1]
                out[key.strip()] = value
        return out
    return {}


def cpu_model(path: Path = CPUINFO) -> str | None:
    """The first CPU's model name from ``/proc/cpuinfo`` (None when it says none)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            text = fh.read(64 * 1024)  # one core's block is enough; a 256-core host has 300 KB
    except OSError:
        return None
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in _CPU_KEYS and value.strip() and key not in found:
            found[key] = value.strip()
    for key in _CPU_KEYS:
        if key in found:
            return found[key]
    return None


def host_items(
    os_release: tuple[Path, ...] = OS_RELEASE, cpuinfo: Path = CPUINFO
) -> dict[str, str]:
    """The ``host`` section: ``os``, ``os.id``, ``os.version``, ``kernel``, ``arch``,
    ``cpu.model``, ``cpu.count`` and ``libc``, each where this host says."""
    rel = read_os_release(os_release)
    items: dict[str, str | None] = {
        "os": rel.get("PRETTY_NAME") or rel.get("NAME"),
        "os.id": rel.get("ID"),
        "os.version": rel.get("VERSION_ID"),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu.model": cpu_model(cpuinfo),
        "cpu.count": str(os.cpu_count() or "") or None,
        "libc": _libc(),
    }
    return {k: clean(v) for k, v in items.items() if v}


def _libc() -> str | None:
    """``glibc 2.36`` from the C library itself (``platform.libc_ver`` reads the whole
    interpreter binary to guess it); None on a libc that does not say (musl)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None
