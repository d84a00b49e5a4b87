"""The files a traffic switch writes: an atomic replace, putting a file back, whether a
directory can be written (split from :mod:`agent.deploy.proxy` to keep that module small).

The nginx switch writes its upstream include with these, the command switch the address it
last switched to; both restore what was there when the proxy refuses the change.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old bytes or the new, never half.

    A temporary file in the same directory (so the rename stays on one file system), fsynced,
    renamed over the target, and the directory fsynced so the rename survives a power cut. The
    temporary name starts with a dot and ends in ``.tmp``, so an ``include dir/*.conf`` glob
    never loads it.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def writable_dir(path: Path, *, may_create: bool = False) -> bool:
    """Whether ``path`` is a directory this process may create files in (or, ``may_create``,
    whether it could be created: its parent is such a directory)."""
    target = path.parent if may_create and not path.exists() else path
    return target.is_dir() and os.access(target, os.W_OK | os.X_OK)


def restore_file(path: Path, previous: bytes | None, mode: int = 0o644) -> None:
    """Put ``path`` back as it was: ``previous`` bytes, or no file when there was none."""
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        write_atomic(path, previous, mode)
