"""The ``current`` symlink an in-place deploy switches: read it, check it, point it elsewhere.

The model server reads its model through the link, so pointing the link at another version and
restarting the server is the whole in-place switch. The switch is atomic: a temporary link is
made beside it and renamed over it (``rename(2)`` replaces the directory entry in one step), so
anyone opening the link sees the old target or the new one, never a missing file. The
directory is fsync-ed so the new target survives a power cut with the deploy record that says
which version it is.

The link is never pointed at a target that does not exist: a deploy checks its artifact first
and a rollback checks the version it goes back to (:func:`switch_link` refuses otherwise).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["LinkError", "read_link", "switch_link"]


class LinkError(Exception):
    """The link cannot be read or switched; the message names the path and why."""


def read_link(link: Path) -> Path | None:
    """Where ``link`` points now (absolute), or None when it does not exist yet.

    Raises:
        LinkError: the path exists but is no symlink (a real file or directory a deploy must not
            replace), or cannot be read.
    """
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if link.exists() or link.is_symlink():
            raise LinkError(
                f"{link} is not a symlink (a deploy switches a symlink to the version it "
                f"serves; move the file or directory there to a version directory and let "
                f"the link point at it)"
            ) from None
        raise LinkError(f"cannot read the link {link}: {exc.strerror or exc}") from None
    path = Path(target)
    return path if path.is_absolute() else (link.parent / path)


def switch_link(link: Path, target: Path) -> Path | None:
    """Point ``link`` at ``target`` atomically; returns the previous target (None: none).

    Raises:
        LinkError: ``target`` does not exist, ``link`` is not a symlink, or the directory
            cannot be written.
    """
    if not target.is_absolute():
        raise LinkError(f"the link's target must be an absolute path, got {target}")
    if not target.exists():
        raise LinkError(f"will not point {link} at {target}: it does not exist")
    previous = read_link(link)
    if not link.parent.is_dir():
        raise LinkError(f"the directory of the link {link} does not exist")
    tmp = link.with_name(f".{link.name}.vigil-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by an agent killed between the two steps below
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LinkError(f"cannot switch {link} to {target}: {exc.strerror or exc}") from None
    _fsync_dir(link.parent)
    return previous


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; a filesystem that cannot fsync a directory is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
