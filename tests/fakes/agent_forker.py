"""Start real agents quickly, many times: ``vigil agent run`` in a forked process.

``python tests/fakes/agent_forker.py`` imports the agent once (aiohttp, psutil, APScheduler,
numpy: most of a second, or several on a loaded machine), then for each ``go CONFIG LOG EXTRA``
line on stdin forks a process that becomes its own session leader, sends its stdout and stderr
to ``LOG`` and runs the real entry point, ``agent.cli.commands.main(["agent", "run", "--config",
CONFIG])``. ``EXTRA`` synthetic samples are added to every resource collection (heavy writes
through the agent's own collect -> writer path) and the writer commits every 100 ms. It prints
``child PID``; once that process is gone (a test kills it), ``reaped PID STATUS``. The parent
starts no thread and opens no database, so nothing is shared across the fork but imported code.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.cli import main as vigil_main
from agent.runtime import daemon
from agent.runtime.daemon import Agent
from storage.records import Sample, make_labels
from storage.writer import Writer


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def add_load(extra: int) -> None:
    """Make every collection carry ``extra`` more samples, and the writer commit every 100 ms
    instead of every second, so a kill lands in the middle of a commit as often as not (in
    this forked child only)."""
    daemon.Writer = functools.partial(Writer, flush_interval_s=0.1)  # type: ignore[misc]
    labels = [make_labels(synthetic=i) for i in range(extra)]
    collect = Agent._collect_sync

    def heavier(self: Agent) -> list[Sample]:
        out = collect(self)
        ts = out[0].ts_ms if out else 0
        out.extend(
            Sample("load.synthetic", lbl, ts, float(i % 100)) for i, lbl in enumerate(labels)
        )
        return out

    Agent._collect_sync = heavier  # type: ignore[method-assign]


def main() -> None:
    for line in sys.stdin:
        words = line.split()
        if len(words) != 4 or words[0] != "go":
            continue
        config, log, extra = words[1], words[2], int(words[3])
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setsid()
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                add_load(extra)
                code = vigil_main(["agent", "run", "--config", config])
            finally:
                os._exit(code)
        say(f"child {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"reaped {pid} {status}")


if __name__ == "__main__":
    main()
