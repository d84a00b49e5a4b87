"""ProcessTree: the incremental parent map, on a fake /proc and on this machine's real one."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from probes.process import ProcessCollector
from probes.proctree import ProcessTree
from storage.records import make_labels


class FakeProc:
    """A directory laid out like /proc: ``<pid>/stat`` files and a ``self`` entry."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "self").mkdir()
        (root / "self" / "stat").write_text("1 (init) S 0\n")
        (root / "sys").mkdir()  # non-pid entries are ignored

    def set(self, pid: int, ppid: int, comm: str = "proc") -> None:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560\n")

    def remove(self, pid: int) -> None:
        (self.root / str(pid) / "stat").unlink()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    fake = FakeProc(tmp_path)
    # 1 -> 10 -> 11 -> 12, 10 -> 13; 1 -> 20 (unrelated)
    for pid, ppid in ((1, 0), (10, 1), (11, 10), (12, 11), (13, 10), (20, 1)):
        fake.set(pid, ppid)
    return fake


def test_descendants_of_a_tree_parents_first(proc: FakeProc) -> None:
    tree = ProcessTree(str(proc.root))
    assert tree.available()
    tree.refresh()
    found = tree.descendants(10)
    assert sorted(found) == [11, 12, 13]
    assert found.index(11) < found.index(12)
    assert tree.descendants(12) == []
    assert tree.descendants(999) == []


def test_a_quiet_round_reads_no_stat_file_and_a_new_pid_one(proc: FakeProc) -> None:
    tree = ProcessTree(str(proc.root))
    tree.refresh()
    assert tree.stat_reads == 6
    tree.refresh()
    assert tree.stat_reads == 6
    proc.set(14, 12)
    tree.refresh()
    assert tree.stat_reads == 7
    assert sorted(tree.descendants(10)) == [11, 12, 13, 14]


def test_children_of_a_parent_that_vanished_are_reread(proc: FakeProc) -> None:
    tree = ProcessTree(str(proc.root))
    tree.refresh()
    proc.remove(11)
    proc.set(12, 1)  # the kernel reparented the orphan to init
    tree.refresh()
    assert sorted(tree.descendants(10)) == [13]
    assert sorted(tree.descendants(1)) == [10, 12, 13, 20]


def test_a_reparent_under_a_zombie_parent_is_caught_by_the_walk(proc: FakeProc) -> None:
    # 11 exited but is not reaped: its /proc entry stays, so the pid list does not change,
    # while 12 already belongs to init.
    tree = ProcessTree(str(proc.root))
    tree.refresh()
    proc.set(12, 1)
    tree.refresh()
    assert sorted(tree.descendants(10)) == [11, 13]
    assert 12 in tree.descendants(1)


def test_a_subreaper_in_the_tree_keeps_its_orphans_before_the_next_refresh(
    proc: FakeProc,
) -> None:
    # 10 is a subreaper (tini, dumb-init): when 11 exits, 12 is reparented to 10, not init.
    tree = ProcessTree(str(proc.root))
    tree.refresh()
    proc.remove(11)
    proc.set(12, 10)
    assert sorted(tree.descendants(10)) == [12, 13]
    tree.refresh()
    assert sorted(tree.descendants(10)) == [12, 13]


def test_a_pid_that_exits_during_the_walk_is_left_out(proc: FakeProc) -> None:
    tree = ProcessTree(str(proc.root))
    tree.refresh()
    proc.remove(12)
    assert sorted(tree.descendants(10)) == [11, 13]


def test_the_map_is_rebuilt_every_resync_rounds(proc: FakeProc) -> None:
    tree = ProcessTree(str(proc.root), resync_every=3)
    for _ in range(3):
        tree.refresh()
    assert tree.stat_reads == 6
    tree.refresh()  # the fourth round is a full rebuild
    assert tree.stat_reads == 12


def test_comm_with_spaces_and_parentheses(proc: FakeProc) -> None:
    proc.set(30, 20, comm="evil ) S 10 (x")
    tree = ProcessTree(str(proc.root))
    tree.refresh()
    assert tree.descendants(20) == [30]
    assert 30 not in tree.descendants(10)


def test_no_procfs_is_reported(tmp_path: Path) -> None:
    assert not ProcessTree(str(tmp_path)).available()


# --- on this machine ------------------------------------------------------------------------

# Forks one more sleeping child for every line read from stdin, says "forked" each time.
FORKER = """
import subprocess, sys
kids = []
for _ in sys.stdin:
    kids.append(subprocess.Popen(["sleep", "60"]))
    print("forked", flush=True)
for k in kids:
    k.kill()
    k.wait()
"""


@pytest.mark.skipif(not ProcessTree().available(), reason="needs Linux /proc")
def test_collector_sees_children_forked_after_it_started() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", FORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert parent.stdin is not None and parent.stdout is not None
    collector = ProcessCollector(lambda: {"p": parent.pid})
    labels = make_labels(process="p")

    def children() -> float:
        got = {s.name: s.value for s in collector.collect(ts_ms=1) if s.labels == labels}
        return got["process.children"]

    try:
        assert children() == 0
        for n in (1, 2):
            parent.stdin.write(b"\n")
            parent.stdin.flush()
            assert parent.stdout.readline() == b"forked\n"
            assert children() == n
            assert children() == len(psutil.Process(parent.pid).children(recursive=True))
    finally:
        parent.stdin.close()
        parent.wait(timeout=10)
        parent.stdout.close()
    deadline = time.monotonic() + 5
    while collector.collect(ts_ms=2) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert collector.collect(ts_ms=3) == []
