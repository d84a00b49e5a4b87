"""What every benchmark here shares: the checkout's root, errors, child processes, the machine.

A benchmark is run as a script (``python bench/<name>.py``), so its own folder is
``sys.path[0]`` and ``from benchlib import ...`` finds this module; importing it puts the repo
root on ``sys.path`` too, so the script imports Vigil's packages from this checkout.

* :class:`BenchError`: the benchmark could not run (exit 2), as opposed to a target missed.
* :func:`child_env`, :func:`stop`, :func:`wait_for`: start, wait for and stop child processes.
* :func:`git`, :func:`version`, :func:`machine`: where the numbers were taken.
* :func:`percentiles`: n, min, pNN..., max and mean of a sample, the percentiles linearly
  interpolated between the closest ranks (numpy's default), through the product's own
  :func:`probes.common.percentile`.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import Vigil from this checkout
    sys.path.insert(0, str(ROOT))

from probes.common import percentile  # noqa: E402
from tests.helpers import child_env  # noqa: E402, F401 - re-exported: the environment tests give children

T = TypeVar("T")


class BenchError(Exception):
    """The benchmark could not run (exit 2; not a target miss)."""


# --- child processes -----------------------------------------------------------------------


def stop(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> int:
    """SIGTERM a child and return its exit code (SIGKILL to its group if it will not go)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise BenchError(f"pid {proc.pid} ignored SIGTERM for {timeout_s:.0f}s") from None


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.02) -> T:
    """Poll ``predicate`` every ``poll_s`` until it returns something truthy, and return that;
    fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")


# --- the machine ---------------------------------------------------------------------------


def git(*args: str) -> str | None:
    """``git args...`` in the checkout, its stdout stripped; None when git fails."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return model


def _os_name() -> str:
    with contextlib.suppress(OSError):
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', Path("/etc/os-release").read_text(), re.M)
        if m:
            return m.group(1)
    return platform.platform()


def _virtualization() -> str:
    found: list[str] = []
    for kind in ("vm", "container"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["systemd-detect-virt", f"--{kind}"],
                check=False,
                capture_output=True,
                text=True,
                timeout=5,
            )
            name = out.stdout.strip()
            if name and name != "none":
                found.append(f"{name} {kind}")
    return ", ".join(found) or "bare metal, or unknown"


def _kernel_config() -> tuple[int | None, str | None]:
    """CONFIG_HZ and the preemption model, from /proc/config.gz where the kernel has it.

    The tick rate and preemption model bound how late a woken process can run when the CPUs
    are busy (HZ=250: a 4 ms tick), which is what timing tails measure on a shared host.
    """
    kconfig: dict[str, str] = {}
    with contextlib.suppress(OSError), gzip.open("/proc/config.gz", "rt") as config:
        for line in config:
            m = re.match(r"(CONFIG_HZ|CONFIG_PREEMPT_(?:NONE|VOLUNTARY|LAZY))=(.*)", line)
            if m:
                kconfig[m.group(1)] = m.group(2).strip()
    preempt = next(
        (k.removeprefix("CONFIG_") for k in kconfig if k.startswith("CONFIG_PREEMPT")), None
    )
    return (int(kconfig["CONFIG_HZ"]) if "CONFIG_HZ" in kconfig else None), preempt


def machine(**extra: Any) -> dict[str, Any]:
    """Where the numbers were taken, plus the caller's ``extra`` fields (versions, say)."""
    hz, preempt = _kernel_config()
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "virtualization": _virtualization(),
        "ram_bytes": psutil.virtual_memory().total,
        "os": _os_name(),
        "kernel": platform.release(),
        "kernel_hz": hz,
        "kernel_preempt": preempt,
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": None if status is None else status != "",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


# --- statistics ----------------------------------------------------------------------------


def percentiles(
    values: Sequence[float], qs: Sequence[float] = (50, 95, 99), digits: int | None = None
) -> dict[str, float]:
    """n, min, ``pNN`` for each of ``qs``, max and mean of ``values`` (``{"n": 0}`` when empty).

    Percentiles are linearly interpolated between the closest ranks (numpy's default, and
    ``probes.common.percentile``, what the product reports). Every value but n is rounded to
    ``digits`` decimals when given.
    """
    if not values:
        return {"n": 0}
    data = sorted(values)
    out: dict[str, float] = {"min": data[0]}
    out |= {f"p{q:g}": percentile(data, q) for q in qs}
    out |= {"max": data[-1], "mean": statistics.fmean(data)}
    if digits is not None:
        out = {k: round(v, digits) for k, v in out.items()}
    return {"n": len(data), **out}
