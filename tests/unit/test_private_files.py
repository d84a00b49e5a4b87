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

from agent.runtime.apiserver import publish
from agent.serve.tokens import load_or_create
from agent.supervise.adoption import ProcessRecord, write_records
from agent.supervise.proclogs import ProcessLog
from storage.records import Sample
from storage.writer import Writer


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


def test_the_database_and_its_wal_and_shm_are_owner_only(umask: int, tmp_path: Path) -> None:
    # SQLite creates a database 0644 whatever the umask allows, and -wal/-shm with the
    # database's mode; the writer creates the file 0600 first. No restrict_umask() here: the
    # explicit modes hold on their own (an agent run in-process, a library caller).
    data = tmp_path / "state" / "data"
    writer = Writer(data / "vigil.db", flush_interval_s=0.05)
    writer.start()
    try:
        writer.submit([Sample("cpu", (), 1_700_000_000_000, 1.0)])
        assert writer.flush()
        names = ["vigil.db", "vigil.db-wal", "vigil.db-shm"]
        assert {n: mode(data / n) for n in names} == dict.fromkeys(names, 0o600)
        assert mode(data) == mode(data.parent) == 0o700
    finally:
        writer.close()


def test_a_database_left_loose_is_tightened(umask: int, tmp_path: Path) -> None:
    db = tmp_path / "vigil.db"
    first = Writer(db)
    first.start()
    try:
        first.submit([Sample("cpu", (), 1_700_000_000_000, 1.0)])
        assert first.flush()
        loose = [db, tmp_path / "vigil.db-wal", tmp_path / "vigil.db-shm"]
        for path in loose:
            os.chmod(path, 0o644)  # as an agent before issue 17 left them under umask 022
        second = Writer(db)
        second.start()
        second.close()
        assert {p.name: mode(p) for p in loose} == {p.name: 0o600 for p in loose}
    finally:
        first.close()


def test_tokens_records_and_the_data_dir_are_owner_only(umask: int, tmp_path: Path) -> None:
    data = tmp_path / "data"
    load_or_create(data)
    write_records(data / "supervisor.json", {"p": ProcessRecord(1, 1.0, ("x",))})
    assert mode(data) == 0o700
    assert {p.name: mode(p) for p in data.iterdir()} == dict.fromkeys(
        ["api-token", "api-token.read", "supervisor.json"], 0o600
    )


def test_api_json_is_owner_only(umask: int, tmp_path: Path) -> None:
    # Written with Path.write_text: 0666 under umask 000, 0644 under 022.
    publish(tmp_path, "http://127.0.0.1:1", 1)
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {"api.json": 0o600}
