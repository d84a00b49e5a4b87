"""Counts of accepted and refused inputs per fuzz target, reported at the end of the run.

With ``VIGIL_FUZZ_COUNTS`` set to a directory (``make fuzz`` does), each test process writes its
counts there after every test, and the terminal summary adds up all of them: with ``-n 2`` the
examples run in two worker processes, and only the controller prints.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.support import COUNTS, PROFILE
from tests.helpers import RunningAgent, running_agent, write_config

_DIR = os.environ.get("VIGIL_FUZZ_COUNTS")


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _DIR and COUNTS:
        path = Path(_DIR) / f"counts-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({t: dict(c) for t, c in COUNTS.items()}), encoding="utf-8")
        tmp.replace(path)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _DIR:
        return
    total: dict[str, Counter[str]] = {}
    for path in sorted(Path(_DIR).glob("counts-*.json")):
        for target, kinds in json.loads(path.read_text(encoding="utf-8")).items():
            total.setdefault(target, Counter()).update(kinds)
    if not total:
        return
    tr = terminalreporter
    tr.section(f"fuzz counts (profile {PROFILE})")
    tr.write_line(f"{'target':<24} {'inputs':>8} {'accepted':>9} {'ratio':>6}  outcomes")
    for target in sorted(total):
        kinds = total[target]
        n = sum(kinds.values())
        accepted = kinds.get("accepted", 0)
        rest = ", ".join(f"{k} {v}" for k, v in kinds.most_common())
        tr.write_line(f"{target:<24} {n:>8} {accepted:>9} {accepted / n:>6.1%}  {rest}")


@pytest.fixture(scope="module")
def agent() -> Iterator[RunningAgent]:
    """A running agent (see the module docs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="vigil-fuzz-api-"))
    sleeper = json.dumps([sys.executable, "-c", "import time; time.sleep(3600)"])
    config = write_config(
        tmp,
        f"""
[[process]]
name = "sleeper"
command = {sleeper}
restart = "never"

[[model]]
name = "m1"
protocol = "tcp"
url = "tcp://127.0.0.1:{closed}"
interval = "1h"
timeout = "1s"

[[notify]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{closed}/hook"
""",
    )
    with running_agent(config) as running:
        yield running
