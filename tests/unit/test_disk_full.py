"""A full disk (issue 17, defect 9): a state file is replaced whole or not at all and leaves no
temporary file behind; the writer's WAL shrinks once storage recovers.

Two real kernel refusals, no mocks: a small tmpfs filled up (ENOSPC; mounting needs root or
CAP_SYS_ADMIN, skipped otherwise), and ``RLIMIT_FSIZE`` in a child process (EFBIG, the same
failed ``write(2)`` at the same place; runs unprivileged).
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.supervise.adoption import ProcessRecord, read_records, write_records
from storage.records import Sample
from storage.writer import Writer
from tests.helpers import child_env, wait_for

RECORDS = {"srv": ProcessRecord(pid=4242, create_time=1.5, argv=("srv", "--port", "1"))}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            "mounts a small tmpfs, which needs root or CAP_SYS_ADMIN: "
            + (done.stderr.strip() or f"mount exited {done.returncode}")
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write zeros until the file system is full (unbuffered: every write hits the disk)."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 16, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


def test_records_on_a_full_disk_keep_the_old_file_and_leave_no_tmp(small_disk: Path) -> None:
    path = small_disk / "supervisor.json"
    write_records(path, RECORDS)
    before = path.read_bytes()
    fill(small_disk / "filler")
    bigger = {f"p{i}": ProcessRecord(pid=i, create_time=1.0, argv=("x",) * 50) for i in range(50)}
    with pytest.raises(OSError) as err:
        write_records(path, bigger)
    assert "No space left" in str(err.value)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "supervisor.json"]
    assert path.read_bytes() == before
    (small_disk / "filler").unlink()
    write_records(path, bigger)  # space is back
    assert read_records(path) == bigger


CHILD = """
import resource, signal, sys
from pathlib import Path
from agent.supervise.adoption import ProcessRecord, write_records
path = Path(sys.argv[1])
write_records(path, {"srv": ProcessRecord(pid=1, create_time=1.0, argv=("a",))})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(2) rather than a kill
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
try:
    write_records(path, {"srv": ProcessRecord(pid=2, create_time=2.0, argv=("b",) * 40)})
except OSError as exc:
    print("refused", exc.errno)
"""


def test_a_refused_write_keeps_the_old_records_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.json"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused"), done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["supervisor.json"]
    assert read_records(path)["srv"].pid == 1


def _wal(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def test_the_writer_limits_its_wal_file(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "vigil.db", flush_interval_s=0.05)
    writer.start()
    try:
        seen: list[int] = []
        writer.run_task(
            lambda conn: seen.append(conn.execute("PRAGMA journal_size_limit").fetchone()[0])
        )
        assert writer.flush()
        # SQLite's default (-1) lets a WAL file that once grew keep its size for good.
        assert len(seen) == 1 and 0 <= seen[0] <= 4 << 20
    finally:
        writer.close()


def samples(n: int, t0: int) -> list[Sample]:
    return [Sample(f"load.s{i % 200}", (), t0 + i, float(i)) for i in range(n)]


def test_the_wal_is_checkpointed_and_truncated_when_storage_recovers(small_disk: Path) -> None:
    # After a full disk, the backlog kept in memory commits into the WAL, which then grew
    # until the autocheckpoint (about 16 MB) before any of it was copied back and its space
    # reused: on a small disk, enough to fill it again.
    db = small_disk / "vigil.db"
    writer = Writer(db, flush_interval_s=0.05)
    writer.start()
    try:
        t0 = int(time.time() * 1000)
        writer.submit(samples(2000, t0))
        assert writer.flush()
        fill(small_disk / "filler")
        writer.submit(samples(20_000, t0 + 10_000))
        wait_for(lambda: not writer.healthy, what="the writer failing on the full disk")
        (small_disk / "filler").unlink()
        wait_for(lambda: writer.healthy, timeout=30, what="the writer recovering")
        assert writer.flush()
        assert _wal(db).stat().st_size == 0  # checkpointed into the database, then truncated
    finally:
        writer.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


ROTATE_CHILD = """
import resource, signal, sys
from pathlib import Path
from agent.supervise.proclogs import ProcessLog
plog = ProcessLog(Path(sys.argv[1]), "srv", max_bytes=100, keep=2)
plog.append("x" * 4999)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))  # the copy stops part way
try:
    plog.rotate_if_needed()
except OSError as exc:
    print("refused", exc.errno)
"""


def test_a_rotation_that_cannot_copy_keeps_the_live_log_and_leaves_no_part(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ROTATE_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused"), done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["srv.log"]  # no half copy as .1
    assert (tmp_path / "srv.log").stat().st_size == 5000  # not truncated: retried later
