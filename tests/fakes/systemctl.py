"""A stand-in ``systemctl`` for the supervisor's systemd-unit target.

:func:`install` writes a small ``/bin/sh`` script named ``systemctl`` into a directory meant to
go first on ``PATH``. It records every call (one line of arguments each) and keeps one unit's
state in a file, in ``systemctl show`` format:

- ``show UNIT --property=...`` prints the state;
- ``restart``/``start`` make it active with a new MainPID (a made-up pid, counting up);
- ``stop`` makes it inactive.

A test changes the state behind the supervisor's back (:meth:`FakeSystemctl.set`) to play
systemd: the unit failing, or systemd restarting it itself.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

FIRST_PID = 3_900_000
"""Made-up MainPIDs start here: above any pid a test host hands out (pid_max is 4194304)."""

_SCRIPT = """\
#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
state() {
    printf 'ActiveState=%s\\nSubState=%s\\nMainPID=%s\\nExecMainStatus=%s\\nNRestarts=0\\n' \\
        "$1" "$2" "$3" "$4" > "$dir/state.tmp"
    mv "$dir/state.tmp" "$dir/state"
}
case "$1" in
    show) cat "$dir/state" ;;
    restart|start)
        pid=$(cat "$dir/next_pid")
        echo $((pid + 1)) > "$dir/next_pid"
        state active running "$pid" 0 ;;
    stop) state inactive dead 0 0 ;;
    *) echo "systemctl stand-in: unknown command $1" >&2; exit 1 ;;
esac
"""


@dataclass
class FakeSystemctl:
    """The installed stand-in: its directory (put it first on PATH), calls and state."""

    bin_dir: Path

    def calls(self) -> list[str]:
        """Every call so far, arguments joined by spaces, oldest first."""
        path = self.bin_dir / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def actions(self) -> list[str]:
        """The calls that act (everything but ``show``)."""
        return [c for c in self.calls() if not c.startswith("show ")]

    def set(self, active: str, sub: str, main_pid: int, status: int = 0) -> None:
        """Change the unit's state, as systemd would."""
        tmp = self.bin_dir / "state.tmp"
        tmp.write_text(
            f"ActiveState={active}\nSubState={sub}\nMainPID={main_pid}\n"
            f"ExecMainStatus={status}\nNRestarts=0\n"
        )
        tmp.replace(self.bin_dir / "state")

    def next_pid(self) -> int:
        """The MainPID the next restart will give the unit."""
        return int((self.bin_dir / "next_pid").read_text())


def install(bin_dir: Path, *, active: bool = True) -> FakeSystemctl:
    """Write the stand-in into ``bin_dir``; the unit starts active (MainPID FIRST_PID) or not."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "systemctl"
    script.write_text(_SCRIPT)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    fake = FakeSystemctl(bin_dir)
    (bin_dir / "next_pid").write_text(str(FIRST_PID + 1))
    if active:
        fake.set("active", "running", FIRST_PID)
    else:
        fake.set("inactive", "dead", 0)
    return fake
