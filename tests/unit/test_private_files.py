"""Files the agent writes keep their modes whatever the umask (issue 17).

Each test runs under the umasks an agent meets in the wild: 000 (a container's or a careless
unit's) and 022 (the usual default), set for this test process and restored after. The agent's
own files must come out the same under both: process logs 0640, everything else owner-only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.supervise.proclogs import ProcessLog


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_process_logs_and_their_rotations_are_0640(umask: int, tmp_path: Path) -> None:
    # The rotated copy (NAME.log.1) used to be made by shutil.copyfile with the umask's mode:
    # 0644 under 022, 0666 under 000, the live log being 0640.
    plog = ProcessLog(tmp_path / "logs", "chatty", max_bytes=10, keep=3)
    fd = plog.open_for_child()
    try:
        os.write(fd, b"a line longer than ten bytes\n")
    finally:
        os.close(fd)
    assert plog.rotate_if_needed()
    plog.append("[vigil] a banner longer than ten bytes")
    assert plog.rotate_if_needed()
    names = sorted(p.name for p in plog.path.parent.iterdir())
    assert names == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert {name: mode(plog.path.parent / name) for name in names} == dict.fromkeys(names, 0o640)
    assert (plog.path.parent / "chatty.log.2").read_text() == "a line longer than ten bytes\n"


def test_a_log_file_left_loose_by_an_older_agent_is_tightened(umask: int, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    loose = logs / "old.log"
    loose.write_text("from an older agent, over ten bytes\n")
    os.chmod(loose, 0o666)
    plog = ProcessLog(logs, "old", max_bytes=10, keep=1)
    os.close(plog.open_for_child())
    assert mode(loose) == 0o640
    assert plog.rotate_if_needed()
    assert mode(logs / "old.log.1") == 0o640


def test_the_log_directory_is_not_open_to_other_users(umask: int, tmp_path: Path) -> None:
    plog = ProcessLog(tmp_path / "data" / "logs", "p", max_bytes=10, keep=1)
    plog.append("x")
    assert mode(tmp_path / "data" / "logs") & 0o027 == 0
