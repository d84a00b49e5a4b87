"""Captured output of supervised processes: one append-only file each, rotated by size.

The child writes straight into its log file (opened ``O_APPEND``), never through a pipe to the
agent: a pipe would kill the model server with SIGPIPE the moment the agent stops, and the
point of adoption is that an agent restart costs the model nothing. Rotation is therefore
``copytruncate``, as logrotate does it for programs that cannot reopen their log: the file is
copied to ``NAME.log.1`` and truncated in place; the child's next ``O_APPEND`` write lands at
the new end. Lines written between the copy and the truncate are lost; at the sizes involved
that window is a few milliseconds.

Every file here is 0640 and the directory 0750, whatever the agent's umask
(:mod:`storage.private`): a server's output can hold prompts and credentials, and a rotated copy
made with the umask's mode was readable by every local user.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from storage import private

TAIL_MAX_LINES = 10_000
_TAIL_BLOCK = 64 * 1024


class ProcessLog:
    """The log file of one supervised process and its rotated predecessors."""

    def __init__(self, log_dir: Path, name: str, max_bytes: int, keep: int) -> None:
        self.path = log_dir / f"{name}.log"
        self.max_bytes = max_bytes
        self.keep = keep

    def _open(self) -> int:
        log_dir = self.path.parent
        private.make_dir(log_dir, private.LOG_DIR_MODE)
        private.tighten(log_dir, private.LOG_DIR_MODE)  # one an older agent left 0755
        return private.open_fd(self.path, os.O_WRONLY | os.O_APPEND, private.LOG_FILE_MODE)

    def open_for_child(self) -> int:
        """A descriptor the child inherits as stdout and stderr (the caller closes ours)."""
        # O_CLOEXEC does not stop the child getting it: it is dup2-ed onto stdout and stderr.
        return self._open()

    def append(self, text: str) -> None:
        """A line of the agent's own (a remediation command's banner, say) into the log."""
        with open(self._open(), "a", encoding="utf-8", errors="replace") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def over_size(self) -> bool:
        """Whether the file is over its size (one stat(): cheap enough for the event loop)."""
        try:
            return self.path.stat().st_size > self.max_bytes
        except FileNotFoundError:
            return False

    def rotate_if_needed(self) -> bool:
        """Rotate when the file is over its size; True when it did. Blocking: call in a thread."""
        if not self.over_size():
            return False
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                newer = self.path.with_name(f"{self.path.name}.{i + 1}")
                older.replace(newer)
                private.tighten(newer, private.LOG_FILE_MODE)  # rotated by an older agent
        if self.keep == 0:
            self._truncate()
            return True
        # The copy is made under a temporary name and renamed once the live file is
        # truncated: NAME.log.1 never holds half a copy, and a full disk that stops the copy
        # leaves the live log as it was (rotation is retried), not truncated.
        tmp = self.path.with_name(f"{self.path.name}.1.tmp")
        try:
            private.copy_file(self.path, tmp, private.LOG_FILE_MODE)
            self._truncate()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.path.with_name(f"{self.path.name}.1"))
        return True

    def _truncate(self) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(0)

    def tail(self, lines: int) -> list[str]:
        """The last ``lines`` lines, reaching into the rotated file when the live one is short."""
        lines = max(0, min(lines, TAIL_MAX_LINES))
        if lines == 0:
            return []
        out: deque[str] = deque(maxlen=lines)
        for path in (self.path.with_name(f"{self.path.name}.1"), self.path):
            for line in _last_lines(path, lines):
                out.append(line)
        return list(out)


def _last_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a file, reading backwards in blocks (logs can be large)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; the with block would nest deeply
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    text = data.decode("utf-8", errors="replace")
    parts = text.splitlines()
    return parts[-n:]
