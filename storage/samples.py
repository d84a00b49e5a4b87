"""Sample storage: raw samples in compressed blocks, and 1-minute and 1-hour rollup tiers.

Tables (see ``storage.db`` migration 0003):

- ``samples_head (series_id, ts, value)``: each series' newest raw samples, one row each, so a
  commit appends only what it brings;
- ``sample_blocks (id, series_id, start_ts, end_ts, n, data)``: older raw samples, sealed from
  the head into :mod:`storage.codec` blobs of at most :data:`BLOCK_SAMPLES` samples and
  :data:`BLOCK_BYTES` bytes (about 1.5 to 8 bytes a sample instead of about 24 as a row);
- ``samples_1m`` / ``samples_1h (series_id, ts, count, sum, min, max)``: rollups, kept current
  in the same transaction as the raw samples they summarise.

Invariants the writer keeps: a series' blocks never overlap, are ordered by ``start_ts``, and
every head row is newer than its last block. The head and rollup tables are ``WITHOUT ROWID``
keyed by ``(series_id, time)``; blocks are a rowid table with a unique ``(series_id,
start_ts)`` index. Every read is one index range.

Only the writer thread writes (:class:`storage.ingest.SampleStore`); the read functions here
take any connection. The reads answer numpy arrays and import numpy when first called; the
writer's functions (:func:`pack`, :func:`write_blocks`) take lists too and never import it.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from storage.codec import decode, decode_lists, encode

if TYPE_CHECKING:
    from storage.codec import Floats, Ints

if importlib.util.find_spec("numpy") is None:  # looked up, not imported
    # The reads need it: an install without it (no agent extra) fails here, at start-up, not
    # on its first chart.
    raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

RES_1M = 60_000
RES_1H = 3_600_000
BLOCK_SAMPLES = 1024
"""At most this many samples in one block (17 minutes of a 1 s series)."""
BLOCK_BYTES = 3800
"""At most this many bytes in one block's blob, so a block row fits a 4 KiB page without an
overflow page (a blob just over a page would leave most of its overflow page empty). A series
whose values do not compress (noisy floats, about 8.5 bytes a sample) gets blocks of about
430 samples; one of percentages (about 1.5 bytes) gets full 1,024-sample blocks."""
_NO_TS = -(2**63)


@dataclass(frozen=True, slots=True)
class Tier:
    """One storage tier: raw samples or a rollup of a fixed resolution."""

    name: str
    table: str
    resolution_ms: int


RAW = Tier("raw", "samples_head", 0)
TIER_1M = Tier("1m", "samples_1m", RES_1M)
TIER_1H = Tier("1h", "samples_1h", RES_1H)
TIERS = (RAW, TIER_1M, TIER_1H)


class Aggregates(NamedTuple):
    """Columns of points or rollup rows: start time, count (``n``), sum, min and max."""

    ts: Ints
    n: Ints
    sum: Floats
    min: Floats
    max: Floats


def _empty() -> Aggregates:
    import numpy as np

    f = np.empty(0, dtype=np.float64)
    return Aggregates(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), f, f, f)


# --- reading ---------------------------------------------------------------------------------


def raw_arrays(
    conn: sqlite3.Connection, series_id: int, since_ms: int, until_ms: int
) -> tuple[Ints, Floats]:
    """Raw samples of one series in ``[since_ms, until_ms]``, in time order."""
    import numpy as np

    ts_parts: list[Ints] = []
    val_parts: list[Floats] = []
    # Blocks never overlap: the one holding since_ms starts at the latest start <= since_ms,
    # so the index range starts there and the table rows of older blocks are never read.
    blocks = conn.execute(
        "SELECT start_ts, end_ts, data FROM sample_blocks WHERE series_id = ? AND start_ts >= "
        "coalesce((SELECT max(start_ts) FROM sample_blocks WHERE series_id = ? "
        "AND start_ts <= ?), ?) AND start_ts <= ? ORDER BY start_ts",
        (series_id, series_id, since_ms, since_ms, until_ms),
    )
    for start, end, blob in blocks:
        if end < since_ms:
            continue
        ts, vals = decode(blob)
        if start < since_ms or end > until_ms:
            keep = (ts >= since_ms) & (ts <= until_ms)
            ts, vals = ts[keep], vals[keep]
        ts_parts.append(ts)
        val_parts.append(vals)
    head = conn.execute(
        "SELECT ts, value FROM samples_head WHERE series_id = ? AND ts BETWEEN ? AND ? ORDER BY ts",
        (series_id, since_ms, until_ms),
    ).fetchall()
    if head:
        ts_parts.append(np.fromiter((r[0] for r in head), dtype=np.int64, count=len(head)))
        val_parts.append(np.fromiter((r[1] for r in head), dtype=np.float64, count=len(head)))
    if not ts_parts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    if len(ts_parts) == 1:
        return ts_parts[0], val_parts[0]
    return np.concatenate(ts_parts), np.concatenate(val_parts)


def raw_points(
    conn: sqlite3.Connection, series_id: int, since_ms: int, until_ms: int
) -> list[tuple[int, float]]:
    """Raw samples of one series in ``[since_ms, until_ms]``, in time order, as plain tuples.

    The same samples :func:`raw_arrays` reads, decoded in pure Python: for the agent's own
    short reads (alert rules over a few minutes), which must not load numpy into every
    running agent.
    """
    out: list[tuple[int, float]] = []
    blocks = conn.execute(
        "SELECT start_ts, end_ts, data FROM sample_blocks WHERE series_id = ? AND start_ts >= "
        "coalesce((SELECT max(start_ts) FROM sample_blocks WHERE series_id = ? "
        "AND start_ts <= ?), ?) AND start_ts <= ? ORDER BY start_ts",
        (series_id, series_id, since_ms, since_ms, until_ms),
    )
    for _start, end, blob in blocks:
        if end < since_ms:
            continue
        ts, vals = decode_lists(blob)
        out.extend((t, v) for t, v in zip(ts, vals, strict=True) if since_ms <= t <= until_ms)
    head = conn.execute(
        "SELECT ts, value FROM samples_head WHERE series_id = ? AND ts BETWEEN ? AND ? ORDER BY ts",
        (series_id, since_ms, until_ms),
    ).fetchall()
    out.extend((int(t), float(v)) for t, v in head)
    return out


def rollup_arrays(
    conn: sqlite3.Connection, tier: Tier, series_id: int, since_ms: int, until_ms: int
) -> Aggregates:
    """Rollup rows of one series whose start is in ``[since_ms, until_ms]``."""
    import numpy as np

    rows = conn.execute(
        f"SELECT ts, count, sum, min, max FROM {tier.table} "  # noqa: S608 - fixed table names
        "WHERE series_id = ? AND ts BETWEEN ? AND ? ORDER BY ts",
        (series_id, since_ms, until_ms),
    ).fetchall()
    if not rows:
        return _empty()
    ts, count, total, lo, hi = zip(*rows, strict=True)
    return Aggregates(
        np.array(ts, dtype=np.int64),
        np.array(count, dtype=np.int64),
        np.array(total, dtype=np.float64),
        np.array(lo, dtype=np.float64),
        np.array(hi, dtype=np.float64),
    )


def oldest_ts(conn: sqlite3.Connection, tier: Tier, series_id: int) -> int | None:
    """The oldest time a tier holds for one series, or None when it holds nothing."""
    if tier is RAW:
        first = conn.execute(
            "SELECT start_ts FROM sample_blocks WHERE series_id = ? ORDER BY start_ts LIMIT 1",
            (series_id,),
        ).fetchone()
        if first is not None:
            return int(first[0])
        head = conn.execute(
            "SELECT min(ts) FROM samples_head WHERE series_id = ?", (series_id,)
        ).fetchone()
        return None if head[0] is None else int(head[0])
    row = conn.execute(
        f"SELECT min(ts) FROM {tier.table} WHERE series_id = ?",  # noqa: S608 - fixed names
        (series_id,),
    ).fetchone()
    return None if row[0] is None else int(row[0])


def tier_for_step(step_ms: int | None) -> Tier:
    """The coarsest tier whose resolution is no coarser than the requested step."""
    if not step_ms or step_ms < RES_1M:
        return RAW
    if step_ms < RES_1H:
        return TIER_1M
    return TIER_1H


def fetch(
    conn: sqlite3.Connection, series_id: int, since_ms: int, until_ms: int, tier: Tier = RAW
) -> Aggregates:
    """One series' data in ``[since_ms, until_ms]`` from ``tier``, completed by coarser tiers.

    Where ``tier`` no longer reaches back to ``since_ms`` (retention purged it), the next
    coarser tier answers for the older part, so a long chart is never empty at its start.
    A coarser row is used only if it ends before the finer tier's data begins.
    """
    import numpy as np

    parts: list[Aggregates] = []
    finer_from: int | None = None  # where the finer tier already used begins
    for t in TIERS[TIERS.index(tier) :]:
        start = oldest_ts(conn, t, series_id)
        if start is None:
            continue  # this tier holds nothing (yet): a coarser one may
        if t is RAW:
            ts, vals = raw_arrays(conn, series_id, since_ms, until_ms)
            part = Aggregates(ts, np.ones(len(ts), dtype=np.int64), vals, vals, vals)
        else:
            upper = until_ms if finer_from is None else finer_from - t.resolution_ms
            part = rollup_arrays(conn, t, series_id, since_ms, upper)
        if len(part.ts):
            parts.append(part)
        if start <= since_ms:
            break
        finer_from = start if finer_from is None else min(finer_from, start)
    if not parts:
        return _empty()
    parts.reverse()
    if len(parts) == 1:
        return parts[0]
    return Aggregates(*(np.concatenate([p[i] for p in parts]) for i in range(5)))


def bucket(data: Aggregates, since_ms: int, step_ms: int) -> Aggregates:
    """Group points into ``step_ms`` buckets starting at ``since_ms`` (each counts where it
    starts); avg is ``sum / count``."""
    import numpy as np

    if not len(data.ts):
        return data
    idx = (data.ts - since_ms) // step_ms
    starts, _ = _runs(idx)
    return Aggregates(
        since_ms + idx[starts] * step_ms,
        np.add.reduceat(data.n, starts),
        np.add.reduceat(data.sum, starts),
        np.minimum.reduceat(data.min, starts),
        np.maximum.reduceat(data.max, starts),
    )


def count_raw(conn: sqlite3.Connection, series_id: int) -> int:
    """How many raw samples one series holds (blocks and head)."""
    blocks = conn.execute(
        "SELECT coalesce(sum(n), 0) FROM sample_blocks WHERE series_id = ?", (series_id,)
    ).fetchone()[0]
    head = conn.execute(
        "SELECT count(*) FROM samples_head WHERE series_id = ?", (series_id,)
    ).fetchone()[0]
    return int(blocks) + int(head)


def count_all_raw(conn: sqlite3.Connection) -> int:
    """How many raw samples the database holds, every series together."""
    blocks = conn.execute("SELECT coalesce(sum(n), 0) FROM sample_blocks").fetchone()[0]
    head = conn.execute("SELECT count(*) FROM samples_head").fetchone()[0]
    return int(blocks) + int(head)


def count_raw_between(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> int:
    """How many raw samples, every series together, have a time in ``[since_ms, until_ms]``."""
    inside = conn.execute(
        "SELECT coalesce(sum(n), 0) FROM sample_blocks WHERE start_ts >= ? AND end_ts <= ?",
        (since_ms, until_ms),
    ).fetchone()[0]
    total = int(inside)
    edges = conn.execute(
        "SELECT data FROM sample_blocks WHERE start_ts <= ? AND end_ts >= ? "
        "AND NOT (start_ts >= ? AND end_ts <= ?)",
        (until_ms, since_ms, since_ms, until_ms),
    )
    for (blob,) in edges:
        ts, _ = decode(blob)
        total += int(((ts >= since_ms) & (ts <= until_ms)).sum())
    head = conn.execute(
        "SELECT count(*) FROM samples_head WHERE ts BETWEEN ? AND ?", (since_ms, until_ms)
    ).fetchone()[0]
    return total + int(head)


def _runs(keys: Ints) -> tuple[Ints, Ints]:
    """Start index and length of each run of equal values in a sorted array."""
    import numpy as np

    starts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    bounds = np.empty(len(starts) + 2, dtype=np.int64)
    bounds[0] = 0
    bounds[1:-1] = starts
    bounds[-1] = len(keys)
    return bounds[:-1], bounds[1:] - bounds[:-1]


# --- whole blocks -------------------------------------------------------------------------------


def pack(
    ts: Sequence[int] | Ints,
    values: Sequence[float] | Floats,
    guess: int,
    *,
    most: int = BLOCK_SAMPLES,
    keep_tail: bool,
) -> tuple[list[tuple[int, int, bytes]], int]:
    """Cut time-ordered samples into encoded blocks of at most ``most`` samples and
    :data:`BLOCK_BYTES` bytes, starting with ``guess`` samples a block.

    Args:
        keep_tail: stop before a last block smaller than the block size (it stays in the
            head); otherwise everything is packed.

    Returns:
        ``(lo, hi, blob)`` per block, and the block size to start from next time.
    """
    out: list[tuple[int, int, bytes]] = []
    n = len(ts)
    k = max(1, min(guess, most))
    lo = 0
    while n - lo >= (k if keep_tail else 1):
        hi = min(n, lo + k)
        blob = encode(ts[lo:hi], values[lo:hi])
        if len(blob) > BLOCK_BYTES and hi - lo > 1:
            k = max(1, int((hi - lo) * BLOCK_BYTES / len(blob) * 0.95))
            continue
        out.append((lo, hi, blob))
        lo = hi
        if len(blob) < 0.75 * BLOCK_BYTES and k < most:
            k = min(most, k + max(1, k // 4))  # the values compress better again: grow back
    return out, k


def insert_block(
    conn: sqlite3.Connection, sid: int, start: int, end: int, n: int, blob: bytes
) -> None:
    """Insert one encoded block (see :func:`pack`)."""
    conn.execute(
        "INSERT INTO sample_blocks (series_id, start_ts, end_ts, n, data) VALUES (?, ?, ?, ?, ?)",
        (sid, start, end, n, blob),
    )


def write_blocks(
    conn: sqlite3.Connection,
    series_id: int,
    ts: Sequence[int] | Ints,
    values: Sequence[float] | Floats,
) -> None:
    """Insert samples (time-ordered, unique, not overlapping stored blocks) as blocks."""
    blocks, _ = pack(ts, values, BLOCK_SAMPLES, keep_tail=False)
    for lo, hi, blob in blocks:
        insert_block(conn, series_id, int(ts[lo]), int(ts[hi - 1]), hi - lo, blob)
