"""``supervisor.json``: what the next agent needs to adopt the children this one started.

Children run in their own session and survive the agent; each one's pid, start time and
command line are kept here, so the next agent adopts it instead of starting a second copy (the
start time guards against a reused pid, the command line against a changed config).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import private

__all__ = ["RECORDS_FILE", "ProcessRecord", "read_records", "write_records"]

RECORDS_FILE = "supervisor.json"


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """One running child, as the agent that started it left it.

    Attributes:
        pid: Its pid (and process group: children lead their own session).
        create_time: Its start time (seconds since the epoch, as psutil reads it), or None
            when an older file did not say.
        argv: The command line it was started with; None when the file did not say.
        restarts: Its restart count, which survives the agent's restart with the process.
        saved_ms: When the record was written (UTC epoch ms).
    """

    pid: int
    create_time: float | None
    argv: tuple[str, ...] | None
    restarts: int | None = None
    saved_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``supervisor.json``."""
        return {
            "pid": self.pid,
            "create_time": self.create_time,
            "argv": None if self.argv is None else list(self.argv),
            "restarts": self.restarts,
            "saved_ms": self.saved_ms,
        }

    @classmethod
    def from_json(cls, data: object) -> ProcessRecord | None:
        """Read one entry leniently: None when it names no pid (nothing to adopt or stop);
        fields of the wrong type read as unknown."""
        if not isinstance(data, Mapping):
            return None
        pid = data.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            return None
        created = data.get("create_time")
        argv = data.get("argv")
        restarts = data.get("restarts")
        saved = data.get("saved_ms")
        return cls(
            pid=pid,
            create_time=float(created)
            if isinstance(created, int | float) and not isinstance(created, bool)
            else None,
            argv=tuple(argv)
            if isinstance(argv, list) and all(isinstance(a, str) for a in argv)
            else None,
            restarts=restarts if isinstance(restarts, int) else None,
            saved_ms=saved if isinstance(saved, int) else None,
        )


def read_records(path: Path) -> dict[str, ProcessRecord]:
    """Process name -> record; an absent, unreadable or malformed file is no records."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for name, entry in data.items():
        record = ProcessRecord.from_json(entry)
        if record is not None:
            out[str(name)] = record
    return out


def write_records(path: Path, records: Mapping[str, ProcessRecord]) -> None:
    """Write the records atomically, owner-only (:func:`storage.private.write_atomic`): on a
    full disk the previous file stays whole and no temporary file is left behind.

    Raises:
        OSError: the directory or the file cannot be written (a full disk).
    """
    data = {name: r.to_json() for name, r in records.items()}
    private.make_dir(path.parent)
    private.write_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))
    # Agents before issue 17 wrote through supervisor.tmp and could leave it empty on a full
    # disk; gone with the first save that works.
    path.with_suffix(".tmp").unlink(missing_ok=True)
