"""Resource usage of the processes Vigil watches, each summed over its whole process tree.

Model servers fork workers (vLLM's engine core, gunicorn-style pools, Triton backends), so a
process's own numbers understate what it costs; every series here is the sum over the watched
process and all of its descendants.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psutil

from probes.base import Collector
from probes.proctree import ProcessTree
from storage.records import Sample, make_labels

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Usage:
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    threads: int = 0
    open_files: int = 0

    def add(self, other: _Usage) -> None:
        self.cpu_percent += other.cpu_percent
        self.rss_bytes += other.rss_bytes
        self.threads += other.threads
        self.open_files += other.open_files


class ProcessCollector(Collector):
    """Samples CPU, memory, threads, descriptors and child count per watched process tree."""

    name = "process"

    def __init__(self, targets: Callable[[], Mapping[str, int]]) -> None:
        """Create the collector.

        Args:
            targets: Returns ``{process name: pid}`` of the processes to watch right now; it is
                called on every collection, so restarts (new pids) are picked up.
        """
        self._targets = targets
        # psutil's per-process cpu_percent measures since the previous call on the *same*
        # Process object, so objects are kept across collections. Keyed by pid, and checked
        # against the fresh object's identity (pid + create_time) so a recycled pid does not
        # inherit a dead process's CPU baseline.
        self._procs: dict[int, psutil.Process] = {}
        # Finding a tree's descendants means knowing every host process's parent; the table
        # keeps that map between rounds instead of rescanning all of /proc each second.
        self._table: ProcessTree | None = ProcessTree()
        if not self._table.available():
            self._table = None

    def collect(self, ts_ms: int) -> list[Sample]:
        """Return one set of samples per watched process that is alive and readable."""
        out: list[Sample] = []
        seen: dict[int, psutil.Process] = {}
        # Read each process once per round even if two watched trees overlap: a second
        # cpu_percent() call microseconds after the first would report ~0.
        usages: dict[int, _Usage | None] = {}

        def usage_of(proc: psutil.Process) -> _Usage | None:
            if proc.pid not in usages:
                usages[proc.pid] = _usage(proc)
            return usages[proc.pid]

        targets = self._targets()
        if targets and self._table is not None:
            try:
                self._table.refresh()
            except OSError as exc:  # /proc went away (unmounted in a sandbox): use psutil
                log.warning("process table unreadable, scanning with psutil error=%s", exc)
                self._table = None
        for name, pid in targets.items():
            tree = self._tree(pid, seen)
            if tree is None:
                continue
            root, children = tree
            root_usage = usage_of(root)
            if root_usage is None:
                continue
            total = _Usage()
            total.add(root_usage)
            measured_children = 0
            for child in children:
                usage = usage_of(child)
                if usage is None:  # exited between listing and reading: it costs nothing now
                    continue
                total.add(usage)
                measured_children += 1
            labels = make_labels(process=name)
            for series, value in (
                ("process.cpu.percent", total.cpu_percent),
                ("process.rss_bytes", total.rss_bytes),
                ("process.threads", total.threads),
                ("process.open_files", total.open_files),
                ("process.children", measured_children),
            ):
                out.append(Sample(name=series, labels=labels, ts_ms=ts_ms, value=float(value)))
        # Anything not seen this round has exited (or stopped being watched): forget it.
        self._procs = seen
        return out

    def _tree(
        self, pid: int, seen: dict[int, psutil.Process]
    ) -> tuple[psutil.Process, list[psutil.Process]] | None:
        """The cached root process and its descendants, or None if the root is unreadable."""
        try:
            root = self._cached(psutil.Process(pid), seen)
            if self._table is None:
                found = root.children(recursive=True)
            else:
                found = []
                for kid in self._table.descendants(pid):
                    # Gone since the walk: it costs nothing now, as in psutil's children().
                    with contextlib.suppress(psutil.NoSuchProcess):
                        found.append(psutil.Process(kid))
            children = [self._cached(c, seen) for c in found]
        except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
            log.debug("process.skipped pid=%s error=%s", pid, type(exc).__name__)
            return None
        return root, children

    def _cached(self, fresh: psutil.Process, seen: dict[int, psutil.Process]) -> psutil.Process:
        """Reuse the cached object for this process if it is the same one (not a reused pid)."""
        known = seen.get(fresh.pid) or self._procs.get(fresh.pid)
        # Process equality compares (pid, create_time): the pid-reuse check.
        proc = known if known is not None and known == fresh else fresh
        seen[proc.pid] = proc
        return proc


def _usage(proc: psutil.Process) -> _Usage | None:
    """One process's own usage, or None if it vanished or may not be read."""
    try:
        with proc.oneshot():
            # A Process object's first cpu_percent() returns 0.0 (it primes the baseline), so
            # a freshly forked worker contributes CPU from its second collection on.
            return _Usage(
                cpu_percent=proc.cpu_percent(interval=None),
                rss_bytes=proc.memory_info().rss,
                threads=proc.num_threads(),
                open_files=_open_files(proc),
            )
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return None


def _open_files(proc: psutil.Process) -> int:
    # On POSIX, num_fds() only counts /proc/<pid>/fd entries, while open_files() readlinks and
    # stats each one to keep regular files: much dearer for a server holding thousands of
    # sockets. It also counts sockets and pipes, which is what runs into the fd limit anyway.
    if sys.platform != "win32":
        return proc.num_fds()
    return len(proc.open_files())
