"""Heavy writes through Vigil's real ``Writer``, to be killed with SIGKILL at any moment.

``python tests/fakes/storage_load.py DB`` imports Vigil once, then reads commands on stdin:
``go RUN`` forks a writer process for run ``RUN`` (a fork costs milliseconds, a fresh Python
with numpy most of a second, and a kill loop restarts it fifty times). It prints
``child RUN PID``, and the child writes batches forever: each batch is ``SERIES`` series x
``PER_BATCH`` samples (continuing after the newest stored timestamp, 1 s apart in virtual
time, so heads fill and blocks are sealed all the time) plus one ``load.batch`` audit event
naming the run and the batch. After each batch's ``flush()`` returns, the child prints
``committed RUN K FIRST_TS LAST_TS``: from then on that batch must survive a kill. A batch is
one transaction, so the one in flight at the kill is either wholly stored or wholly absent.
Once the child is gone (killed by the test), the parent prints ``reaped RUN STATUS``.

The parent never opens the database (it holds no SQLite state or threads across ``fork``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage.db import connect
from storage.records import Event, Sample, make_labels
from storage.writer import Writer

SERIES = 20
PER_BATCH = 150
T0 = 1_700_002_800_000


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # unbuffered: nothing is duplicated across fork


def newest_ts(db: Path) -> int:
    if not db.exists():
        return T0
    conn = connect(db, readonly=True)
    try:
        ends = [
            conn.execute("SELECT max(end_ts) FROM sample_blocks").fetchone()[0],
            conn.execute("SELECT max(ts) FROM samples_head").fetchone()[0],
        ]
    except Exception:  # a fresh file without tables yet
        return T0
    finally:
        conn.close()
    return max([t for t in ends if t is not None], default=T0 - 1000) + 1000


def write_forever(db: Path, run: int) -> None:
    start = newest_ts(db)
    labels = [make_labels(series=i) for i in range(SERIES)]
    w = Writer(db, batch_size=1_000_000, flush_interval_s=60.0)
    w.start()
    k = 0
    while True:
        first = start + k * PER_BATCH * 1000
        times = [first + i * 1000 for i in range(PER_BATCH)]
        w.submit(
            Sample("load.value", lbl, ts, float((ts // 1000 + j) % 997) / 10)
            for ts in times
            for j, lbl in enumerate(labels)
        )
        w.submit_one(Event(times[-1], "load.batch", "load", f"batch {k}", {"run": run, "k": k}))
        if not w.flush(30):
            say(f"flush failed {w.last_error}")
            os._exit(1)
        say(f"committed {run} {k} {times[0]} {times[-1]}")
        k += 1


def main() -> None:
    db = Path(sys.argv[1])
    for line in sys.stdin:
        words = line.split()
        if len(words) != 2 or words[0] != "go":
            continue
        run = int(words[1])
        pid = os.fork()
        if pid == 0:
            try:
                write_forever(db, run)
            finally:
                os._exit(1)
        say(f"child {run} {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"reaped {run} {status}")


if __name__ == "__main__":
    main()
