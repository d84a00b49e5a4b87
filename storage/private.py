"""Files and directories the agent writes, with the modes it means, whatever the umask.

What the agent keeps in its data dir (events, log tails, server error bodies, tokens) is no
other local user's business, yet a mode passed to ``open(2)`` or ``mkdir(2)`` is only an upper
bound: the umask clears bits from it and never adds any, and ``shutil.copyfile`` or
``Path.write_text`` ignore the intended mode altogether (they create with 0666 & ~umask). The
helpers here create with the mode and then set it exactly (``fchmod``), so a file comes out the
same under umask 000 as under 077, and one left loose by an older agent is tightened when the
agent next opens it.

Process logs are 0640 rather than 0600: the service installer gives the operators' group the
data dir (0750) to read logs; every other file is owner-only.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
LOG_FILE_MODE = 0o640
LOG_DIR_MODE = 0o750
PRIVATE_UMASK = 0o077


class _Umask:
    inherited = -1
    """The umask the process had before :func:`restrict_umask`; -1 while it was never called."""


def restrict_umask() -> int:
    """Make every file the process creates from now on owner-only (umask 077); the old umask.

    The explicit modes of this module cover the files the agent knows it writes; the umask
    covers those it does not (SQLite's, a library's). Children get the old one back
    (:func:`child_umask`).
    """
    old = os.umask(PRIVATE_UMASK)
    if _Umask.inherited == -1:
        _Umask.inherited = old
    return old


def child_umask() -> int:
    """The umask for a child process: the one the agent was started with, so a model server's
    own files (caches, sockets, outputs shared with other users) are as its operator expects;
    -1 (leave it) when :func:`restrict_umask` was never called. ``Popen(umask=...)``."""
    return _Umask.inherited


def make_dir(path: Path, mode: int = DIR_MODE) -> Path:
    """Create ``path`` with ``mode``, and any missing parents owner-only.

    An existing directory is left as it is: it may be one the operator chose and shares (the
    installer makes the data dir 0750 for the operators' group); :func:`tighten` it where the
    directory is the agent's own. (``Path.mkdir(parents=True)`` would give the parents the
    umask's mode.)
    """
    missing: list[Path] = []
    p = path
    while not p.is_dir() and p.parent != p:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        want = mode if d == path else DIR_MODE
        try:
            d.mkdir(want)
        except FileExistsError:
            continue  # made by someone else in between
        os.chmod(d, want)
    return path


def open_fd(path: Path, flags: int, mode: int = FILE_MODE) -> int:
    """``os.open(path, flags | O_CREAT, mode)``, then the mode set exactly, so neither the
    umask nor an older, looser file decides it.

    ``O_NOFOLLOW``: a symbolic link in the file's place (planted in a directory an older agent
    left open to others) is refused, not written through; the agent may run as root.
    """
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        _fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fchmod(fd: int, mode: int) -> None:
    # A file owned by another user (an agent that ran as root before) can be written by us but
    # not chmod-ed: writing it matters more than its mode.
    with contextlib.suppress(PermissionError):
        if os.fstat(fd).st_mode & 0o7777 != mode:
            os.fchmod(fd, mode)


def tighten(path: Path, mode: int = FILE_MODE) -> None:
    """Clear the bits of an existing file's or directory's mode that ``mode`` does not grant
    (none is added: an owner who made a file read-only keeps it so); a no-op when the path is
    missing or not ours."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        current = path.stat().st_mode & 0o7777
        if current & ~mode:
            os.chmod(path, current & mode)


def copy_file(src: Path, dst: Path, mode: int = FILE_MODE) -> None:
    """Copy ``src`` over ``dst`` with ``mode`` (``shutil.copyfile`` would use the umask's), in
    the kernel (``sendfile``) as ``shutil.copyfile`` does: a log may be many megabytes.

    Raises:
        OSError: the copy failed (a full disk); ``dst`` may hold part of it.
    """
    with open(src, "rb") as fin:
        fd = open_fd(dst, os.O_WRONLY | os.O_TRUNC, mode)
        try:
            while os.sendfile(fd, fin.fileno(), None, 1 << 30):
                pass
        finally:
            os.close(fd)


def write_atomic(
    path: Path, data: bytes, mode: int = FILE_MODE, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path`` with ``data`` all at once, or not at all.

    Written to ``NAME.tmp``, flushed to disk, then renamed over ``path``: a full disk or a crash
    leaves the old file whole. On a failure the temporary file is removed, so a full disk does
    not leave an empty ``NAME.tmp`` behind either. The temporary file is created afresh
    (``O_EXCL | O_NOFOLLOW``): a link planted in its place is never followed.

    Args:
        owner: ``(uid, gid)`` to give the file before it takes ``path``'s place (root writing
            a file another user's agent reads, as ``vigil token`` does); None leaves it ours.

    Raises:
        OSError: the write failed (ENOSPC, EROFS, ...); ``path`` is unchanged.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # one a crash left behind
        fd = open_fd(tmp, os.O_WRONLY | os.O_EXCL, mode)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def prepare_sqlite(path: Path) -> None:
    """Create a SQLite database file owner-only before SQLite opens it, and tighten one an older
    agent left loose.

    SQLite creates a database with 0644 whatever the umask allows, and its ``-wal`` and
    ``-shm`` files with the database's own mode; so the database's mode decides all three.
    """
    make_dir(path.parent)
    if path.exists():
        tighten(path)  # through a link: an operator may keep the database on another disk
    else:
        os.close(open_fd(path, os.O_RDWR))
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(path.with_name(path.name + suffix))
