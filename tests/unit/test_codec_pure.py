"""The pure-Python block encoder writes the bytes numpy's vectorised encoder wrote, and the
writer's path (storage.writer, storage.ingest) runs without importing numpy."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from storage import codec
from tests.helpers import ROOT, child_env

I64 = st.integers(-(2**63), 2**63 - 1)

# --- the reference: numpy's encoder as it was (storage/codec.py before the pure encoder) -----

_FACTORS = 10.0 ** np.arange(codec._MAX_DECIMALS + 1)
_EXACT = float(2**53)


def _zigzag(x: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _decimal_scale(values: npt.NDArray[np.float64]) -> tuple[int, npt.NDArray[np.int64]] | None:
    with np.errstate(invalid="ignore", over="ignore"):
        head = values[:16]
        scaled = np.round(head * _FACTORS[:, None])
        fits = np.abs(scaled) < _EXACT
        back = np.where(fits, scaled, 0.0).astype(np.int64).astype(np.float64) / _FACTORS[:, None]
        match = ((back.view(np.int64) == head.view(np.int64)) & fits).all(axis=1)
        hits = np.flatnonzero(match)
        if not len(hits):
            return None
        decimals = int(hits[0])
        ints = _scaled_exactly(values, decimals)
    return None if ints is None else (decimals, ints)


def _scaled_exactly(values: npt.NDArray[np.float64], decimals: int) -> npt.NDArray[np.int64] | None:
    factor = _FACTORS[decimals]
    scaled = np.round(values * factor)
    if not (np.abs(scaled) < _EXACT).all():
        return None
    ints = scaled.astype(np.int64)
    back = ints.astype(np.float64) / factor
    return ints if np.array_equal(back.view(np.int64), values.view(np.int64)) else None


def numpy_encode(ts_ms: npt.ArrayLike, values: npt.ArrayLike) -> bytes:
    ts = np.asarray(ts_ms, dtype=np.int64)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    n = len(ts)
    ints = np.empty(2 * n - 1, dtype=np.int64)
    with np.errstate(over="ignore"):
        if n > 1:
            deltas = ts[1:] - ts[:-1]
            ints[0] = deltas[0]
            np.subtract(deltas[1:], deltas[:-1], out=ints[1 : n - 1])
    scaled = _decimal_scale(vals)
    if scaled is not None:
        mode, decimals = codec.MODE_DECIMAL, scaled[0]
        k = scaled[1]
        ints[n - 1] = k[0]
        np.subtract(k[1:], k[:-1], out=ints[n:])
        out = _zigzag(ints)
    else:
        mode, decimals = codec.MODE_XOR, 0
        out = np.empty(2 * n - 1, dtype=np.uint64)
        out[: n - 1] = _zigzag(ints[: n - 1])
        bits = vals.view(np.uint64)
        out[n - 1] = bits[0]
        np.bitwise_xor(bits[1:], bits[:-1], out=out[n:])
    shuffled = out.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8).T.tobytes()
    header = codec._HEADER.pack(codec.VERSION, mode, decimals, n, int(ts[0]))
    return header + zlib.compress(shuffled, codec._ZLIB_LEVEL)


# --- strategies -----------------------------------------------------------------------------

T0 = 1_780_000_000_000


def _bits(values: list[float]) -> list[int]:
    return list(struct.unpack(f"<{len(values)}Q", struct.pack(f"<{len(values)}d", *values)))


@st.composite
def decimal_values(draw: st.DrawFn) -> list[float]:
    """Values that are k / 10**d, mostly: the decimal mode's inputs and its near misses."""
    places = draw(st.integers(0, 8))
    size = draw(st.integers(1, 80))
    bound = draw(st.sampled_from([10, 1000, 10**6, 2**53 // 10**places, 2**53]))
    ks = draw(st.lists(st.integers(-bound, bound), min_size=size, max_size=size))
    values = [k / 10.0**places for k in ks]
    if draw(st.booleans()):  # something odd somewhere (often past the first 16)
        at = draw(st.integers(0, size - 1))
        values[at] = draw(
            st.sampled_from([-0.0, 0.0, math.nan, math.inf, -math.inf, 0.1, 1e-7, 2.0**53, 1e300])
        )
    return values


SPECIAL = st.sampled_from(
    [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1e308, -1e308, 2.0**53, 2.0**53 - 1]
)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), SPECIAL)
VALUES = st.one_of(
    decimal_values(),
    st.lists(FLOATS, min_size=1, max_size=80),
    st.lists(st.integers(-(2**60), 2**60).map(float), min_size=1, max_size=40),
    st.builds(lambda v, n: [v] * n, FLOATS, st.integers(1, 40)),  # constant series
)


@st.composite
def timestamps(draw: st.DrawFn, n: int) -> list[int]:
    kind = draw(st.sampled_from(["steady", "any", "wild"]))
    if kind == "steady":
        start = draw(st.integers(0, 2**45))
        step = draw(st.sampled_from([1, 1000, 15000]))
        jitter = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
        return [start + i * step + j for i, j in enumerate(jitter)]
    if kind == "any":  # increasing, uneven
        start = draw(st.integers(-(2**40), 2**40))
        gaps = draw(st.lists(st.integers(1, 10**9), min_size=n, max_size=n))
        return [start + g for g in np.cumsum(gaps).tolist()]
    # anything int64, unordered: the encoder does not check, deltas wrap as int64
    return draw(st.lists(I64, min_size=n, max_size=n))


@st.composite
def blocks(draw: st.DrawFn) -> tuple[list[int], list[float]]:
    values = draw(VALUES)
    return draw(timestamps(len(values))), values


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(blocks())
@example(([T0], [0.5]))
@example(([T0, T0 + 1000], [-0.0, 1.0]))
@example(([T0, T0 + 1000], [1.0, -0.0]))
@example(([T0] * 1, [math.nan]))
@example(([2**63 - 1, -(2**63), 2**63 - 1], [1.0, 2.0, 3.0]))
@example(([T0 + i for i in range(20)], [0.1] * 16 + [0.12, 0.1, 0.1, 0.1]))
@example(([T0 + i for i in range(20)], [1.0] * 16 + [0.5] + [1.0] * 3))
@example(([T0 + i for i in range(3)], [2.0**53 - 1, 0.0, 1.0]))
def test_pure_encoder_writes_numpy_encoders_bytes(block: tuple[list[int], list[float]]) -> None:
    ts, values = block
    blob = codec.encode(ts, values)
    assert blob == numpy_encode(ts, values)
    # and from numpy arrays, as readers' re-encoding (retention) passes them
    assert codec.encode(np.array(ts, dtype=np.int64), np.array(values)) == blob
    got_ts, got = codec.decode(blob)
    assert got_ts.tolist() == ts
    assert got.view(np.uint64).tolist() == _bits(values)
    list_ts, list_vals = codec.decode_lists(blob)
    assert list_ts == ts
    assert _bits(list_vals) == _bits(values)


@pytest.mark.parametrize(
    ("values", "mode", "decimals"),
    [
        ([12.5, 99.9, 0.1, 100.0], codec.MODE_DECIMAL, 1),
        ([4096.0 * i + 8e9 for i in range(40)], codec.MODE_DECIMAL, 0),
        ([0.000001, 0.5], codec.MODE_DECIMAL, 6),
        ([0.0000001], codec.MODE_XOR, 0),  # 7 places: more than the codec tries
        ([1.0] * 16 + [0.25], codec.MODE_XOR, 0),  # the first 16 chose 0 places
        ([0.0, -0.0], codec.MODE_XOR, 0),
        ([math.nan], codec.MODE_XOR, 0),
        ([2.0**53], codec.MODE_XOR, 0),
    ],
)
def test_modes(values: list[float], mode: int, decimals: int) -> None:
    blob = codec.encode([T0 + 1000 * i for i in range(len(values))], values)
    assert (blob[1], blob[2]) == (mode, decimals)
    assert blob == numpy_encode([T0 + 1000 * i for i in range(len(values))], values)


def test_encode_rejects_what_numpy_rejected() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        codec.encode([], [])
    with pytest.raises(ValueError, match="as many values"):
        codec.encode([1, 2], [1.0])
    with pytest.raises(OverflowError):
        codec.encode([0, 2**63], [1.0, 2.0])


def test_decode_lists_rejects_what_decode_rejects() -> None:
    blob = codec.encode([T0, T0 + 1000], [1.5, 2.5])
    for bad in (blob[:5], bytes([9]) + blob[1:], blob[:16] + b"not zlib", blob[:-3]):
        with pytest.raises(codec.CodecError):
            codec.decode(bad)
        with pytest.raises(codec.CodecError):
            codec.decode_lists(bad)


# --- numpy stays out of the writer -------------------------------------------------------------

_WRITE = """
import json, sqlite3, sys, tempfile
from pathlib import Path
from storage.records import Sample, make_labels
from storage.writer import Writer
import storage.ingest
assert "numpy" not in sys.modules, "imported"
with tempfile.TemporaryDirectory() as tmp:
    w = Writer(Path(tmp) / "vigil.db", block_samples=64)
    w.start()
    labels = make_labels({"host": "a"})
    t0 = 1_780_000_000_000
    for i in range(0, 1000, 50):
        w.submit([Sample("cpu", labels, t0 + (i + j) * 1000, (i + j) % 7 / 10) for j in range(50)])
        w.submit([Sample("rate", labels, t0 + (i + j) * 1000, 1 / (i + j + 3)) for j in range(50)])
    assert w.flush()
    w.close()
    conn = sqlite3.connect(Path(tmp) / "vigil.db")
    blocks = conn.execute("SELECT count(*) FROM sample_blocks").fetchone()[0]
    conn.close()
print(json.dumps({"numpy": "numpy" in sys.modules, "blocks": blocks}))
"""


def test_writing_samples_does_not_import_numpy() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WRITE],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["blocks"] > 20  # blocks were sealed, by the pure encoder
    assert out["numpy"] is False
