"""What the TUI remembers between runs: a small JSON file in the user's XDG state directory.

``$XDG_STATE_HOME/vigil/tui.json`` (``~/.local/state/vigil/tui.json`` when unset; tests point
``XDG_STATE_HOME`` at a temporary directory). Today it holds the fleet view's grouping, per
fleet file, since different fleets carry different labels::

    {"fleet": {"/home/ops/fleet.toml": {"group_by": "region"}}}

Losing it costs a key press, so it is read forgivingly (a missing, unreadable or malformed
file is an empty one) and written atomically (a temporary file renamed over it), and a write
that fails (a read-only home) is given up silently: the grouping still holds for this run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from storage.labels import name_problem

FILE_NAME = "tui.json"


def state_path() -> Path:
    """Where the state file is (which may not exist yet)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vigil" / FILE_NAME


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_group_by(fleet: str) -> str:
    """The grouping remembered for the fleet ``fleet`` (its file's path), ``""`` for none.

    A remembered value that is no label name (an edited file) counts as none.
    """
    entry = _read(state_path()).get("fleet", {})
    entry = entry.get(fleet) if isinstance(entry, dict) else None
    value = entry.get("group_by") if isinstance(entry, dict) else None
    if not isinstance(value, str) or (value and name_problem(value)):
        return ""
    return value


def save_group_by(fleet: str, group_by: str) -> bool:
    """Remember ``group_by`` (``""``: none) for the fleet ``fleet``; False when it could not
    be written."""
    path = state_path()
    data = _read(path)
    fleets = data.get("fleet")
    if not isinstance(fleets, dict):
        fleets = data["fleet"] = {}
    entry = fleets.get(fleet)
    if not isinstance(entry, dict):
        entry = fleets[fleet] = {}
    entry["group_by"] = group_by
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tui-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return False
    return True
