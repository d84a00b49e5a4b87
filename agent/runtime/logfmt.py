"""One line per event with key=value fields; no timestamps under journald (it adds its own)."""

from __future__ import annotations

import logging
import os
import sys
import time


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=info logger=vigil.agent msg="agent started host=gpu-01 port=8470"``.

    Messages are written by the code as ``"what happened key=value key=value"`` so the line is
    greppable; the formatter adds level and logger and quotes the message.
    """

    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        # Escaped as logfmt quotes values, so a quote inside (an error text, a model's answer)
        # cannot end the field early and a newline cannot forge a second line.
        msg = (
            record.getMessage()
            .replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
        parts = []
        if self.timestamps:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            parts.append(f"ts={stamp}.{int(record.msecs):03d}Z")
        parts.append(f"level={record.levelname.lower()}")
        parts.append(f"logger={record.name}")
        quote = any(c in msg for c in ' ="\\') or not msg
        parts.append(f'msg="{msg}"' if quote else f"msg={msg}")
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "info") -> None:
    """Configure the root logger once for the agent process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    # JOURNAL_STREAM is set by systemd when stderr goes to the journal, which stamps lines.
    handler.setFormatter(LogfmtFormatter(timestamps="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # A run skipped because the previous one of the same probe is still out is expected for a
    # hanging server (its own timeout records it); APScheduler would warn on every skip.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
