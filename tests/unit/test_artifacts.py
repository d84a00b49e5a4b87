"""Unit tests for artifact hashing (agent.deploy.artifacts): real files in temporary
directories, the hash cache on a real SQLite database, and changes made mid-hash through the
per-chunk hook (deterministic: no sleeps)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.deploy.artifacts import (
    MANIFEST_HEADER,
    ArtifactChanged,
    ArtifactError,
    FileDigest,
    HashStopped,
    digest_artifact,
    hash_artifact,
    manifest_bytes,
)
from agent.deploy.hashcache import ConnectionHashCache, WriterHashCache
from storage.db import open_database
from storage.records import ArtifactKind
from storage.writer import Writer

CHUNK = 4096


def later() -> int:
    """A clock 10 s ahead: files just written are past the racy window, so they are cached."""
    return time.time_ns() + 10_000_000_000


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tree(root: Path, files: dict[str, bytes], order: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in order or list(files):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[name])
    return root


MODEL = {
    "config.json": b'{"layers": 2}',
    "tokenizer/vocab.txt": b"a\nb\nc\n",
    "weights.bin": bytes(range(256)) * 50,  # several 4 KiB chunks
    "z/deep/er.txt": b"",
}


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ConnectionHashCache]:
    conn = open_database(tmp_path / "vigil.db")
    yield ConnectionHashCache(conn)
    conn.close()


# --- the hash itself --------------------------------------------------------------------------


def test_file_hash_is_hashlibs_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 17)
    f = tmp_path / "model.onnx"
    f.write_bytes(data)
    for chunk in (CHUNK, 1 << 20):
        d = hash_artifact(f, chunk_bytes=chunk)
        assert d.hash == sha(data)
        assert (d.kind, d.size_bytes, d.files, d.hashed_bytes) == (
            ArtifactKind.FILE,
            len(data),
            1,
            len(data),
        )
        assert d.path == str(f) and d.entries[0].relpath == "model.onnx"
        assert d.created_ms == f.stat().st_mtime_ns // 1_000_000


def test_directory_hash_is_the_manifests_hash_and_ignores_creation_order(tmp_path: Path) -> None:
    a = hash_artifact(make_tree(tmp_path / "a", MODEL), chunk_bytes=CHUNK)
    b = hash_artifact(make_tree(tmp_path / "b", MODEL, order=sorted(MODEL, reverse=True)))
    assert a.hash == b.hash and a.kind == ArtifactKind.DIR
    assert (a.files, a.size_bytes) == (4, sum(len(v) for v in MODEL.values()))
    assert [e.relpath for e in a.entries] == sorted(MODEL)
    # The manifest, spelled out: anyone can recompute it.
    manifest = MANIFEST_HEADER + b"".join(
        b"%s\0%d\0%s\n"
        % (name.encode(), len(MODEL[name]), hashlib.sha256(MODEL[name]).hexdigest().encode())
        for name in sorted(MODEL)
    )
    assert manifest_bytes(a.entries) == manifest
    assert a.hash == sha(manifest)
    newest = max((tmp_path / "a" / n).stat().st_mtime_ns for n in MODEL)
    assert a.created_ms == newest // 1_000_000
    # An empty sub-directory holds no content: same version.
    (tmp_path / "b" / "empty").mkdir()
    assert hash_artifact(tmp_path / "b").hash == a.hash


@pytest.mark.parametrize(
    "change",
    ["one byte", "rename", "add", "remove", "move into a folder", "empty file added"],
)
def test_directory_hash_changes_with_any_content_name_or_file_set(
    tmp_path: Path, change: str
) -> None:
    base = hash_artifact(make_tree(tmp_path / "a", MODEL)).hash
    files = dict(MODEL)
    if change == "one byte":
        w = bytearray(files["weights.bin"])
        w[5000] ^= 1
        files["weights.bin"] = bytes(w)
    elif change == "rename":
        files["config2.json"] = files.pop("config.json")
    elif change == "add":
        files["extra.txt"] = b"x"
    elif change == "remove":
        del files["tokenizer/vocab.txt"]
    elif change == "move into a folder":
        files["cfg/config.json"] = files.pop("config.json")
    else:
        files["EMPTY"] = b""
    assert hash_artifact(make_tree(tmp_path / "b", files)).hash != base


def test_manifest_is_unambiguous_for_odd_names() -> None:
    one = [FileDigest("a\n0\0", 1, sha(b"x"), 0, False)]
    two = [FileDigest("a", 1, sha(b"x"), 0, False)]
    assert manifest_bytes(one) != manifest_bytes(two)
    # Byte order, not locale order.
    entries = [FileDigest(n, 0, sha(b""), 0, False) for n in ("b", "B", "a/x", "a.x")]
    body = manifest_bytes(entries)[len(MANIFEST_HEADER) :]
    assert [line.split(b"\0")[0] for line in body.splitlines()] == [b"B", b"a.x", b"a/x", b"b"]


# --- the cache --------------------------------------------------------------------------------


def test_cache_hit_reads_nothing_and_a_touched_file_alone_is_read_again(
    tmp_path: Path, cache: ConnectionHashCache
) -> None:
    root = make_tree(tmp_path / "m", MODEL)
    first = hash_artifact(root, cache=cache, clock_ns=later)
    assert first.hashed_bytes == first.size_bytes and first.cached_files == 0
    second = hash_artifact(root, cache=cache, clock_ns=later)
    assert second.hash == first.hash
    assert (second.hashed_bytes, second.cached_files) == (0, 4)
    (root / "tokenizer" / "vocab.txt").write_bytes(b"a\nb\nc\nd\n")
    third = hash_artifact(root, cache=cache, clock_ns=later)
    assert third.hashed_bytes == 8 and third.cached_files == 3
    assert third.hash != first.hash
    assert third.hash == hash_artifact(root).hash  # the cache never changes the answer


def test_cache_key_catches_a_replaced_file_and_a_reset_mtime(
    tmp_path: Path, cache: ConnectionHashCache
) -> None:
    root = make_tree(tmp_path / "m", MODEL)
    w = root / "weights.bin"
    hash_artifact(root, cache=cache, clock_ns=later)
    old = w.stat()
    # Same size and mtime, new inode (a copy renamed over it): read again.
    new = root / "weights.new"
    new.write_bytes(MODEL["weights.bin"][::-1])
    os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))
    new.replace(w)
    d = hash_artifact(root, cache=cache, clock_ns=later)
    assert d.hashed_bytes == old.st_size and d.hash == hash_artifact(root).hash
    # Same inode, size and mtime (rewritten in place, mtime set back as rsync -t does): only
    # ctime tells, so rewrite until the file system's clock has ticked past the last change.
    before = w.stat()
    while True:
        w.write_bytes(MODEL["weights.bin"])
        os.utime(w, ns=(before.st_atime_ns, before.st_mtime_ns))
        if w.stat().st_ctime_ns != before.st_ctime_ns:
            break
    assert (w.stat().st_ino, w.stat().st_size) == (before.st_ino, before.st_size)
    d = hash_artifact(root, cache=cache, clock_ns=later)
    assert d.hashed_bytes == before.st_size and d.hash == hash_artifact(root).hash


def test_a_file_changed_moments_ago_is_not_cached(
    tmp_path: Path, cache: ConnectionHashCache
) -> None:
    root = make_tree(tmp_path / "m", MODEL)
    newest = max(max(p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in root.rglob("*"))

    def soon() -> int:  # 1 s after the last change: a write now could share its timestamp
        return newest + 1_000_000_000

    hash_artifact(root, cache=cache, clock_ns=soon)
    again = hash_artifact(root, cache=cache, clock_ns=soon)
    assert again.hashed_bytes == sum(len(v) for v in MODEL.values())
    assert cache.lookup([str(root / "config.json")]) == {}


def test_symlinked_files_are_cached_by_their_target(
    tmp_path: Path, cache: ConnectionHashCache
) -> None:
    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    blob.write_bytes(b"w" * 10_000)
    for snap in ("s1", "s2"):
        (tmp_path / snap).mkdir()
        (tmp_path / snap / "model.bin").symlink_to(blob)
    assert hash_artifact(tmp_path / "s1", cache=cache, clock_ns=later).hashed_bytes == 10_000
    # Another snapshot linking the same blob: nothing to read.
    assert hash_artifact(tmp_path / "s2", cache=cache, clock_ns=later).hashed_bytes == 0


async def test_writer_cache_reads_anywhere_and_writes_through_the_writer(tmp_path: Path) -> None:
    w = Writer(tmp_path / "vigil.db", flush_interval_s=0.01)
    w.start()
    try:
        root = make_tree(tmp_path / "m", MODEL)
        cache = WriterHashCache(w)
        first = await asyncio.to_thread(hash_artifact, root, cache=cache, clock_ns=later)
        assert first.hashed_bytes > 0
        assert await asyncio.to_thread(w.flush)
        again = await asyncio.to_thread(hash_artifact, root, cache=cache, clock_ns=later)
        assert (again.hash, again.hashed_bytes) == (first.hash, 0)
    finally:
        w.close()


# --- changes while hashing --------------------------------------------------------------------


def test_a_file_growing_while_hashed_is_artifact_changed(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * (3 * CHUNK))

    def grow(path: str, done: int) -> None:
        if done == CHUNK:
            with open(path, "ab") as fh:
                fh.write(b"more")

    with pytest.raises(ArtifactChanged, match=r"changed while it was read") as caught:
        hash_artifact(f, chunk_bytes=CHUNK, on_chunk=grow)
    assert caught.value.path == str(f) and str(f) in str(caught.value)


def test_directory_files_changing_while_hashed(tmp_path: Path, cache: ConnectionHashCache) -> None:
    root = make_tree(tmp_path / "m", MODEL)
    first = root / "config.json"  # read first (byte order)

    def act(what: str) -> Callable[[str, int], None]:
        def hook(path: str, done: int) -> None:
            if path != str(first):
                return
            if what == "add":
                (root / "late.txt").write_bytes(b"x")
            elif what == "remove":
                (root / "weights.bin").unlink()
            elif what == "grow":
                with open(root / "weights.bin", "ab") as fh:
                    fh.write(b"x")

        return hook

    with pytest.raises(ArtifactChanged, match="added while the artifact was hashed") as c1:
        hash_artifact(root, on_chunk=act("add"))
    assert c1.value.path == str(root / "late.txt")
    (root / "late.txt").unlink()
    with pytest.raises(ArtifactChanged, match="disappeared") as c2:
        hash_artifact(root, on_chunk=act("remove"))
    assert c2.value.path == str(root / "weights.bin")
    (root / "weights.bin").write_bytes(MODEL["weights.bin"])
    with pytest.raises(ArtifactChanged, match="between listing and reading") as c3:
        hash_artifact(root, cache=cache, on_chunk=act("grow"), clock_ns=later)
    assert c3.value.path == str(root / "weights.bin")
    # What was read before the failure was kept: config.json and the vocabulary (read before
    # weights.bin, in byte order) are not read again.
    (root / "weights.bin").write_bytes(MODEL["weights.bin"])
    d = hash_artifact(root, cache=cache, clock_ns=later)
    kept = len(MODEL["config.json"]) + len(MODEL["tokenizer/vocab.txt"])
    assert d.cached_files == 2 and d.hashed_bytes == d.size_bytes - kept


def test_stop_ends_hashing_at_the_next_chunk(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * (10 * CHUNK))
    stop = threading.Event()
    seen: list[int] = []

    def hook(path: str, done: int) -> None:
        seen.append(done)
        stop.set()

    with pytest.raises(HashStopped):
        hash_artifact(f, chunk_bytes=CHUNK, on_chunk=hook, stop=stop)
    assert seen == [CHUNK]


async def test_digest_runs_off_the_loop_and_cancelling_stops_the_thread(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * (64 * CHUNK))
    assert (await digest_artifact(f, chunk_bytes=CHUNK)).hash == sha(f.read_bytes())
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()
    chunks: list[int] = []

    def hook(path: str, done: int) -> None:
        chunks.append(done)
        if len(chunks) == 1:
            loop.call_soon_threadsafe(started.set)
            release.wait(10)

    task = asyncio.create_task(digest_artifact(f, chunk_bytes=CHUNK, on_chunk=hook))
    await started.wait()  # the loop runs while the thread hashes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await loop.shutdown_default_executor()  # returns once the hashing thread has ended
    assert chunks == [CHUNK]


# --- bad artifacts ----------------------------------------------------------------------------


def test_missing_artifact_names_the_path_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="No such file or directory") as caught:
        hash_artifact(tmp_path / "nope")
    assert caught.value.path == str(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(caught.value)


def test_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "e" / "sub").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="holds no files"):
        hash_artifact(tmp_path / "e")


def as_nobody(targets: list[Path]) -> list[str]:
    """Hash each target in a forked child that runs as nobody (root reads anything, so this is
    how a test run as root sees a permission error); one line per target comes back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on, only os._exit
        code = 0
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            lines = []
            for t in targets:
                try:
                    hash_artifact(t)
                    lines.append(f"hashed {t}")
                except ArtifactError as exc:
                    lines.append(f"refused {exc.path} | {exc.reason}")
            os.write(w, "\n".join(lines).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        out = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return out.splitlines()


def test_unreadable_file_and_folder_name_the_path_and_the_reason() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # nobody may enter it, not read what is made unreadable in it
        art = Path(tmp) / "model"
        art.mkdir()
        (art / "ok.bin").write_bytes(b"x")
        secret = art / "weights.bin"
        secret.write_bytes(b"y")
        secret.chmod(0)
        closed = Path(tmp) / "closed"
        make_tree(closed / "inner", {"a": b"1"})
        (closed / "inner").chmod(0)
        try:
            lines = as_nobody([secret, art, closed])
        finally:
            (closed / "inner").chmod(0o755)
        assert lines == [
            f"refused {secret} | Permission denied",
            f"refused {secret} | Permission denied",
            f"refused {closed / 'inner'} | Permission denied",
        ]


def test_symlinks_files_followed_folders_and_broken_ones_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(MODEL["weights.bin"])
    linked = make_tree(tmp_path / "linked", {k: v for k, v in MODEL.items() if k != "weights.bin"})
    (linked / "weights.bin").symlink_to(outside)
    plain = make_tree(tmp_path / "plain", MODEL)
    assert hash_artifact(linked).hash == hash_artifact(plain).hash
    # The artifact itself through a link (a `current` symlink): resolved.
    (tmp_path / "current").symlink_to(plain)
    via = hash_artifact(tmp_path / "current")
    assert via.path == str(plain) and via.hash == hash_artifact(plain).hash

    (linked / "loop").symlink_to(linked)
    with pytest.raises(ArtifactError, match="symlink to a directory") as caught:
        hash_artifact(linked)
    assert caught.value.path == str(linked / "loop")
    (linked / "loop").unlink()
    (linked / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(ArtifactError, match="broken symlink"):
        hash_artifact(linked)


def test_fifos_and_sockets_are_refused_without_being_opened(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "m", MODEL)
    os.mkfifo(root / "pipe")
    with pytest.raises(ArtifactError, match=r"is a FIFO \(named pipe\)") as caught:
        hash_artifact(root)  # would block forever if it opened the FIFO
    assert caught.value.path == str(root / "pipe")
    with pytest.raises(ArtifactError, match="expected a regular file or a directory"):
        hash_artifact(root / "pipe")
    (root / "pipe").unlink()
    (root / "link-to-pipe").symlink_to(tmp_path / "p2")
    os.mkfifo(tmp_path / "p2")
    with pytest.raises(ArtifactError, match="links to a FIFO"):
        hash_artifact(root)
    (root / "link-to-pipe").unlink()
    short = Path(tempfile.mkdtemp(dir="/tmp"))  # AF_UNIX paths must be short
    try:
        sock_dir = make_tree(short / "m", {"a": b"1"})
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(sock_dir / "s"))
            assert stat.S_ISSOCK((sock_dir / "s").stat().st_mode)
            with pytest.raises(ArtifactError, match="is a socket"):
                hash_artifact(sock_dir)
    finally:
        for p in sorted(short.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        short.rmdir()
