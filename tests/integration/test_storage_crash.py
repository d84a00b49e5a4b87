"""Crash safety and a full disk, with real processes.

- ``kill -9`` the agent 50 times during heavy writes (``VIGIL_AGENT_KILLS`` changes the count):
  ``vigil agent run`` (the real entry point, in a process forked from one that imported the
  agent once, because fifty fresh interpreters would cost a minute or more of start-up; see
  ``tests/fakes/agent_forker.py``), its collections carrying 1,000 extra samples every 100 ms
  and its writer committing every 100 ms, is killed at a random moment once its samples are
  being stored. Every time the database opens, ``PRAGMA integrity_check`` passes, the audit
  chain verifies and every start was recorded; at the end the rollups agree with the raw
  samples, so no commit was ever half applied.
- ``kill -9`` a writer whose every acknowledged batch is known, 25 times
  (``VIGIL_WRITER_KILLS``): ``tests/fakes/storage_load.py`` drives Vigil's real ``Writer``
  with 3,000 samples and an audit event per batch and prints each batch once ``flush()``
  returned. After each kill every acknowledged batch is there and at most the one in flight
  is missing, whole or not at all.
- A full disk: the agent's data dir on a small tmpfs (needs root or CAP_SYS_ADMIN to mount;
  skipped otherwise). Filled up, the agent keeps answering and supervising (a killed child is
  restarted), logs the failure, and once space returns records ``storage.recovered`` and
  writes again, the events of the outage included.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from storage import queries
from storage.audit import verify_chain
from storage.db import connect
from storage.records import make_labels
from tests.fakes.storage_load import PER_BATCH, SERIES
from tests.helpers import ROOT, child_env, running_agent, wait_for, write_config

pytestmark = pytest.mark.integration

LOAD = ROOT / "tests" / "fakes" / "storage_load.py"
FORKER = ROOT / "tests" / "fakes" / "agent_forker.py"
AGENT_KILLS = int(os.environ.get("VIGIL_AGENT_KILLS", "50"))
WRITER_KILLS = int(os.environ.get("VIGIL_WRITER_KILLS", "25"))
AGENT_EXTRA_SAMPLES = 1000
"""Synthetic samples added to each 100 ms collection: 10,000 samples/s through the agent."""


def open_checked(db: Path) -> sqlite3.Connection:
    """Open as the next agent would (read-write: a crash leaves a WAL to recover) and check."""
    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    report = verify_chain(conn)
    assert report.ok, report
    return conn


def batch_events(conn: sqlite3.Connection, run: int) -> set[int]:
    rows = conn.execute("SELECT data FROM events WHERE kind = 'load.batch'")
    return {d["k"] for (text,) in rows if (d := json.loads(text))["run"] == run}


class Forker:
    """A fake in ``tests/fakes`` that imports once and forks a process per ``go ...`` line,
    printing ``child ... PID`` and, once it is gone, ``reaped ...``."""

    def __init__(self, script: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**child_env(), "OPENBLAS_NUM_THREADS": "1"},
        )
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("EOF")

    def next_line(self, timeout: float = 60.0) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.proc.args} said nothing for {timeout}s") from None
        if line == "EOF":
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"{self.proc.args} exited: {err}")
        return line

    def go(self, *words: str) -> int:
        """Fork a child; return its pid."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(("go", *words)) + "\n")
        self.proc.stdin.flush()
        said = self.next_line().split()
        assert said[0] == "child", said
        return int(said[-1])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_then_kill(load: Forker, run: int, after_s: float) -> list[list[str]]:
    """Fork a writer for ``run``, SIGKILL it ``after_s`` after its first committed batch;
    return the batches it acknowledged (``committed RUN K FIRST LAST``, split)."""
    pid = load.go(str(run))
    line = load.next_line()
    assert line.startswith("committed"), line
    acked = [line.split()]
    time.sleep(after_s)  # somewhere in the middle of a later batch
    os.kill(pid, signal.SIGKILL)
    while not (line := load.next_line()).startswith("reaped"):
        assert line.startswith("committed"), line
        acked.append(line.split())
    return acked


@pytest.mark.timeout(240)
def test_kill_9_during_heavy_writes_loses_at_most_the_batch_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "vigil.db"
    rng = random.Random(9)
    per_batch = SERIES * PER_BATCH
    stored_batches = 0
    load = Forker(LOAD, str(db))
    try:
        for run in range(WRITER_KILLS):
            acked = write_then_kill(load, run, rng.uniform(0.0, 0.2))
            last_k, last_first, last_end = (int(x) for x in acked[-1][2:5])

            conn = open_checked(db)
            try:
                stored = batch_events(conn, run)
                assert set(range(last_k + 1)) <= stored  # every acknowledged batch survived
                assert stored <= set(range(last_k + 2))  # and at most the one in flight beyond
                assert queries.count_all_samples(conn, last_first, last_end) == per_batch
                nxt_first = last_end + 1000
                nxt_last = nxt_first + (PER_BATCH - 1) * 1000
                in_flight = queries.count_all_samples(conn, nxt_first, nxt_last)
                assert in_flight == (per_batch if last_k + 1 in stored else 0)  # atomic
                stored_batches += len(stored)
            finally:
                conn.close()
    finally:
        load.close()

    conn = open_checked(db)
    try:
        total = queries.count_all_samples(conn)
        assert total == stored_batches * per_batch
        # The rollups were committed with their samples: they agree after every crash.
        assert conn.execute("SELECT sum(count) FROM samples_1m").fetchone()[0] == total
        assert conn.execute("SELECT sum(count) FROM samples_1h").fetchone()[0] == total
        assert conn.execute("SELECT count(*) FROM sample_blocks").fetchone()[0] > 0
    finally:
        conn.close()


def newest_synthetic(data: Path) -> int:
    """The newest stored time of the agent's first synthetic series (0 before there is one)."""
    conn = connect(data / "vigil.db", readonly=True)
    try:
        sid = queries.series_id(conn, "load.synthetic", make_labels(synthetic=0))
        if sid is None:
            return 0
        row = conn.execute(
            "SELECT max(ts) FROM samples_head WHERE series_id = ?", (sid,)
        ).fetchone()
        return int(row[0] or 0)
    except sqlite3.OperationalError:  # no tables yet
        return 0
    finally:
        conn.close()


@pytest.mark.timeout(240)
def test_kill_9_the_agent_again_and_again(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, sample_interval="100ms")
    data = tmp_path / "data"
    log = tmp_path / "agent.log"
    rng = random.Random(3)
    forker = Forker(FORKER)
    try:
        for i in range(AGENT_KILLS):
            with contextlib.suppress(FileNotFoundError):
                (data / "api.json").unlink()  # a killed agent leaves it behind
            pid = forker.go(str(cfg), str(log), str(AGENT_EXTRA_SAMPLES))

            def api(pid: int = pid) -> tuple[str, str] | None:
                try:
                    info = json.loads((data / "api.json").read_text())
                    token = (data / "api-token").read_text().strip()
                except (OSError, ValueError):
                    return None
                return (info["url"], token) if info.get("pid") == pid else None

            started = int(time.time() * 1000)
            wait_for(api, timeout=60, what=f"agent {i} to answer")
            wait_for(lambda t=started: newest_synthetic(data) >= t, what="its first samples")
            time.sleep(rng.uniform(0.0, 0.3))  # commits of ~1,000 samples every 100 ms
            os.killpg(pid, signal.SIGKILL)
            assert forker.next_line().startswith(f"reaped {pid}")
            conn = open_checked(data / "vigil.db")
            try:
                kinds = [k for (k,) in conn.execute("SELECT kind FROM events ORDER BY seq")]
                assert kinds.count("agent.started") == i + 1  # committed at once, every time
                assert "agent.stopped" not in kinds
            finally:
                conn.close()
    finally:
        forker.close()
    conn = open_checked(data / "vigil.db")
    try:
        total = queries.count_all_samples(conn)
        assert total > AGENT_EXTRA_SAMPLES * AGENT_KILLS  # heavy writes did happen
        assert conn.execute("SELECT sum(count) FROM samples_1m").fetchone()[0] == total
    finally:
        conn.close()
    assert "agent started" in log.read_text()


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(
            "the full-disk test mounts a small tmpfs and needs root or CAP_SYS_ADMIN: "
            + (done.stderr.strip() or f"mount exited {done.returncode}")
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write zeros until the file system is full (unbuffered: every write hits the disk)."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 16, 512):  # big chunks, then the last few blocks
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


@pytest.mark.timeout(180)
def test_full_disk_degrades_history_not_supervision(small_disk: Path, tmp_path: Path) -> None:
    data = small_disk / "data"
    cfg = tmp_path / "vigil.toml"  # config and the agent's own log stay off the small disk
    cfg.write_text(
        f"""
[agent]
host = "test-host"
data_dir = "{data}"
listen = "127.0.0.1:0"
sample_interval = "100ms"
on_exit = "stop"

[[process]]
name = "sleeper"
command = ["{sys.executable}", "-S", "-c", "import time; time.sleep(600)"]
restart = "always"
backoff_initial = "100ms"
stop_timeout = "2s"
""",
        encoding="utf-8",
    )
    with running_agent(cfg) as agent:

        def sleeper() -> dict:  # type: ignore[type-arg]
            return next(p for p in agent.status()["processes"] if p["name"] == "sleeper")

        first = wait_for(lambda: (s := sleeper())["state"] == "running" and s, what="sleeper up")
        filler = small_disk / "filler"
        fill(filler)
        wait_for(lambda: not agent.status()["storage_ok"], timeout=60, what="storage failing")
        assert "storage failing" in agent.log()
        assert "full" in agent.log()

        # Supervision goes on: a crashed child is restarted while nothing can be stored.
        os.kill(first["pid"], signal.SIGKILL)
        wait_for(
            lambda: (s := sleeper())["state"] == "running" and s["pid"] != first["pid"],
            timeout=30,
            what="the sleeper restarted on a full disk",
        )
        assert not agent.status()["storage_ok"]

        filler.unlink()  # space returns
        wait_for(lambda: agent.status()["storage_ok"], timeout=60, what="storage recovered")

        def storage_events() -> list[dict] | None:  # type: ignore[type-arg]
            # storage_ok turns true at the commit that works; the storage.recovered event is
            # queued then and lands with the next batch: wait for it rather than race it.
            code, body = agent.get("/api/v1/events?kind=storage.&limit=20")
            assert code == 200, body
            events = body["events"]
            return events if any(e["kind"] == "storage.recovered" for e in events) else None

        events = wait_for(storage_events, timeout=30, what="the storage.recovered event")
        kinds = [e["kind"] for e in events][::-1]
        assert kinds[:2] == ["storage.failing", "storage.recovered"], kinds
        assert "full" in events[-1]["data"]["error"]
        # What happened during the outage was kept in memory and written afterwards.
        code, body = agent.get("/api/v1/events?kind=process.&limit=50")
        exits = [e for e in body["events"] if e["kind"] == "process.exited"]
        assert exits, body
        since = int(time.time() * 1000) - 2000
        wait_for(
            lambda: agent.get(f"/api/v1/series?name=host.cpu.percent&since={since}")[1]["points"],
            what="new samples after recovery",
        )
        assert "storage recovered" in agent.log()
    conn = open_checked(data / "vigil.db")
    conn.close()
