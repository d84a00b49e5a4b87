"""The compliance evidence bundle (issue 17): ``vigil audit export --format bundle`` of a real
database (events through the writer, incidents, deployments and versions through storage's
own functions), verified by nothing but the bundle's ``verify_bundle.py``."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import cli
from storage import bundle_verify
from storage.audit import GENESIS
from storage.auditkey import HostKey, load_or_create
from storage.db import open_database
from storage.deployments import Deployment, insert_deployment
from storage.incidents import save_incident
from storage.records import (
    ArtifactKind,
    DeployKind,
    DeployState,
    DeployStrategy,
    Event,
    Incident,
)
from storage.versions import Version, register_version
from storage.writer import Writer
from tests.unit.test_audit_checkpoints import sign_now

T0 = 1_700_000_000_000
DIFF = (
    '--- running\n+++ new\n@@ -1,2 +1,2 @@\n name = "srv"\n'
    '-command = ["srv", "--v1"]\n+command = ["srv", "--v2"]\n'
)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _version(n: int) -> Version:
    return Version(
        id=0,
        model="clf",
        hash=f"sha256:{n:064x}",
        path=f"/models/clf/v{n}",
        kind=ArtifactKind.DIR,
        size_bytes=1000,
        files=2,
        created_ms=T0,
        registered_ms=T0 + n,
    )


def _deployment(**kw: object) -> Deployment:
    fields: dict[str, object] = {
        "id": 0,
        "model": "clf",
        "kind": DeployKind.ARTIFACT,
        "strategy": DeployStrategy.IN_PLACE,
        "state": DeployState.PROMOTED,
        "requested_by": "alice@ops",
        "requested_ms": T0 + 12_000,
        "state_since_ms": T0 + 14_000,
        "finished_ms": T0 + 14_000,
    }
    fields.update(kw)
    return Deployment(**fields)  # type: ignore[arg-type]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """30 events a second apart (a config reload among them), two incidents, two deployments
    with versions, and a checkpoint of the head."""
    data = tmp_path / "data"
    db = data / "vigil.db"
    w = Writer(db, flush_interval_s=0.05)
    w.start()
    try:
        w.submit(
            Event(
                T0 + i * 1000,
                "config.reloaded" if i == 15 else "test.event",
                "agent",
                f"event {i + 1}",
                {"i": i, "note": "ünïcode"},
            )
            for i in range(30)
        )
        assert w.flush()
    finally:
        w.close()
    conn = open_database(db)
    try:
        for iid, opened, resolved in ((1, T0 + 2_000, T0 + 4_000), (2, T0 + 20_000, None)):
            save_incident(
                conn,
                Incident(
                    id=iid,
                    subject="model:clf",
                    kind="down",
                    severity="critical",
                    cause="crashed",
                    state="resolved" if resolved else "open",
                    opened_ms=opened,
                    resolved_ms=resolved,
                    resolved_by="bob" if resolved else None,
                ),
            )
        v1, _ = register_version(conn, _version(1))
        v2, _ = register_version(conn, _version(2))
        insert_deployment(
            conn,
            _deployment(
                from_version_id=v1.id,
                to_version_id=v2.id,
                approval_required=True,
                approved_by="carol@ops",
                approved_ms=T0 + 13_000,
                checks={"verdict": {"outcome": "pass"}, "canaries": [{"ok": True, "e2e_ms": 41}]},
            ),
        )
        insert_deployment(
            conn,
            _deployment(
                kind=DeployKind.CONFIG,
                requested_ms=T0 + 16_000,
                config_diff=DIFF,
                requested_by="config reload (signal)",
            ),
        )
    finally:
        conn.close()
    assert sign_now(data) is not None  # covers event 30
    return data


def export(capsys: pytest.CaptureFixture[str], data: Path, out: Path, *extra: str) -> int:
    argv = ["audit", "export", "--db", str(data / "vigil.db"), "--format", "bundle"]
    code = cli.main([*argv, "-o", str(out), *extra])
    capsys.readouterr()
    return code


def extract(bundle: Path, into: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(into, filter="data")
    (top,) = into.iterdir()
    return top


def refit(top: Path, key: HostKey, **files: str) -> None:
    """Replace files (``events`` is events.jsonl) and re-sign the manifest with ``key``."""
    manifest = json.loads((top / "MANIFEST.json").read_text())
    for key_, text in files.items():
        name = "events.jsonl" if key_ == "events" else key_
        (top / name).write_text(text, encoding="utf-8")
        data = text.encode()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    body = json.dumps(manifest).encode()
    (top / "MANIFEST.json").write_bytes(body)
    (top / "MANIFEST.sig").write_bytes(base64.b64encode(key.sign(body)))


def run_verifier(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The bundle's own script, in a Python that does not see this checkout (-I)."""
    script = (
        where / "verify_bundle.py" if where.is_dir() else where.parent / "x" / "verify_bundle.py"
    )
    return subprocess.run(
        [sys.executable, "-I", str(script), *args],
        cwd=where if where.is_dir() else where.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bundle_from_mid_chain_verifies_offline_and_holds_the_evidence(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "evidence.tar.gz"
    assert export(capsys, data_dir, out, "--from", iso(T0 + 10_000)) == 0
    top = extract(out, tmp_path / "x")
    assert top.name.startswith("vigil-evidence-")
    proc = run_verifier(top)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "events 11..30 form an unbroken chain" in proc.stdout
    assert "1 checkpoints verified" in proc.stdout

    manifest = json.loads((top / "MANIFEST.json").read_text())
    events = [json.loads(line) for line in (top / "events.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(11, 31))
    assert manifest["events"]["prev_hash"] == events[0]["prev_hash"] != GENESIS
    assert {"MANIFEST.json", "MANIFEST.sig"}.isdisjoint(manifest["files"])
    files = {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"MANIFEST.json", "MANIFEST.sig"}
    key = load_or_create(data_dir).public
    assert manifest["key"] == key.fingerprint
    assert (top / "host-key.pub").read_text() == key.pem()
    # Incident 1 was resolved before the range; 2 is open in it.
    incidents = [json.loads(line) for line in (top / "incidents.jsonl").read_text().splitlines()]
    assert [i["id"] for i in incidents] == [2]
    deps = [json.loads(line) for line in (top / "deployments.jsonl").read_text().splitlines()]
    artifact, config = deps
    assert (artifact["approved_by"], artifact["requested_by"]) == ("carol@ops", "alice@ops")
    assert artifact["checks"]["canaries"] == [{"ok": True, "e2e_ms": 41}]
    assert artifact["versions"]["to"]["hash"] == f"sha256:{2:064x}"
    changes = [json.loads(x) for x in (top / "config-changes.jsonl").read_text().splitlines()]
    assert [c.get("kind") or c["source"] for c in changes] == ["config.reloaded", "deployment"]
    assert (top / changes[1]["diff_file"]).read_text() == DIFF
    readme = (top / "README.md").read_text()
    assert "python3 verify_bundle.py" in readme and key.fingerprint in readme
    # The archive itself verifies too, and against the host's key kept apart.
    pub = tmp_path / "host.pub"
    pub.write_text(key.pem())
    proc = subprocess.run(
        [sys.executable, "-I", str(top / "verify_bundle.py"), str(out), "--pubkey", str(pub)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("edit", "BROKEN: event 20: content does not match its hash (edited)"),
        ("drop", "BROKEN: the chain ends at 29, the manifest says 30"),
        ("manifest", "BROKEN: MANIFEST.json is not signed by"),
        ("incident", "BROKEN: incidents.jsonl does not match its sha256 in the manifest"),
        ("other key", "BROKEN: MANIFEST.json is not signed by"),
    ],
)
def test_a_touched_bundle_fails(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: str,
    expected: str,
) -> None:
    out = tmp_path / "evidence.tar.gz"
    assert export(capsys, data_dir, out) == 0
    top = extract(out, tmp_path / "x")
    events = top / "events.jsonl"
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    args: list[str] = []
    if tamper == "edit":
        e = json.loads(lines[19])
        e["data"]["i"] = 99
        lines[19] = json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n"
        events.write_text("".join(lines), encoding="utf-8")
    elif tamper == "drop":
        events.write_text("".join(lines[:-1]), encoding="utf-8")
    elif tamper == "manifest":
        m = top / "MANIFEST.json"
        m.write_text(m.read_text().replace('"count": 30', '"count": 31'))
    elif tamper == "incident":
        (top / "incidents.jsonl").write_text("")
    else:  # a whole bundle re-signed by another key, checked against the host's real one
        forger = load_or_create(tmp_path / "forger")
        e = json.loads(lines[19])
        e["data"]["i"] = 99
        lines[19] = json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n"
        refit(top, forger, events="".join(lines), **{"host-key.pub": forger.public.pem()})
        forged = run_verifier(top)
        assert forged.returncode == 1  # its own checkpoint is not the forger's
        assert f"signed by {forger.public.fingerprint}" in forged.stdout  # not the host's
        pub = tmp_path / "host.pub"
        pub.write_text(load_or_create(data_dir).public.pem())
        args = ["--pubkey", str(pub)]
    proc = run_verifier(top, *args)
    assert proc.returncode == 1, proc.stdout
    assert expected in proc.stdout


def test_a_cut_chain_is_still_exported_but_flagged(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(data_dir / "vigil.db", isolation_level=None)
    conn.execute("DELETE FROM events WHERE seq > 25")
    conn.close()
    out = tmp_path / "evidence.tar.gz"
    code = cli.main(
        [
            "audit",
            "export",
            "--db",
            str(data_dir / "vigil.db"),
            "--format",
            "bundle",
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "the host's chain does not verify: events 26..30 missing: the chain ends at 25" in err
    proc = run_verifier(extract(out, tmp_path / "x"))
    assert proc.returncode == 1
    assert (
        "BROKEN: the host's chain did not verify when this was made: events 26..30" in proc.stdout
    )


def test_bundle_usage_mistakes(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(data_dir / "vigil.db")
    for argv, expected in (
        (["--format", "bundle"], "pass -o FILE"),
        (
            ["--format", "bundle", "-o", str(tmp_path / "b.tgz"), "--from", "last tuesday"],
            "expected a date (2025-03-01)",
        ),
        (
            ["--format", "bundle", "-o", str(tmp_path / "b.tgz"), "--from", "1d", "--to", "3d"],
            "is after --to",
        ),
        (["--from", "30d"], "add --format bundle"),
        (["--format", "bundle", "-o", str(tmp_path / "no" / "b.tgz")], "does not exist"),
    ):
        assert cli.main(["audit", "export", "--db", db, *argv]) == 2, argv
        assert expected in capsys.readouterr().err, argv


def test_a_range_with_no_events_still_verifies(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "evidence.tar.gz"
    assert export(capsys, data_dir, out, "--to", "2001-01-01") == 0
    proc = run_verifier(extract(out, tmp_path / "x"))
    assert proc.returncode == 0 and "no events in the range" in proc.stdout


def test_dates_and_durations_for_the_range() -> None:
    from agent.cli.audit_evidence import parse_when

    now = T0
    assert parse_when("30d", now) == now - 30 * 86_400_000
    assert parse_when("2023-11-14", now) == 1_699_920_000_000
    assert parse_when("2023-11-14", now, end=True) == 1_699_920_000_000 + 86_400_000 - 1
    assert parse_when("2023-11-14T22:13:20", now) == T0
    assert parse_when("2023-11-15T00:13:20+02:00", now) == T0


def test_the_verifier_needs_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(Path(bundle_verify.__file__).read_text(encoding="utf-8"))
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            tops.add(node.module.split(".")[0])
    assert tops - set(sys.stdlib_module_names) == {"cryptography"}
