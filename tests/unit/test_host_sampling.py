"""Host sampling's cheaper reads give what psutil gives (issue 14, a lean agent): the mount
table is read again only when it changes, and swap comes from /proc/meminfo alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from probes.host import HostCollector, Mounts, swap_usage
from tests.helpers import ROOT, child_env

MEMINFO = """MemTotal:       24576000 kB
MemFree:         1000000 kB
SwapCached:        12000 kB
SwapTotal:       8388604 kB
SwapFree:        3145728 kB
Zswap:                 0 kB
"""
VMSTAT = "pgpgin 1\npswpin 42\npswpout 43\n"


def test_swap_usage_is_psutils_swap_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = psutil.swap_memory()
    assert swap_usage() == (real.total, real.used, real.percent)
    (tmp_path / "meminfo").write_text(MEMINFO)  # a host with swap in use
    (tmp_path / "vmstat").write_text(VMSTAT)
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path))
    fake = psutil.swap_memory()
    assert (
        swap_usage()
        == (fake.total, fake.used, fake.percent)
        == (
            8388604 * 1024,
            (8388604 - 3145728) * 1024,
            62.5,
        )
    )
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")  # no swap lines: psutil answers
    monkeypatch.setattr(psutil, "swap_memory", lambda: real)
    assert swap_usage() == (real.total, real.used, real.percent)


def test_the_partitions_are_psutils_and_collect_emits_the_disks() -> None:
    mounts = Mounts()
    try:
        assert mounts.partitions() == psutil.disk_partitions(all=False)
    finally:
        mounts.close()
    assert mounts.partitions() == psutil.disk_partitions(all=False)  # closed: read each time
    host = HostCollector()
    try:
        names = {s.name for s in host.collect(0)}
    finally:
        host.close()
    assert {"host.disk.total_bytes", "host.swap.percent", "host.mem.percent"} <= names


CHILD = """
import subprocess, sys, psutil
from probes.host import Mounts
reads = []
real = psutil.disk_partitions
psutil.disk_partitions = lambda all=False: reads.append(1) or real(all=all)
mounts = Mounts()
where = sys.argv[1]
def seen():
    return where in [p.mountpoint for p in mounts.partitions()]
assert not seen()
for _ in range(5):
    assert not seen()
assert len(reads) == 1, reads
subprocess.run(["mount", "--bind", "/", where], check=True)
assert seen(), "a new mount is seen at the next read"
assert len(reads) == 2
assert seen() and len(reads) == 2
subprocess.run(["umount", where], check=True)
assert not seen(), "and an unmount"
print("ok", len(reads))
"""


def test_the_mount_table_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    """In a private mount namespace of a child (root only): five reads of an unchanged table
    parse it once; a bind mount and its unmount are each seen at the next read."""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("mount") is None:
        pytest.skip("no unshare or mount")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot make a mount namespace here (not root)")
    where = tmp_path / "mnt"
    where.mkdir()
    argv = [unshare, "-m", "--propagation", "private", sys.executable, "-c", textwrap.dedent(CHILD)]
    out = subprocess.run(
        [*argv, str(where)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "3"]
