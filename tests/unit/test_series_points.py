"""The agent's own short series reads (alert rules) give the same samples as the API's, without
loading numpy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from storage import queries
from storage.db import connect
from storage.records import Sample, make_labels
from storage.writer import Writer

T0 = 1_800_000_000_000


def test_series_points_match_the_raw_range_across_blocks_and_head(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "v.db")
    writer.start()
    labels = make_labels(mount="/")
    # Enough samples to seal several blocks and leave some in the open head.
    writer.submit(
        [Sample("host.disk.used_bytes", labels, T0 + i * 1000, 1e9 + i * 0.5) for i in range(5000)]
    )
    assert writer.flush()
    writer.close()
    conn = connect(tmp_path / "v.db", readonly=True)
    for since, until in ((T0, T0 + 5_000_000), (T0 + 1_234_000, T0 + 3_210_500), (0, 1)):
        got = queries.series_points(
            conn, "host.disk.used_bytes", labels, since_ms=since, until_ms=until
        )
        want = queries.series_range(
            conn, "host.disk.used_bytes", labels, since_ms=since, until_ms=until
        )
        assert got == [(p.ts_ms, p.avg) for p in want]
    assert queries.series_points(conn, "nope", (), since_ms=0, until_ms=T0) == []
    conn.close()


def test_series_points_load_no_numpy(tmp_path: Path) -> None:
    code = (
        "import sys; from storage import queries; from storage.db import connect; "
        f"c = connect({str(tmp_path / 'v.db')!r}); "
        "queries.series_points(c, 'x', (), since_ms=0, until_ms=1); "
        "print('numpy' in sys.modules)"
    )
    writer = Writer(tmp_path / "v.db")
    writer.start()
    writer.close()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
