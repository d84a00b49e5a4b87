"""The content hash of a versioned artifact: one file, or a directory of weights, tokenizer and
config. A version of a model *is* its hash (``sha256:<hex>``), so the same bytes are the same
version wherever they are copied, and a changed byte is a new one.

Why SHA-256: it is the digest the rest of the ecosystem already prints for these files (OCI image
layers, the Hugging Face Hub's LFS ``oid``, ``sha256sum`` in a pipeline) and the one Vigil's
audit chain uses, so an operator can check a version against any of them; and on this class of
CPU it is also the fastest choice, not a trade: OpenSSL's SHA-256 runs on the SHA-NI
instructions, and bench/rollout.py measured it at about twice ``hashlib.blake2b``'s speed over
the same reads (1.3 against 0.7 GB/s on one core, bench/RESULTS.md, "Rollouts"). Where a CPU
lacks SHA-NI (Intel before Ice Lake) BLAKE2b would be faster, a cost paid once per changed file
given the cache, and not worth a digest nobody else prints. A file is read in
:data:`CHUNK_BYTES` pieces into one reused buffer; hashlib and the reads release the GIL, so a
hash running in a thread (:func:`digest_artifact`) leaves the event loop free.

A directory hashes as a manifest (:func:`manifest_bytes`): its files in byte order of their
relative paths, each with its size and SHA-256, then the SHA-256 of that text. So the hash does
not depend on the order files were created or listed in, and renaming, adding or removing a file
changes it as surely as changing a byte. Empty sub-directories carry no content and are not in
it.

Symlinks inside a directory are followed to regular files: the Hugging Face cache lays a model's
snapshot out as exactly that (each file a link into ``blobs/``), and what a model server loads
through a link is the target's bytes, which is what is hashed, under the link's name. A link to a
directory is refused (it can loop, or pull a whole other tree into the version), and so is a
broken one. FIFOs, sockets and devices are refused without being opened (reading a FIFO would
block, a device has no stable content). The artifact path itself may be a symlink (a ``current``
link): it is resolved, and the digest names the real path.

The per-file cache (``storage.hashcache``) is keyed by the absolute path, size, mtime, inode and
ctime, so a 100 GB directory is re-read only where a file changed (``hashed_bytes`` says how much
was read). A file whose mtime or ctime is within :data:`RACY_WINDOW_NS` of the moment it was
hashed is not cached: a write in the same timestamp tick as the one before the read would leave
size and times unchanged (git's "racily clean" entries); such a file is simply read again next
time.

A file that changes while it is read (its size or mtime differ before and after, or a different
number of bytes came back than its size) raises :class:`ArtifactChanged` naming it, and so does a
directory whose files were added, removed or changed while it was hashed. A missing, unreadable
or unsupported artifact raises :class:`ArtifactError` naming the path and the OS's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from storage.hashcache import CachedHash
from storage.records import ArtifactKind

HASH_NAME = "sha256"
CHUNK_BYTES = 1 << 20
"""Read size: from 256 KiB to 8 MiB the speed is the hash's own, within noise of each other
(1 MiB had the best median); 64 KiB loses 10-20 % to per-read overhead (bench/RESULTS.md)."""
RACY_WINDOW_NS = 2_000_000_000
"""A file modified this close to its hashing is not cached (covers 1-2 s mtime granularity)."""
MANIFEST_HEADER = b"vigil-artifact-manifest v1\n"

OnChunk = Callable[[str, int], None]
"""Called after each chunk read with the file's path and its bytes read so far (tests use it to
change a file mid-read; a progress display could too)."""


class ArtifactError(Exception):
    """An artifact that cannot be hashed: missing, unreadable, or not a file or directory.

    ``path`` is the file or directory at fault (inside a directory artifact: that file).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"artifact {path}: {reason}")
        self.path = path
        self.reason = reason


class ArtifactChanged(ArtifactError):
    """The artifact changed while it was hashed: its hash would describe no real content."""


class HashStopped(ArtifactError):
    """Hashing was stopped before it finished (the caller was cancelled)."""


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One file of an artifact: its path relative to the artifact (``/``-separated; a file
    artifact's own name), size, ``sha256:<hex>``, mtime, and whether the hash came from the
    cache."""

    relpath: str
    size_bytes: int
    hash: str
    mtime_ns: int
    cached: bool


@dataclass(frozen=True, slots=True)
class ArtifactDigest:
    """An artifact's identity and shape.

    ``path`` is absolute with symlinks resolved; ``hash`` is ``sha256:<hex>`` of the file, or of
    the directory's manifest; ``created_ms`` the newest mtime among its files; ``hashed_bytes``
    how many bytes were actually read (0 when every file came from the cache).
    """

    path: str
    kind: ArtifactKind
    hash: str
    size_bytes: int
    files: int
    created_ms: int
    hashed_bytes: int
    entries: tuple[FileDigest, ...]

    @property
    def cached_files(self) -> int:
        """How many files' hashes came from the cache."""
        return sum(1 for e in self.entries if e.cached)


class HashCache(Protocol):
    """Where known file hashes are kept (``agent.deploy.hashcache`` has the SQLite ones)."""

    def lookup(self, paths: Sequence[str]) -> Mapping[str, CachedHash]:
        """The cached rows of these absolute paths."""
        ...

    def store(self, entries: Sequence[CachedHash]) -> None:
        """Remember these rows (losing them costs only a re-read)."""
        ...


@dataclass(frozen=True, slots=True)
class _Found:
    """A file found by the scan: where to read it, and the stat it had then."""

    relpath: str
    real: str
    """The absolute path to open (a symlink's target, resolved): the cache's key."""
    size_bytes: int
    mtime_ns: int
    inode: int
    ctime_ns: int


def hash_artifact(
    path: str | os.PathLike[str],
    *,
    cache: HashCache | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    on_chunk: OnChunk | None = None,
    stop: threading.Event | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    racy_window_ns: int = RACY_WINDOW_NS,
) -> ArtifactDigest:
    """Hash a file or a directory (blocking: call it in a thread, or use :func:`digest_artifact`).

    Args:
        path: the artifact; a symlink to it is resolved.
        cache: known file hashes to reuse, and where new ones are stored.
        chunk_bytes: read size.
        on_chunk: called after each chunk read (see :data:`OnChunk`).
        stop: when set, hashing ends at the next chunk with :class:`HashStopped`.
        clock_ns: wall clock, for the racy window.
        racy_window_ns: files modified this close to their hashing are not cached.

    Raises:
        ArtifactError: missing, unreadable, empty directory, or not a file or directory.
        ArtifactChanged: it changed while hashed.
        HashStopped: ``stop`` was set.
    """
    given = os.fspath(path)
    top = os.path.abspath(given)
    st = _stat(top, follow=True)
    real = os.path.realpath(top)
    if stat.S_ISREG(st.st_mode):
        kind = ArtifactKind.FILE
        found = [_found(os.path.basename(real), real, st)]
    elif stat.S_ISDIR(st.st_mode):
        kind = ArtifactKind.DIR
        found = _scan(real)
        if not found:
            raise ArtifactError(real, "the directory holds no files; expected a model artifact")
    else:
        raise ArtifactError(real, f"is {_what(st.st_mode)}; expected a regular file or a directory")

    known = cache.lookup(sorted({f.real for f in found})) if cache is not None else {}
    fresh: list[CachedHash] = []
    entries: list[FileDigest] = []
    read_total = 0
    try:
        for f in found:
            row = known.get(f.real)
            if row is not None and row.matches(f.size_bytes, f.mtime_ns, f.inode, f.ctime_ns):
                entries.append(FileDigest(f.relpath, f.size_bytes, row.hash, f.mtime_ns, True))
                continue
            digest, after = _hash_file(f, chunk_bytes, on_chunk, stop)
            read_total += f.size_bytes
            entries.append(FileDigest(f.relpath, f.size_bytes, digest, f.mtime_ns, False))
            now_ns = clock_ns()
            if now_ns - max(after.st_mtime_ns, after.st_ctime_ns) > racy_window_ns:
                fresh.append(
                    CachedHash(
                        path=f.real,
                        size_bytes=after.st_size,
                        mtime_ns=after.st_mtime_ns,
                        inode=after.st_ino,
                        ctime_ns=after.st_ctime_ns,
                        hash=digest,
                        hashed_ms=now_ns // 1_000_000,
                    )
                )
    finally:
        # Each row stands on its own: what was read before a failure need not be read again.
        if cache is not None and fresh:
            cache.store(fresh)

    if kind is ArtifactKind.DIR:
        if read_total:
            # Reading took a while: scan again. (When every hash came from the cache, the one
            # scan was the whole check, and a second would only double a re-check's cost.)
            _check_unchanged(real, found)
        content_hash = f"{HASH_NAME}:" + hashlib.sha256(manifest_bytes(entries)).hexdigest()
    else:
        content_hash = entries[0].hash
    return ArtifactDigest(
        path=real,
        kind=kind,
        hash=content_hash,
        size_bytes=sum(e.size_bytes for e in entries),
        files=len(entries),
        created_ms=max(e.mtime_ns for e in entries) // 1_000_000,
        hashed_bytes=read_total,
        entries=tuple(entries),
    )


async def digest_artifact(
    path: str | os.PathLike[str],
    *,
    cache: HashCache | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    on_chunk: OnChunk | None = None,
) -> ArtifactDigest:
    """:func:`hash_artifact` in a worker thread, so the event loop keeps running; cancelling
    the caller stops the thread at its next chunk (an agent shutting down does not wait for a
    100 GB read to finish)."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(
            hash_artifact,
            path,
            cache=cache,
            chunk_bytes=chunk_bytes,
            on_chunk=on_chunk,
            stop=stop,
        )
    except asyncio.CancelledError:
        stop.set()
        raise


def manifest_bytes(entries: Sequence[FileDigest]) -> bytes:
    """The text a directory's hash is the SHA-256 of.

    A header line, then one record per file in byte order of the relative path (UTF-8, or the
    file system's bytes): ``<relpath> NUL <size in decimal> NUL <sha256 hex> LF``. A path can
    hold a newline but never a NUL, so the text reads back unambiguously.
    """
    parts = [MANIFEST_HEADER]
    for e in sorted(entries, key=lambda e: os.fsencode(e.relpath)):
        hexdigest = e.hash.partition(":")[2]
        parts.append(b"%s\0%d\0%s\n" % (os.fsencode(e.relpath), e.size_bytes, hexdigest.encode()))
    return b"".join(parts)


def _hash_file(
    f: _Found, chunk_bytes: int, on_chunk: OnChunk | None, stop: threading.Event | None
) -> tuple[str, os.stat_result]:
    """Read one file through; its SHA-256 and its stat after the read."""
    try:
        # O_NOFOLLOW: the scan saw a regular file here (or resolved the link to it); a symlink
        # put in its place since is a change, not something to follow.
        fd = os.open(f.real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ArtifactChanged(
            f.real, "the file disappeared while the artifact was hashed"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ArtifactChanged(
                f.real, "the file was replaced by a symlink while hashed"
            ) from None
        raise ArtifactError(f.real, exc.strerror or str(exc)) from None
    h = hashlib.sha256()
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    got = 0
    with os.fdopen(fd, "rb", buffering=0) as fh:
        before = os.fstat(fd)
        if (before.st_size, before.st_mtime_ns, before.st_ino) != (
            f.size_bytes,
            f.mtime_ns,
            f.inode,
        ):
            raise ArtifactChanged(f.real, "the file changed between listing and reading it")
        with contextlib.suppress(OSError, AttributeError):  # advice only
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        try:
            while n := fh.readinto(view):
                h.update(view[:n])
                got += n
                if on_chunk is not None:
                    on_chunk(f.real, got)
                if stop is not None and stop.is_set():
                    raise HashStopped(f.real, "hashing was stopped")
        except OSError as exc:
            raise ArtifactError(f.real, exc.strerror or str(exc)) from None
        after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or got != (
        before.st_size
    ):
        raise ArtifactChanged(
            f.real,
            f"the file changed while it was read (size {before.st_size} -> {after.st_size} "
            f"bytes, {got} read; mtime {before.st_mtime_ns} -> {after.st_mtime_ns} ns)",
        )
    return f"{HASH_NAME}:{h.hexdigest()}", after


def _scan(root: str) -> list[_Found]:
    """Every file under ``root`` (symlinks to files resolved), in manifest order."""
    found: list[_Found] = []
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            raise ArtifactError(folder, exc.strerror or str(exc)) from None
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            try:
                if entry.is_symlink():
                    found.append(_link(rel, entry.path))
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                raise ArtifactChanged(entry.path, "removed while the artifact was listed") from None
            except OSError as exc:
                raise ArtifactError(entry.path, exc.strerror or str(exc)) from None
            if stat.S_ISDIR(st.st_mode):
                pending.append((f"{rel}/", entry.path))
            elif stat.S_ISREG(st.st_mode):
                found.append(_found(rel, entry.path, st))
            else:
                raise ArtifactError(
                    entry.path, f"is {_what(st.st_mode)}; an artifact holds only regular files"
                )
    found.sort(key=lambda f: os.fsencode(f.relpath))
    return found


def _link(rel: str, link: str) -> _Found:
    try:
        st = os.stat(link)
    except FileNotFoundError:
        raise ArtifactError(link, f"is a broken symlink (to {os.readlink(link)!r})") from None
    except OSError as exc:
        raise ArtifactError(link, f"symlink target: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ArtifactError(
            link,
            "is a symlink to a directory; links are followed only to files (a directory link "
            "can loop or pull another tree in): copy the directory or link its files",
        )
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(link, f"links to {_what(st.st_mode)}; expected a regular file")
    return _found(rel, os.path.realpath(link), st)


def _found(rel: str, real: str, st: os.stat_result) -> _Found:
    return _Found(rel, real, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _check_unchanged(root: str, before: list[_Found]) -> None:
    """Scan again: a file added, removed or changed meanwhile makes the manifest a fiction."""
    try:
        after = {f.relpath: f for f in _scan(root)}
    except ArtifactChanged:
        raise
    except ArtifactError as exc:
        raise ArtifactChanged(
            exc.path, f"changed while the artifact was hashed ({exc.reason})"
        ) from None
    old = {f.relpath: f for f in before}
    for rel in sorted(old.keys() | after.keys(), key=os.fsencode):
        a, b = old.get(rel), after.get(rel)
        if a is None:
            raise ArtifactChanged(os.path.join(root, rel), "added while the artifact was hashed")
        if b is None:
            raise ArtifactChanged(os.path.join(root, rel), "removed while the artifact was hashed")
        if (a.real, a.size_bytes, a.mtime_ns, a.inode) != (
            b.real,
            b.size_bytes,
            b.mtime_ns,
            b.inode,
        ):
            raise ArtifactChanged(os.path.join(root, rel), "changed while the artifact was hashed")


def _stat(path: str, *, follow: bool) -> os.stat_result:
    try:
        return os.stat(path, follow_symlinks=follow)
    except OSError as exc:
        raise ArtifactError(path, exc.strerror or str(exc)) from None


def _what(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file or directory"
