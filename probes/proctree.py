"""Who is whose child on this host, kept current from ``/proc`` at a small cost per round.

psutil's ``Process.children()`` reads ``/proc/<pid>/stat`` of every process on the host on each
call. At 1 s sampling that scan was the agent's largest steady cost: about 4 ms a round on a
host with 100 processes and about 30 ms with 1,000 (a GPU host's many cores alone bring
hundreds of kernel threads, each its own ``/proc`` entry). A process's parent changes only when
it is forked (a new pid) or when its parent exits (the kernel reparents it), so
:class:`ProcessTree` keeps a ``pid -> ppid`` map and, each round, lists ``/proc`` (one
directory read, a tenth of the scan's cost or less) and reads the ``stat`` file only of pids it
has not seen before, and of the children of pids that disappeared.

Two reparentings leave the pid list unchanged: a parent that exited but is not yet reaped (a
zombie keeps its ``/proc`` entry while its children already have a new parent), and a pid
reused within one round. Walking a tree therefore re-reads the parent of every member it visits
(a handful of small reads; the collector reads those processes anyway) and corrects the map,
re-reading the children of a member that exited (a subreaper in the tree may have them now);
every :data:`RESYNC_EVERY` rounds the whole map is rebuilt, which bounds any other drift.

Where there is no ``/proc`` (not Linux) :meth:`ProcessTree.available` is False and callers use
psutil's ``children()`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

RESYNC_EVERY = 300
"""Rounds between full rebuilds of the parent map (five minutes at 1 s sampling); a rebuild
reads every stat file, as psutil's ``children()`` does on every call."""


class ProcessTree:
    """A ``pid -> parent pid`` map of every process on the host, refreshed incrementally."""

    def __init__(self, proc_root: str = "/proc", resync_every: int = RESYNC_EVERY) -> None:
        """Create an empty map; nothing is read until :meth:`refresh`.

        Args:
            proc_root: Where procfs is mounted; injectable so tests can use a fake tree.
            resync_every: Rounds between full rebuilds (see the module docstring).
        """
        self._root = proc_root
        self._resync_every = resync_every
        self._ppid: dict[int, int] = {}
        # The same map inverted (parent -> children), kept in step with every change, so a
        # walk never rebuilds it: on a busy host some pid changes nearly every round.
        self._kids: dict[int, set[int]] = {}
        self._rounds = 0
        self.stat_reads = 0
        """``stat`` files read so far: what the incremental refresh saves is visible in tests."""

    def available(self) -> bool:
        """Whether this host has a procfs this class can read."""
        return os.path.exists(os.path.join(self._root, "self", "stat"))

    def refresh(self) -> None:
        """Bring the map up to date with the processes running now.

        Raises:
            OSError: ``/proc`` could not be listed.
        """
        pids = {int(name) for name in os.listdir(self._root) if name.isdigit()}
        if self._rounds % self._resync_every == 0:
            self._ppid.clear()
            self._kids.clear()
        self._rounds += 1
        known = self._ppid
        gone = known.keys() - pids
        new = pids - known.keys()
        orphans: list[int] = []
        for pid in gone:
            # Its children were reparented when it exited: read who has them now.
            orphans.extend(self._kids.get(pid, ()))
            self._drop(pid)
        self._read(new)
        self._read(orphans)

    def descendants(self, pid: int) -> list[int]:
        """Every live descendant of ``pid`` (not ``pid`` itself), parents before children.

        Each member's parent is re-read on the way (see the module docstring); a process
        found to have moved or exited is corrected in the map and the walk starts again.
        """
        found: list[int] = []
        for _ in range(4):
            found = []
            moved = False
            stack = [pid]
            seen = {pid}
            while stack:
                parent = stack.pop()
                for kid in sorted(self._kids.get(parent, ())):
                    if kid in seen:  # only a corrupt map could loop; never walk it twice
                        continue
                    seen.add(kid)
                    actual = self._read_ppid(kid)
                    if actual == parent:
                        found.append(kid)
                        stack.append(kid)
                        continue
                    moved = True
                    if actual is None:  # exited: its children have a new parent by now
                        orphans = list(self._kids.get(kid, ()))
                        self._drop(kid)
                        self._read(orphans)
                    else:
                        self._set(kid, actual)
            if not moved:
                break
        return found

    def _set(self, pid: int, ppid: int) -> None:
        old = self._ppid.get(pid)
        if old == ppid:
            return
        if old is not None:
            self._unlink(pid, old)
        self._ppid[pid] = ppid
        self._kids.setdefault(ppid, set()).add(pid)

    def _drop(self, pid: int) -> None:
        old = self._ppid.pop(pid, None)
        if old is not None:
            self._unlink(pid, old)

    def _unlink(self, pid: int, ppid: int) -> None:
        siblings = self._kids.get(ppid)
        if siblings is not None:
            siblings.discard(pid)
            if not siblings:
                del self._kids[ppid]

    def _read(self, pids: Iterable[int]) -> None:
        for pid in pids:
            ppid = self._read_ppid(pid)
            if ppid is None:  # exited since the listing; a later listing will not show it
                self._drop(pid)
            else:
                self._set(pid, ppid)

    def _read_ppid(self, pid: int) -> int | None:
        self.stat_reads += 1
        try:
            with open(os.path.join(self._root, str(pid), "stat"), "rb") as f:
                data = f.read()
        except OSError:
            return None
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
        # the last ")".
        fields = data[data.rfind(b")") + 2 :].split(maxsplit=2)
        try:
            return int(fields[1])
        except (IndexError, ValueError):
            return None
