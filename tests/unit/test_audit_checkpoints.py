"""Signed checkpoints of the audit chain (issue 17): the host key, the checkpoint lines, the
agent's job sending them to a syslog socket and a webhook, and ``vigil audit verify
--checkpoint`` finding a tail cut off after a checkpoint, or rewritten."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent import cli
from agent.config import AgentConfig, ConfigError, load_config
from agent.runtime.checkpoints import Checkpoints
from storage.audit import verify_chain
from storage.auditcheckpoint import CHECKPOINTS_FILENAME, parse, read_local
from storage.auditkey import KEY_FILENAME, PUBKEY_FILENAME, load_or_create, read_public
from storage.db import connect
from storage.records import Event
from storage.writer import Writer
from tests.helpers import ROOT, child_env

T0 = 1_700_000_000_000


def write_events(db: Path, n: int, *, start: int = 0, tag: str = "") -> None:
    w = Writer(db, flush_interval_s=0.05)
    w.start()
    try:
        w.submit(
            Event(T0 + start + i, "test.event", "agent", f"event {start + i}{tag}", {"i": i})
            for i in range(n)
        )
        assert w.flush()
    finally:
        w.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def db(data_dir: Path) -> Path:
    return data_dir / "vigil.db"


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A real syslog receiver: a unix datagram socket, standing in for /dev/log."""
    path = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield path, sock
    finally:
        sock.close()


def settings(data_dir: Path, **kw: object) -> AgentConfig:
    base: dict[str, object] = {"host": "node-1", "data_dir": data_dir, "audit_syslog": ""}
    base.update(kw)
    return AgentConfig(**base)  # type: ignore[arg-type]


def sign_now(data_dir: Path, **kw: object) -> str | None:
    job = Checkpoints(data_dir, lambda: settings(data_dir, **kw))

    async def go() -> str | None:
        try:
            return await job.run(settings(data_dir, **kw))
        finally:
            await job.close()

    return asyncio.run(go())


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- the host key ------------------------------------------------------------------------------


def test_the_key_is_made_once_owner_only_and_its_public_half_exported(
    data_dir: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_events(db, 1)
    old = os.umask(0)
    try:
        key = load_or_create(data_dir)
    finally:
        os.umask(old)
    assert stat.S_IMODE((data_dir / KEY_FILENAME).stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / PUBKEY_FILENAME).stat().st_mode) == 0o640
    assert load_or_create(data_dir).public == key.public  # not made again
    assert read_public(data_dir) == key.public
    code, out, err = run_cli(capsys, "audit", "pubkey", "--db", str(db))
    assert code == 0
    assert out.startswith("-----BEGIN PUBLIC KEY-----") and out == key.public.pem()
    assert key.public.fingerprint in err and key.public.fingerprint.startswith("ed25519:")
    assert key.public.verify(key.sign(b"x"), b"x") and not key.public.verify(key.sign(b"x"), b"y")


def test_pubkey_with_no_database_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "audit", "pubkey", "--db", str(tmp_path / "none.db"))
    assert code == 2 and "no database at" in err


# --- checkpoint lines --------------------------------------------------------------------------


def test_a_checkpoint_line_verifies_and_a_changed_or_foreign_one_does_not(
    data_dir: Path, db: Path, tmp_path: Path
) -> None:
    write_events(db, 3)
    line = sign_now(data_dir)
    assert line is not None and line.startswith("vigil-checkpoint v1 ")
    key = load_or_create(data_dir).public
    # From journalctl output, with its prefix; the same line twice counts once.
    journal = [f"Mar 01 12:00:00 node-1 vigil[42]: {line}", "unrelated", f"x {line}"]
    got = parse(journal, key)
    assert [(c.seq, c.host) for c in got.valid] == [(3, "node-1")] and not got.problems
    _, _, payload, sig = line.split(" ")
    body = json.loads(base64.b64decode(payload))
    body["seq"] = 2  # a forger's claim
    forged = base64.b64encode(json.dumps(body, sort_keys=True).encode()).decode()
    got = parse([f"vigil-checkpoint v1 {forged} {sig}"], key)
    assert not got.valid and "does not verify" in got.problems[0]
    other = load_or_create(tmp_path / "other-host").public
    got = parse([line], other)
    assert not got.valid and not got.problems and got.other_keys == {key.fingerprint: 1}
    assert read_local(data_dir) == [line]  # the agent's own copy
    assert stat.S_IMODE((data_dir / CHECKPOINTS_FILENAME).stat().st_mode) == 0o600


def test_an_unmoved_head_is_not_signed_again(data_dir: Path, db: Path) -> None:
    write_events(db, 2)
    assert sign_now(data_dir) is not None
    assert sign_now(data_dir) is None  # a new job reads the last one from its own copy
    write_events(db, 1, start=2)
    assert sign_now(data_dir) is not None
    assert len(read_local(data_dir)) == 2


# --- where checkpoints go ----------------------------------------------------------------------


def test_the_checkpoint_reaches_the_syslog_socket(
    data_dir: Path, db: Path, syslog_socket: tuple[str, socket.socket]
) -> None:
    path, sock = syslog_socket
    write_events(db, 5)
    line = sign_now(data_dir, audit_syslog=path)
    msg = sock.recv(65536).decode()
    # glibc syslog(3)'s datagram: <daemon.notice>timestamp ident[pid]: message
    assert msg.startswith("<29>") and f" vigil[{os.getpid()}]: {line}" in msg
    got = parse([msg], load_or_create(data_dir).public)
    assert [c.seq for c in got.valid] == [5]


def test_a_missing_syslog_socket_costs_the_line_there_only(
    data_dir: Path, db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_events(db, 1)
    line = sign_now(data_dir, audit_syslog=str(tmp_path / "no-such.sock"))
    assert line is not None and read_local(data_dir) == [line]
    assert "audit checkpoint not sent to syslog" in caplog.text


class _Receiver(BaseHTTPRequestHandler):
    answers: list[int]
    bodies: list[dict[str, str]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.bodies.append(body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_webhook_gets_each_checkpoint_and_a_failed_one_later(data_dir: Path, db: Path) -> None:
    handler = type("H", (_Receiver,), {"answers": [503], "bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook?token=s3cret"
    try:
        write_events(db, 2)
        job = Checkpoints(data_dir, lambda: settings(data_dir))

        async def turns() -> list[str | None]:
            a = settings(data_dir, audit_webhook=url)
            first = await job.run(a)  # answered 503: kept
            write_events(db, 1, start=2)
            second = await job.run(a)  # both sent, oldest first
            await job.close()
            return [first, second]

        first, second = asyncio.run(turns())
    finally:
        server.shutdown()
        server.server_close()
    assert [b["line"] for b in handler.bodies] == [first, second]
    assert {b["format"] for b in handler.bodies} == {"vigil-checkpoint/1"}


def test_checkpoint_settings_are_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "v.toml"
    for body, field, expected in (
        ('audit_checkpoint_interval = "1s"', "audit_checkpoint_interval", "at least 10s"),
        ('audit_webhook = "ftp://x/y?token=z"', "audit_webhook", "http:// or https://"),
        ('audit_syslog = "dev/log"', "audit_syslog", "absolute path"),
    ):
        cfg.write_text(f"[agent]\n{body}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as exc:
            load_config(cfg)
        assert field in str(exc.value) and expected in str(exc.value)
        assert "token=z" not in str(exc.value)
    cfg.write_text(
        '[agent]\naudit_checkpoint_interval = "1m"\naudit_syslog = ""\n'
        'audit_webhook = "https://audit.example/in"\n',
        encoding="utf-8",
    )
    a = load_config(cfg).agent
    assert (a.audit_checkpoint_interval_s, a.audit_syslog, a.audit_webhook) == (
        60.0,
        "",
        "https://audit.example/in",
    )
    assert AgentConfig(host="h", data_dir=tmp_path).audit_syslog == "/dev/log"


# --- vigil audit verify --checkpoint ------------------------------------------------------------


def _truncate(db: Path, after: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DELETE FROM events WHERE seq > ?", (after,))
    finally:
        conn.close()


@pytest.fixture
def checkpointed(data_dir: Path, db: Path, tmp_path: Path) -> tuple[Path, Path]:
    """57 events, a checkpoint of them as journalctl prints it, and the public key apart."""
    write_events(db, 57)
    line = sign_now(data_dir)
    journal = tmp_path / "journal.txt"
    journal.write_text(f"Mar 01 12:00:00 node-1 vigil[42]: {line}\nother line\n", encoding="utf-8")
    pub = tmp_path / "host.pub"
    pub.write_text(load_or_create(data_dir).public.pem(), encoding="ascii")
    return journal, pub


def test_verify_holds_an_intact_chain_against_its_checkpoint(
    db: Path, checkpointed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    journal, pub = checkpointed
    code, out, _ = run_cli(
        capsys,
        "audit",
        "verify",
        "--db",
        str(db),
        "--checkpoint",
        str(journal),
        "--pubkey",
        str(pub),
    )
    assert code == 0, out
    assert "audit chain ok: 57 events" in out and "covers 57: matches" in out


def test_a_tail_cut_off_after_a_checkpoint_is_named(
    db: Path, tmp_path: Path, checkpointed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    journal, pub = checkpointed
    _truncate(db, 40)
    conn = connect(db, readonly=True)
    assert verify_chain(conn).ok  # what the chain alone cannot see
    conn.close()
    code, out, _ = run_cli(
        capsys,
        "audit",
        "verify",
        "--db",
        str(db),
        "--checkpoint",
        str(journal),
        "--pubkey",
        str(pub),
    )
    assert code == 1
    assert "FAILED: events 41..57 missing: the chain ends at 40, checkpoint of " in out
    assert " covers 57\n" in out
    assert out.rstrip().endswith("FAILED against its checkpoints: 1 of 1 checkpoints do not hold")
    # The same against an export of the cut chain.
    export = tmp_path / "audit.jsonl"
    assert run_cli(capsys, "audit", "export", "--db", str(db), "-o", str(export))[0] == 0
    code, out, _ = run_cli(
        capsys, "audit", "verify", "--jsonl", str(export), "--checkpoint", str(journal),
        "--pubkey", str(pub),
    )  # fmt: skip
    assert code == 1 and "events 41..57 missing: the chain ends at 40" in out


def test_a_tail_rewritten_after_a_checkpoint_is_found(
    db: Path, checkpointed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    journal, pub = checkpointed
    _truncate(db, 40)
    write_events(db, 20, start=40, tag=" (rewritten)")  # a valid chain again, to seq 60
    code, out, _ = run_cli(
        capsys,
        "audit",
        "verify",
        "--db",
        str(db),
        "--checkpoint",
        str(journal),
        "--pubkey",
        str(pub),
    )
    assert code == 1
    assert "audit chain ok: 60 events" in out
    assert "FAILED: event 57 differs from the checkpoint of " in out


def test_an_edit_is_still_found_with_checkpoints(
    db: Path, checkpointed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    journal, pub = checkpointed
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE events SET message = 'nothing happened' WHERE seq = 12")
    conn.close()
    code, out, _ = run_cli(
        capsys,
        "audit",
        "verify",
        "--db",
        str(db),
        "--checkpoint",
        str(journal),
        "--pubkey",
        str(pub),
    )
    assert code == 1 and "BROKEN at event 12: content does not match its hash (edited)" in out


def test_checkpoint_input_mistakes_are_usage_errors(
    db: Path, tmp_path: Path, checkpointed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    journal, pub = checkpointed
    empty = tmp_path / "empty.txt"
    empty.write_text("no checkpoints here\n", encoding="utf-8")
    code, _, err = run_cli(
        capsys, "audit", "verify", "--db", str(db), "--checkpoint", str(empty), "--pubkey", str(pub)
    )
    assert code == 2 and "no checkpoint signed by ed25519:" in err
    code, _, err = run_cli(
        capsys, "audit", "verify", "--db", str(db), "--checkpoint", str(journal),
        "--pubkey", str(journal),
    )  # fmt: skip
    assert code == 2 and "--pubkey" in err and "not a PEM key" in err
    code, _, err = run_cli(
        capsys, "audit", "verify", "--db", str(db), "--checkpoint", str(tmp_path / "missing")
    )
    assert code == 2 and "cannot read it" in err
    # Without --pubkey: the host's own key, said so.
    code, out, _ = run_cli(capsys, "audit", "verify", "--db", str(db), "--checkpoint", str(journal))
    assert code == 0 and "pass --pubkey with a copy kept elsewhere" in out


def test_the_agent_loads_cryptography_only_to_sign() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, agent.runtime.daemon, agent.cli.commands; "
            "print(json.dumps([m for m in sys.modules if m.startswith(('cryptography', 'stor'))]))",
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    unwanted = {
        "cryptography",
        "storage.auditkey",
        "storage.auditcheckpoint",
        "storage.auditbundle",
    }
    assert not loaded & unwanted


def test_an_unmoved_head_is_signed_again_after_a_day(
    data_dir: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.runtime.checkpoints as job_module

    write_events(db, 2)
    assert sign_now(data_dir) is not None
    later = job_module.now_ms() + job_module.HEARTBEAT_MS + 1
    monkeypatch.setattr(job_module, "now_ms", lambda: later)
    line = sign_now(data_dir)
    assert line is not None
    cps = parse(read_local(data_dir), load_or_create(data_dir).public).valid
    assert [c.seq for c in cps] == [2, 2] and cps[1].ts_ms == later


def test_a_reload_keeps_the_checkpoint_timer(data_dir: Path) -> None:
    calls: list[float] = []

    class Sched:
        def every(self, job_id: str, interval_s: float, fn: object, **kw: float) -> None:
            calls.append(interval_s)

    job = Checkpoints(data_dir, lambda: settings(data_dir))
    sched: Any = Sched()
    job.schedule(sched, settings(data_dir))
    job.schedule(sched, settings(data_dir))  # a reload that leaves the interval alone
    job.schedule(sched, settings(data_dir, audit_checkpoint_interval_s=60.0))
    assert calls == [300.0, 60.0]


def test_checkpoints_of_events_removed_by_retention_are_not_held_against_the_chain() -> None:
    from storage.auditcheckpoint import Checkpoint, check

    def cp(seq: int, hash_: str) -> Checkpoint:
        return Checkpoint("h", seq, hash_, T0, T0, 0, "0" * 64, "ed25519:x")

    hashes = {11: "b" * 64, 12: "c" * 64}
    found = check(
        [cp(5, "x" * 64), cp(10, "a" * 64), cp(10, "d" * 64), cp(12, "c" * 64), cp(13, "e" * 64)],
        head_seq=12,
        anchor=(10, "a" * 64),
        hash_at=hashes.get,
    )
    assert [f.ok for f in found] == [True, True, False, True, False]
    assert "since removed by retention (events 1..10); not checked" in found[0].text
    assert "event 10 differs from the checkpoint" in found[2].text
    assert found[4].text.startswith("event 13 missing: the chain ends at 12, checkpoint of ")
