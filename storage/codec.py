"""The raw-sample block codec: one series' samples in one compact, lossless blob.

A block holds ``n`` samples of one series in time order. Layout (little-endian)::

    version u8 (=1) | mode u8 | decimals u8 | reserved u8 | n u32 | first_ts i64 | zlib(payload)

``payload`` is two arrays of 64-bit integers, byte-shuffled (all first bytes, then all second
bytes, ...) so that the many zero high bytes of small numbers sit together for zlib:

- timestamps as delta-of-delta, zigzag-encoded (``n - 1`` values): a steady 1 s series costs
  about half a byte per sample;
- values, by ``mode``:

  - ``MODE_DECIMAL``: every value is exactly ``k / 10**decimals`` for an integer ``k`` below
    2**53 (percentages rounded to 0.1, byte counts, counters): the zigzag deltas of ``k``;
  - ``MODE_XOR``: anything else (NaN included): each float64's bits XOR the previous one's.

Both modes round-trip bit for bit; decoding is a few vectorised numpy passes.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

VERSION = 1
MODE_XOR = 0
MODE_DECIMAL = 1
_HEADER = struct.Struct("<BBBxIq")
_MAX_DECIMALS = 6
_FACTORS = 10.0 ** np.arange(_MAX_DECIMALS + 1)
_EXACT = float(2**53)
_ZLIB_LEVEL = 1
"""Level 1 is within a few percent of 9 on this data and several times faster."""

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


class CodecError(ValueError):
    """A blob that is not a block this codec wrote (corrupt or from a newer Vigil)."""


def _zigzag(x: Ints) -> npt.NDArray[np.uint64]:
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(z: npt.NDArray[np.uint64]) -> Ints:
    return ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).view(np.int64)


def _decimal_scale(values: Floats) -> tuple[int, Ints] | None:
    """The fewest decimals that represent every value exactly, and the scaled integers."""
    with np.errstate(invalid="ignore", over="ignore"):
        # Every candidate at once on a short prefix (cheap), then the whole block once.
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


def _scaled_exactly(values: Floats, decimals: int) -> Ints | None:
    factor = _FACTORS[decimals]
    scaled = np.round(values * factor)
    if not (np.abs(scaled) < _EXACT).all():
        return None  # NaN, inf or too large: no integer form
    ints = scaled.astype(np.int64)
    back = ints.astype(np.float64) / factor  # exactly what decode computes
    # Compare bits, not values: -0.0 == 0.0 but must come back as -0.0.
    return ints if np.array_equal(back.view(np.int64), values.view(np.int64)) else None


def encode(ts_ms: Ints, values: Floats) -> bytes:
    """Encode one series' samples (strictly increasing timestamps) as a block.

    Args:
        ts_ms: int64 timestamps, strictly increasing.
        values: float64 values, same length, at least one.
    """
    n = len(ts_ms)
    if n == 0 or len(values) != n:
        raise ValueError("a block needs at least one sample and as many values as timestamps")
    ts = np.asarray(ts_ms, dtype=np.int64)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    ints = np.empty(2 * n - 1, dtype=np.int64)  # timestamps' dod, then values
    if n > 1:
        deltas = ts[1:] - ts[:-1]
        ints[0] = deltas[0]
        np.subtract(deltas[1:], deltas[:-1], out=ints[1 : n - 1])
    scaled = _decimal_scale(vals)
    if scaled is not None:
        mode, decimals = MODE_DECIMAL, scaled[0]
        k = scaled[1]
        ints[n - 1] = k[0]
        np.subtract(k[1:], k[:-1], out=ints[n:])
        out = _zigzag(ints)
    else:
        mode, decimals = MODE_XOR, 0
        out = np.empty(2 * n - 1, dtype=np.uint64)
        out[: n - 1] = _zigzag(ints[: n - 1])
        bits = vals.view(np.uint64)
        out[n - 1] = bits[0]
        np.bitwise_xor(bits[1:], bits[:-1], out=out[n:])
    shuffled = out.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8).T.tobytes()
    header = _HEADER.pack(VERSION, mode, decimals, n, int(ts[0]))
    return header + zlib.compress(shuffled, _ZLIB_LEVEL)


def decode(blob: bytes) -> tuple[Ints, Floats]:
    """Decode a block into (timestamps, values).

    Raises:
        CodecError: the blob is not a version-1 block.
    """
    if len(blob) < _HEADER.size:
        raise CodecError("block too short")
    version, mode, decimals, n, first = _HEADER.unpack_from(blob)
    if version != VERSION or mode not in (MODE_XOR, MODE_DECIMAL):
        raise CodecError(f"unknown block version {version} mode {mode}")
    try:
        raw = zlib.decompress(blob[_HEADER.size :])
    except zlib.error as exc:
        raise CodecError(f"corrupt block: {exc}") from None
    if len(raw) != 8 * (2 * n - 1):
        raise CodecError("block payload length does not match its sample count")
    ints = np.frombuffer(raw, dtype=np.uint8).reshape(8, -1).T.copy().view("<u8").ravel()
    dod = _unzigzag(ints[: n - 1])
    ts = np.empty(n, dtype=np.int64)
    ts[0] = first
    np.cumsum(np.cumsum(dod), out=ts[1:])
    ts[1:] += first
    enc = ints[n - 1 :]
    if mode == MODE_DECIMAL:
        if decimals > _MAX_DECIMALS:
            raise CodecError(f"block with {decimals} decimals")
        values = np.cumsum(_unzigzag(enc)).astype(np.float64) / _FACTORS[decimals]
    else:
        values = np.bitwise_xor.accumulate(enc).view(np.float64)
    return ts, values
