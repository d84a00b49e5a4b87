"""What an ONNX file says about itself without onnxruntime: its sha256 and its opsets.

onnxruntime exposes no opset, and the ``onnx`` package is only a dev dependency, so the IR
version and ``opset_import`` come from a minimal scan of the ModelProto's top-level protobuf
fields. Used by the worker (``probes.onnx_worker``) at load time.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import IO

_HASH_CHUNK = 1 << 20
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


def file_sha256(path: str) -> tuple[str, int]:
    """The file's sha256 (hex) and size, read in chunks so a big model costs no memory."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _varint(f: IO[bytes]) -> int:
    result = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of a small protobuf message held in memory."""
    f = io.BytesIO(data)
    out: list[tuple[int, int | bytes]] = []
    while f.tell() < len(data):
        key = _varint(f)
        field, wire = key >> 3, key & 7
        if wire == _WIRE_VARINT:
            out.append((field, _varint(f)))
        elif wire == _WIRE_LEN:
            out.append((field, f.read(_varint(f))))
        elif wire in (_WIRE_I64, _WIRE_I32):
            f.read(8 if wire == _WIRE_I64 else 4)
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def scan_opsets(path: str) -> tuple[int | None, dict[str, int]]:
    """IR version and ``opset_import`` of an ONNX file, by a minimal protobuf scan.

    Reads only ModelProto's top-level tags and seeks over everything else (the graph with its
    weights), so the cost does not grow with the model. Field 1 is ``ir_version``, field 8 the
    repeated ``OperatorSetIdProto`` (1: domain, 2: version); the empty domain is reported as
    ``ai.onnx``.

    Raises:
        ValueError, EOFError: the file is not a well-formed protobuf message.
    """
    ir_version: int | None = None
    opsets: dict[str, int] = {}
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while f.tell() < size:
            key = _varint(f)
            field, wire = key >> 3, key & 7
            if wire == _WIRE_VARINT:
                value = _varint(f)
                if field == 1:
                    ir_version = value
            elif wire == _WIRE_LEN:
                length = _varint(f)
                if f.tell() + length > size:
                    raise EOFError("field runs past the end of the file")
                if field == 8:
                    parts = _fields(f.read(length))
                    domain = next((v for k, v in parts if k == 1 and isinstance(v, bytes)), b"")
                    version = next((v for k, v in parts if k == 2 and isinstance(v, int)), 0)
                    name = domain.decode("utf-8", errors="replace") or "ai.onnx"
                    opsets[name] = version
                else:
                    f.seek(length, os.SEEK_CUR)
            elif wire in (_WIRE_I64, _WIRE_I32):
                f.seek(8 if wire == _WIRE_I64 else 4, os.SEEK_CUR)
            else:
                raise ValueError(f"unexpected protobuf wire type {wire}")
    return ir_version, opsets
