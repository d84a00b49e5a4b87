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

Both modes round-trip bit for bit. Encoding is pure Python (list passes, ``struct`` and bytes
slicing), so the agent's writer never imports numpy: it seals a block a few hundred
microseconds long. Integers wrap as int64 arithmetic does, so the bytes are those numpy's
vectorised encoder wrote (``tests/unit/test_codec_pure.py`` keeps it as the reference).
Decoding, for readers, is a few vectorised numpy passes (numpy loaded on the first decode);
:func:`decode_lists` decodes in pure Python for a writer that must not load it.
"""

from __future__ import annotations

import math
import operator
import struct
import zlib
from collections.abc import Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Ints = npt.NDArray[np.int64]
    Floats = npt.NDArray[np.float64]

VERSION = 1
MODE_XOR = 0
MODE_DECIMAL = 1
_HEADER = struct.Struct("<BBBxIq")
_MAX_DECIMALS = 6
_FACTORS = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0)
"""``10.0 ** decimals``; all exact."""
_EXACT = 2**53
_HEAD = 16
"""Decimals are chosen on this many first values (every candidate), then checked on all."""
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64 = 2**64 - 1
_ZLIB_LEVEL = 1
"""Level 1 is within a few percent of 9 on this data and several times faster."""


class CodecError(ValueError):
    """A blob that is not a block this codec wrote (corrupt or from a newer Vigil)."""


# --- encoding (pure Python) ---------------------------------------------------------------


def _as_list(column: Any) -> list[Any]:
    tolist = getattr(column, "tolist", None)  # a numpy array: its Python scalars, bit for bit
    return tolist() if tolist is not None else list(column)


def _wrap64(xs: list[int]) -> list[int]:
    """Python ints as the int64 values numpy's wrapping arithmetic leaves (only when needed)."""
    if xs and (min(xs) < _I64_MIN or max(xs) > _I64_MAX):
        return [((x - _I64_MIN) & _U64) + _I64_MIN for x in xs]
    return xs


def _zigzag(xs: list[int]) -> list[int]:
    """int64 values (as Python ints) to their zigzag uint64s: ``(x << 1) ^ (x >> 63)``."""
    return [x + x if x >= 0 else -x - x - 1 for x in xs]


def _decimal_scale(vals: list[float]) -> tuple[int, list[int]] | None:
    """The fewest decimals that represent every value exactly, and the scaled integers.

    Decided as the vectorised original did: the first candidate exact on every one of the
    first :data:`_HEAD` values, then that candidate only on the whole block.
    """
    # A non-finite sum means a NaN or inf, or values too large for an integer form anyway.
    if not math.isfinite(sum(vals)) or max(vals) >= _EXACT or min(vals) <= -_EXACT:
        return None
    if 0.0 in vals and any(v == 0.0 and math.copysign(1.0, v) < 0.0 for v in vals):
        return None  # -0.0 comes back from k / 10**d as +0.0: no integer form
    head = vals[:_HEAD]
    for decimals, factor in enumerate(_FACTORS):
        if _scaled_exactly(head, factor) is not None:
            ints = _scaled_exactly(vals, factor)
            return None if ints is None else (decimals, ints)
    return None


def _scaled_exactly(vals: list[float], factor: float) -> list[int] | None:
    """``k`` with ``k / factor == v`` bit for bit for every value, or None. The values are
    finite floats below 2**53 in magnitude and none is -0.0 (:func:`_decimal_scale` checked)."""
    if factor == 1.0:  # k / 1.0 is v exactly when v is whole (|v| < 2**53, no -0.0 here)
        return list(map(int, vals)) if all(map(float.is_integer, vals)) else None
    # round() is round-half-even, as numpy's rint; k / factor is exactly what decode computes.
    ints = list(map(round, map(factor.__mul__, vals)))
    if max(ints) >= _EXACT or min(ints) <= -_EXACT:
        return None
    return ints if list(map(factor.__rtruediv__, ints)) == vals else None


def encode(ts_ms: Sequence[int] | Ints, values: Sequence[float] | Floats) -> bytes:
    """Encode one series' samples (strictly increasing timestamps) as a block.

    Args:
        ts_ms: int64 timestamps, strictly increasing (a list or a numpy array).
        values: float64 values, same length, at least one.
    """
    ts = _as_list(ts_ms)
    vals = [float(v) for v in _as_list(values)]
    n = len(ts)
    if n == 0 or len(vals) != n:
        raise ValueError("a block needs at least one sample and as many values as timestamps")
    if min(ts) < _I64_MIN or max(ts) > _I64_MAX:
        raise OverflowError("timestamp out of int64 range")
    if n > 1:
        deltas = list(map(operator.sub, ts[1:], ts))
        dods = _wrap64([deltas[0], *map(operator.sub, deltas[1:], deltas)])
    else:
        dods = []
    scaled = _decimal_scale(vals)
    if scaled is not None:
        mode, decimals = MODE_DECIMAL, scaled[0]
        k = scaled[1]
        dods.append(k[0])
        dods.extend(map(operator.sub, k[1:], k))  # |k| < 2**53: no wrapping
        out = _zigzag(dods)
    else:
        mode, decimals = MODE_XOR, 0
        out = _zigzag(dods)
        bits = struct.unpack(f"<{n}Q", struct.pack(f"<{n}d", *vals))
        out.append(bits[0])
        out.extend(map(operator.xor, bits[1:], bits))
    packed = struct.pack(f"<{len(out)}Q", *out)
    shuffled = b"".join([packed[i::8] for i in range(8)])
    header = _HEADER.pack(VERSION, mode, decimals, n, ts[0])
    return header + zlib.compress(shuffled, _ZLIB_LEVEL)


# --- decoding -------------------------------------------------------------------------------


def _payload(blob: bytes) -> tuple[int, int, int, int, bytes]:
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
    if mode == MODE_DECIMAL and decimals > _MAX_DECIMALS:
        raise CodecError(f"block with {decimals} decimals")
    return mode, decimals, n, first, raw


def decode(blob: bytes) -> tuple[Ints, Floats]:
    """Decode a block into numpy arrays (timestamps, values). Imports numpy on first use.

    Raises:
        CodecError: the blob is not a version-1 block.
    """
    import numpy as np

    mode, decimals, n, first, raw = _payload(blob)
    ints = np.frombuffer(raw, dtype=np.uint8).reshape(8, -1).T.copy().view("<u8").ravel()
    dod = _unzigzag_np(ints[: n - 1])
    ts = np.empty(n, dtype=np.int64)
    ts[0] = first
    np.cumsum(np.cumsum(dod), out=ts[1:])
    ts[1:] += first
    enc = ints[n - 1 :]
    if mode == MODE_DECIMAL:
        values = np.cumsum(_unzigzag_np(enc)).astype(np.float64) / _FACTORS[decimals]
    else:
        values = np.bitwise_xor.accumulate(enc).view(np.float64)
    return ts, values


def _unzigzag_np(z: npt.NDArray[np.uint64]) -> Ints:
    import numpy as np

    return ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).view(np.int64)


def decode_lists(blob: bytes) -> tuple[list[int], list[float]]:
    """Decode a block into lists, in pure Python (the same numbers :func:`decode` gives).

    Raises:
        CodecError: the blob is not a version-1 block.
    """
    mode, decimals, n, first, raw = _payload(blob)
    m = 2 * n - 1
    packed = bytearray(8 * m)
    for i in range(8):
        packed[i::8] = raw[i * m : (i + 1) * m]
    ints = struct.unpack(f"<{m}Q", packed)
    dod = [(z >> 1) ^ -(z & 1) for z in ints[: n - 1]]
    ts = _wrap64([first, *(first + t for t in accumulate(accumulate(dod)))])
    enc = ints[n - 1 :]
    if mode == MODE_DECIMAL:
        k = _wrap64(list(accumulate([(z >> 1) ^ -(z & 1) for z in enc])))
        values = list(map(_FACTORS[decimals].__rtruediv__, map(float, k)))
    else:
        xored = list(accumulate(enc, operator.xor))
        values = list(struct.unpack(f"<{n}d", struct.pack(f"<{n}Q", *xored)))
    return ts, values
