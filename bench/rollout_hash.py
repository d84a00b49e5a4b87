"""The ``hash`` section of bench/rollout.py: hashing a multi-GB model artifact, and re-checking
it through the cache.

The artifact is a directory laid out as a Hugging Face model is: 1 GiB safetensors-like shards
(``--hash-size-gb`` in all) plus small config and tokenizer files, hashed by
``agent.deploy.artifacts.hash_artifact`` with no cache:

* warm (the files in the page cache: the hash's own speed) at read sizes of 64 KiB, 1 MiB (the
  product's) and 4 MiB;
* cold (each file's pages dropped first with ``posix_fadvise(DONTNEED)``: the disk's speed);
* SHA-256 against BLAKE2b over the same bytes with the same 1 MiB read loop (the evidence for
  the product's choice), and coreutils' ``sha256sum`` on one shard as a peer;
* the cached re-check, the per-file cache in a real SQLite database: the first hash (which fills
  it), ``--hash-repeats`` re-checks of the unchanged artifact (time, bytes read: 0 expected),
  one re-check after a small file is rewritten (that file alone read), and a directory of
  ``--hash-many-files`` 64 KiB files (the per-file cost of a re-check: a stat and a lookup).

No targets: the issue asks for the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import BenchError, percentiles

from agent.deploy.artifacts import CHUNK_BYTES, ArtifactDigest, hash_artifact
from agent.deploy.hashcache import ConnectionHashCache
from storage.db import open_database

GIB = 1 << 30
MIB = 1 << 20


def add_args(parser: argparse.ArgumentParser) -> None:
    """The section's options."""
    g = parser.add_argument_group("hash: artifact hashing and the cached re-check")
    g.add_argument("--hash-size-gb", type=float, default=4.0, help="artifact size in GiB (4)")
    g.add_argument("--hash-many-files", type=int, default=2000, help="files in the many-file tree")
    g.add_argument("--hash-repeats", type=int, default=5, help="cached re-checks timed (5)")
    g.add_argument("--hash-dir", default=None, help="where to write (default: the temp dir)")


def _write(path: Path, size: int, block: bytes, tag: bytes) -> None:
    """``size`` bytes: ``tag``, then ``block`` repeated (the content does not change a hash's
    speed; the tags keep the files distinct). Synced, so the cold read comes from the disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(tag)
        left = size - len(tag)
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def _make_model(root: Path, size: int) -> None:
    block = os.urandom(64 * MIB)
    _write(root / "config.json", 2_000, b" " * 2_000, b'{"architectures": ["Bench"]}')
    _write(root / "generation_config.json", 200, b" " * 200, b'{"temperature": 0}')
    _write(root / "tokenizer.json", 2 * MIB, block, b"tok")
    shards = max(1, round(size / GIB))
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        _write(root / name, size // shards, block, f"shard{i}".encode())


def _make_many(root: Path, files: int) -> None:
    block = os.urandom(64 * 1024)
    for i in range(files):
        _write(root / f"d{i % 20:02d}" / f"f{i:05d}.bin", len(block), block, f"{i}".encode())


def _drop_pages(root: Path) -> None:
    """Evict the files' clean pages, so the next read comes from the disk."""
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _loop_gbps(root: Path, name: str) -> float:
    """The product's read loop with hash ``name``: GB/s over every file of ``root``."""
    view = memoryview(bytearray(CHUNK_BYTES))
    total = 0
    t0 = time.perf_counter()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.new(name)
            with open(p, "rb", buffering=0) as fh:
                while n := fh.readinto(view):
                    h.update(view[:n])
                    total += n
    return total / (time.perf_counter() - t0) / 1e9


def _timed(fn: Callable[[], ArtifactDigest]) -> tuple[ArtifactDigest, float]:
    t0 = time.perf_counter()
    d = fn()
    return d, time.perf_counter() - t0


def _peer(root: Path) -> dict[str, Any] | None:
    exe = shutil.which("sha256sum")
    if exe is None:
        return None
    shard = max((p for p in root.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    best = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run([exe, str(shard)], check=True, capture_output=True)
        best = max(best, shard.stat().st_size / (time.perf_counter() - t0) / 1e9)
    tool = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return {"tool": tool.stdout.splitlines()[0], "file_bytes": shard.stat().st_size, "gbps": best}


def _cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the section (see the module docstring)."""
    base = Path(tempfile.mkdtemp(prefix="vigil-bench-hash-", dir=args.hash_dir))
    try:
        return _run(args, base)
    except OSError as exc:
        raise BenchError(f"hash: {exc}") from exc
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    model, many = base / "model", base / "many"
    t0 = time.perf_counter()
    _make_model(model, int(args.hash_size_gb * GIB))
    _make_many(many, args.hash_many_files)
    out: dict[str, Any] = {
        "sha_ni": "sha_ni" in _cpu_flags(),
        "openssl": ssl.OPENSSL_VERSION,
        "dir": str(base.parent),
        "written_s": round(time.perf_counter() - t0, 1),
        "targets_met": {},
    }
    plain = hash_artifact(model)  # also brings every page into the cache
    out["artifact"] = {"files": plain.files, "size_bytes": plain.size_bytes, "hash": plain.hash}
    gb = plain.size_bytes / 1e9
    out["algorithms_warm_gbps"] = {
        name: round(max(_loop_gbps(model, name) for _ in range(2)), 3)
        for name in ("sha256", "blake2b")
    }
    out["peer"] = _peer(model)
    out["read_size_warm_gbps"] = {}
    for chunk in (64 * 1024, MIB, 4 * MIB):
        best = min(_timed(partial(hash_artifact, model, chunk_bytes=chunk))[1] for _ in range(2))
        out["read_size_warm_gbps"][f"{chunk // 1024} KiB"] = round(gb / best, 3)
    _drop_pages(model)
    cold, cold_s = _timed(lambda: hash_artifact(model))
    if cold.hash != plain.hash:
        raise BenchError("hash: the cold read gave another hash")
    out["cold"] = {"seconds": round(cold_s, 2), "gbps": round(gb / cold_s, 3)}

    conn = open_database(base / "vigil.db")
    try:
        cache = ConnectionHashCache(conn)
        first, first_s = _timed(lambda: hash_artifact(model, cache=cache))
        again = [
            _timed(lambda: hash_artifact(model, cache=cache)) for _ in range(args.hash_repeats)
        ]
        if any(d.hash != plain.hash for d, _ in again):
            raise BenchError("hash: a cached re-check gave another hash")
        (model / "config.json").write_bytes(b'{"architectures": ["Bench2"]}'.ljust(2_000))
        touched, touched_s = _timed(lambda: hash_artifact(model, cache=cache))
        many_first, many_first_s = _timed(lambda: hash_artifact(many, cache=cache))
        many_again = [
            _timed(lambda: hash_artifact(many, cache=cache)) for _ in range(args.hash_repeats)
        ]
    finally:
        conn.close()
    out["cache"] = {
        "first_s": round(first_s, 2),
        "first_hashed_bytes": first.hashed_bytes,
        "recheck_ms": percentiles([s * 1000 for _, s in again], qs=(50,), digits=2),
        "recheck_hashed_bytes": max(d.hashed_bytes for d, _ in again),
        "one_file_rewritten": {
            "ms": round(touched_s * 1000, 2),
            "hashed_bytes": touched.hashed_bytes,
            "cached_files": touched.cached_files,
            "files": touched.files,
        },
        "many_files": {
            "files": many_first.files,
            "size_bytes": many_first.size_bytes,
            "first_s": round(many_first_s, 2),
            "first_cached_files": many_first.cached_files,
            "recheck_ms": percentiles([s * 1000 for _, s in many_again], qs=(50,), digits=2),
            "recheck_hashed_bytes": max(d.hashed_bytes for d, _ in many_again),
            "recheck_us_per_file": round(min(s for _, s in many_again) / many_first.files * 1e6, 1),
        },
    }
    return out


def render(r: dict[str, Any]) -> str:
    """The section's record as text."""
    a, c = r["artifact"], r["cache"]
    peer, many, one = r["peer"], c["many_files"], c["one_file_rewritten"]
    algos = ", ".join(f"{k} {v:.2f} GB/s" for k, v in r["algorithms_warm_gbps"].items())
    sizes = ", ".join(f"{k} {v:.2f}" for k, v in r["read_size_warm_gbps"].items())
    lines = [
        f"artifact: {a['files']} files, {a['size_bytes'] / GIB:.2f} GiB; SHA-NI "
        f"{'yes' if r['sha_ni'] else 'no'}, {r['openssl']}",
        f"warm, 1 MiB reads: {algos}"
        + (f"; {peer['tool']}: {peer['gbps']:.2f} GB/s on one shard" if peer else ""),
        f"hash_artifact warm by read size (GB/s): {sizes}",
        f"cold (pages dropped): {r['cold']['gbps']:.2f} GB/s ({r['cold']['seconds']:.1f} s)",
        f"cached: first {c['first_s']:.1f} s ({c['first_hashed_bytes']} bytes read); unchanged "
        f"re-check p50 {c['recheck_ms']['p50']:.2f} ms, max {c['recheck_ms']['max']:.2f} ms, "
        f"{c['recheck_hashed_bytes']} bytes read",
        f"one small file rewritten: {one['ms']:.2f} ms, {one['hashed_bytes']} bytes read "
        f"({one['cached_files']} of {one['files']} files from the cache)",
        f"{many['files']} files x 64 KiB: first {many['first_s']:.2f} s; re-check p50 "
        f"{many['recheck_ms']['p50']:.1f} ms ({many['recheck_us_per_file']:.1f} us per file, "
        f"{many['recheck_hashed_bytes']} bytes read)",
    ]
    return "\n".join(lines)
