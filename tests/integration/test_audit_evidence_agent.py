"""A real agent's audit trail off the host (issue 17): ``vigil agent run`` signs its chain's head
when it stops and sends the line to its syslog socket (a real unix datagram socket bound
here); ``vigil audit export --format bundle`` of its database is verified offline by the
bundle's own ``verify_bundle.py`` alone, and fails once an event or the manifest is touched."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from storage.auditcheckpoint import parse, read_local
from storage.auditkey import read_public
from tests.helpers import child_env, running_agent, vigil_cmd, write_config

pytestmark = pytest.mark.integration


def _verify(bundle_dir: Path) -> subprocess.CompletedProcess[str]:
    # -I: no PYTHONPATH, no current directory on the path: Vigil's modules are not what runs.
    return subprocess.run(
        [sys.executable, "-I", "verify_bundle.py"],
        cwd=bundle_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_stopping_agent_signs_its_head_to_syslog_and_its_bundle_verifies_offline(
    tmp_path: Path,
) -> None:
    sock_path = tmp_path / "log.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(sock_path))
    receiver.settimeout(20)
    try:
        cfg = write_config(
            tmp_path, 'audit_checkpoint_interval = "10m"\n', audit_syslog=str(sock_path)
        )
        with running_agent(cfg) as agent:
            data_dir = agent.data_dir
            assert agent.stop() == 0
        message = receiver.recv(65536).decode()
    finally:
        receiver.close()
    assert " vigil[" in message and "vigil-checkpoint v1 " in message
    key = read_public(data_dir)
    assert key is not None
    got = parse([message], key)
    assert len(got.valid) == 1 and not got.problems
    cp = got.valid[0]
    conn = sqlite3.connect(data_dir / "vigil.db")
    head = conn.execute("SELECT seq, hash, kind FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    conn.close()
    assert (cp.seq, cp.hash, head[2]) == (head[0], head[1], "agent.stopped")
    assert cp.host == "test-host"
    assert read_local(data_dir) == [got.lines[0]]

    out = tmp_path / "evidence.tar.gz"
    proc = subprocess.run(
        vigil_cmd("audit", "export", "--config", str(cfg), "--format", "bundle", "-o", str(out)),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 checkpoints" in proc.stderr
    extracted = tmp_path / "x"
    with tarfile.open(out) as tar:
        tar.extractall(extracted, filter="data")
    (bundle,) = extracted.iterdir()
    ok = _verify(bundle)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"events 1..{cp.seq} form an unbroken chain" in ok.stdout
    assert "1 checkpoints verified" in ok.stdout

    events = bundle / "events.jsonl"
    original = events.read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    first = json.loads(lines[0])
    first["message"] = "agent started (nothing to see)"
    events.write_text(json.dumps(first, sort_keys=True) + "\n" + "".join(lines[1:]))
    bad = _verify(bundle)
    assert bad.returncode == 1
    assert "BROKEN: events.jsonl does not match its sha256" in bad.stdout
    assert "BROKEN: event 1: content does not match its hash (edited)" in bad.stdout

    events.write_text(original, encoding="utf-8")
    manifest = bundle / "MANIFEST.json"
    manifest.write_text(manifest.read_text().replace('"test-host"', '"other-host"'))
    bad = _verify(bundle)
    assert bad.returncode == 1 and "MANIFEST.json is not signed by" in bad.stdout
