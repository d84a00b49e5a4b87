"""The audit trail held against what was kept off the host: ``vigil audit verify --checkpoint``,
``vigil audit pubkey`` and ``vigil audit export --format bundle``.

``cryptography`` (the agent extra) is imported only by these commands, through
:mod:`storage.auditkey`.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.auditcheckpoint import Finding, Parsed
    from storage.auditkey import PublicKey

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class Usage(Exception):
    """A command-line mistake: the message says what was wrong and what was expected."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- keys and checkpoint files ------------------------------------------------------------------


def public_key(path: Path | None, data_dir: Path | None) -> tuple[PublicKey, str]:
    """The key to verify with: ``--pubkey FILE``, else the host's own in ``data_dir``; and
    where it came from, in words.

    Raises:
        Usage: no key, or not one.
    """
    from storage.auditkey import HostKeyError, load_public_pem, read_public

    try:
        if path is not None:
            try:
                text = path.read_bytes()
            except OSError as exc:
                raise Usage(f"--pubkey {path}: cannot read it: {exc.strerror or exc}") from None
            return load_public_pem(text, f"--pubkey {path}"), str(path)
        key = read_public(data_dir) if data_dir is not None else None
    except HostKeyError as exc:
        raise Usage(str(exc)) from None
    if key is None:
        raise Usage(
            "no key to verify checkpoints with: pass --pubkey FILE (the host's public key, "
            "from `vigil audit pubkey`)"
        )
    return key, f"the host's own key in {data_dir} (pass --pubkey with a copy kept elsewhere)"


def read_checkpoints(paths: Iterable[Path], key: PublicKey) -> Parsed:
    """The checkpoints in the files, verified against ``key``.

    Raises:
        Usage: a file cannot be read, or holds no checkpoint by this key.
    """
    from storage.auditcheckpoint import Parsed, parse

    merged = Parsed([], [], [], {})
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                got = parse(f, key)
        except OSError as exc:
            raise Usage(f"--checkpoint {path}: cannot read it: {exc.strerror or exc}") from None
        merged.problems.extend(f"{path}: {p}" for p in got.problems)
        for fp, n in got.other_keys.items():
            merged.other_keys[fp] = merged.other_keys.get(fp, 0) + n
        merged.valid.extend(got.valid)
        merged.lines.extend(got.lines)
    if not merged.valid and not merged.problems:
        others = sum(merged.other_keys.values())
        also = f" ({others} signed by other keys)" if others else ""
        raise Usage(
            f"no checkpoint signed by {key.fingerprint} in {', '.join(map(str, paths))}{also}; "
            "expected lines with 'vigil-checkpoint v1 ...' (journalctl -t vigil | "
            "grep vigil-checkpoint)"
        )
    return merged


def report_findings(parsed: Parsed, findings: list[Finding], key: PublicKey, where: str) -> bool:
    """Print what the checkpoints say about the chain; True when all hold."""
    print(f"checkpoints: {len(parsed.valid)} signed by {key.fingerprint} ({where})")
    for fp, n in sorted(parsed.other_keys.items()):
        print(f"  {n} signed by another key ({fp}): skipped")
    for problem in parsed.problems:
        print(f"  FORGED OR UNREADABLE: {problem}")
    bad = [f for f in findings if not f.ok]
    for f in bad:
        print(f"  FAILED: {f.text}")
    good = [f for f in findings if f.ok]
    if good:
        newest = max(good, key=lambda f: (f.checkpoint.seq, f.checkpoint.ts_ms))
        print(f"  {len(good)} hold; the furthest: {newest.text}")
    if bad or parsed.problems:
        what = f"{len(bad)} of {len(findings)} checkpoints do not hold" if bad else ""
        forged = f"{len(parsed.problems)} lines forged or unreadable" if parsed.problems else ""
        print(
            f"audit trail FAILED against its checkpoints: {', '.join(filter(None, (what, forged)))}"
        )
        return False
    return True


# --- vigil audit verify --checkpoint ----------------------------------------------------------


def verify_db(conn: sqlite3.Connection, parsed: Parsed) -> list[Finding]:
    """Hold the checkpoints against a database's chain."""
    from storage.audit import GENESIS, read_anchor
    from storage.auditcheckpoint import check

    head = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    anchor = read_anchor(conn) or (0, GENESIS)

    def hash_at(seq: int) -> str | None:
        row = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    return check(parsed.valid, head_seq=int(head or anchor[0]), anchor=anchor, hash_at=hash_at)


def verify_export_file(path: Path, parsed: Parsed) -> list[Finding]:
    """Hold the checkpoints against an export (a second pass over the file: the chain was
    walked by the first)."""
    from storage.audit import GENESIS
    from storage.auditcheckpoint import check

    wanted = {cp.seq for cp in parsed.valid}
    hashes: dict[int, str] = {}
    head = 0
    with open(path, encoding="utf-8") as f:
        header = json.loads(next(f))
        a = header.get("anchor") or {}
        anchor = (int(a.get("seq", 0)), str(a.get("hash", GENESIS)))
        head = anchor[0]
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            head = max(head, int(e["seq"]))
            if e["seq"] in wanted:
                hashes[e["seq"]] = str(e["hash"])
    return check(parsed.valid, head_seq=head, anchor=anchor, hash_at=hashes.get)


# --- vigil audit pubkey -----------------------------------------------------------------------


def pubkey(data_dir: Path, out: Path | None) -> int:
    """Print (or write) the host's public key, making the key pair if there is none yet."""
    from storage.auditkey import HostKeyError, load_or_create, read_public

    try:
        key = read_public(data_dir) or load_or_create(data_dir).public
    except (HostKeyError, OSError) as exc:
        print(f"vigil: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return EXIT_USAGE
    pem = key.pem()
    if out is None:
        sys.stdout.write(pem)
    else:
        out.write_text(pem, encoding="ascii")
    print(f"host key {key.fingerprint}", file=sys.stderr)
    return EXIT_OK


# --- vigil audit export --format bundle --------------------------------------------------------


def parse_when(text: str, now_ms: int, *, end: bool = False) -> int:
    """``--from``/``--to``: a duration back from now (``30d``), an ISO date (``2025-03-01``:
    its start, or with ``end`` its last millisecond) or date and time (UTC unless it names
    a zone).

    Raises:
        ValueError: naming what was expected.
    """
    from storage.units import parse_duration

    raw = text.strip()
    if raw and raw[0].isdigit() and not any(c in raw for c in "-:T"):
        try:
            return now_ms - int(parse_duration(raw) * 1000)
        except ValueError:
            pass
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if end:
                start += timedelta(days=1, milliseconds=-1)
            return int(start.timestamp() * 1000)
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"expected a date (2025-03-01), a date and time (2025-03-01T12:00, UTC unless "
            f"it says +02:00) or a duration back from now (30d, 12h), got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _host(conn: sqlite3.Connection) -> str:
    """The host's name as its newest ``agent.started`` event recorded it."""
    import socket

    row = conn.execute(
        "SELECT data FROM events WHERE kind = 'agent.started' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    try:
        host = json.loads(row[0]).get("host") if row else None
    except (ValueError, AttributeError):
        host = None
    return str(host) if host else socket.gethostname()


def export_bundle(db: Path, args: argparse.Namespace) -> int:
    """Write the signed evidence bundle (see :mod:`storage.auditbundle`)."""
    from storage import auditbundle
    from storage.audit import verify_chain
    from storage.auditcheckpoint import parse, read_local
    from storage.auditkey import HostKeyError, load_or_create
    from storage.db import connect

    out: Path | None = args.output
    if out is None:
        raise Usage("--format bundle writes an archive: pass -o FILE (e.g. evidence.tar.gz)")
    if not out.parent.is_dir():
        raise Usage(f"-o {out}: directory {out.parent} does not exist")
    now = _now_ms()
    try:
        from_ms = parse_when(args.from_, now) if args.from_ else None
        to_ms = parse_when(args.to, now, end=True) if args.to else now
    except ValueError as exc:
        raise Usage(f"--from/--to: {exc}") from None
    if from_ms is not None and from_ms > to_ms:
        raise Usage(f"--from {args.from_} is after --to {args.to or 'now'}")
    data_dir = db.parent
    try:
        key = load_or_create(data_dir)
    except (HostKeyError, OSError) as exc:
        raise Usage(
            f"the bundle is signed with the host key: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    local = parse(read_local(data_dir), key.public)
    conn = connect(db, readonly=True)
    try:
        report = verify_chain(conn)
        findings = verify_db(conn, local)
        problems = [f.text for f in findings if not f.ok]
        if not report.ok:
            problems.insert(0, f"broken at event {report.broken_seq}: {report.reason}")
        host_check = {"ok": not problems, "text": "; ".join(problems) or "chain verified"}
        files, summary = auditbundle.build(
            conn,
            key=key,
            host=_host(conn),
            rng=auditbundle.BundleRange(from_ms, to_ms),
            created_ms=now,
            checkpoints=local,
            host_check=host_check,
        )
        top = auditbundle.top_dir(_host(conn), now)
    finally:
        conn.close()
    auditbundle.write_tar(out, files, top, now // 1000)
    span = f"events {summary.first_seq}..{summary.last_seq}" if summary.events else "no events"
    print(
        f"wrote {out}: {span}, {summary.incidents} incidents, {summary.deployments} "
        f"deployments, {summary.config_changes} config changes, {summary.checkpoints} "
        f"checkpoints; signed by {key.public.fingerprint}",
        file=sys.stderr,
    )
    if problems:
        print(f"vigil: the host's chain does not verify: {host_check['text']}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
