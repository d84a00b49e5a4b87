"""``vigil audit verify``, ``export`` and ``pubkey``: the audit chain from the command line.

Checkpoints, the host key and evidence bundles are :mod:`agent.cli.audit_evidence`'s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import ConfigError

if TYPE_CHECKING:
    from storage.audit import ChainReport

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_parsers(audit_sub: argparse._SubParsersAction[Any]) -> None:
    """The ``verify`` and ``export`` subcommands of ``vigil audit``."""
    verify = audit_sub.add_parser(
        "verify", help="walk the event chain (and hold it against checkpoints); exit 1 if broken"
    )
    _add_source_args(verify)
    verify.add_argument(
        "--jsonl",
        type=Path,
        default=None,
        metavar="FILE",
        help="verify an export written by `vigil audit export` instead of a database",
    )
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        metavar="FILE",
        help="signed checkpoint lines (journalctl -t vigil | grep vigil-checkpoint): find events "
        "cut off the end or rewritten; may be repeated",
    )
    verify.add_argument(
        "--pubkey",
        type=Path,
        default=None,
        metavar="FILE",
        help="the host's public key, kept off the host (default: the data dir's own)",
    )
    export = audit_sub.add_parser(
        "export", help="write the event chain as JSON Lines, or a signed evidence bundle"
    )
    _add_source_args(export)
    export.add_argument(
        "-o", "--output", type=Path, default=None, help="the file to write (default: stdout)"
    )
    export.add_argument(
        "--format",
        choices=("jsonl", "bundle"),
        default="jsonl",
        help="jsonl: the whole chain (default); bundle: a signed .tar.gz of events, incidents, "
        "deployments, config changes and checkpoints that verifies offline",
    )
    export.add_argument(
        "--from",
        dest="from_",
        default=None,
        metavar="WHEN",
        help="bundle: events from then: a date, a date and time (UTC) or a duration back (30d)",
    )
    export.add_argument(
        "--to", default=None, metavar="WHEN", help="bundle: events up to then (default: now)"
    )
    pubkey = audit_sub.add_parser(
        "pubkey", help="print the host key that signs checkpoints and bundles (PEM)"
    )
    _add_source_args(pubkey)
    pubkey.add_argument(
        "-o", "--output", type=Path, default=None, help="the file to write (default: stdout)"
    )


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="agent config, to find the data dir")
    p.add_argument("--db", type=Path, default=None, help="the database file itself")


def _database(args: argparse.Namespace) -> Path | None:
    from storage.db import DB_FILENAME

    db: Path | None = args.db
    if db is None:
        try:
            from agent.cli.api_client import data_dir_for

            db = data_dir_for(args.config) / DB_FILENAME
        except ConfigError as exc:
            print(f"vigil: {exc}", file=sys.stderr)
            return None
    if not db.exists():
        if args.db is not None:
            hint = ""
        elif args.config is not None:
            hint = " (has the agent run with this config yet?)"
        else:
            hint = " (pass --db or --config)"
        print(f"vigil: no database at {db}{hint}", file=sys.stderr)
        return None
    return db


def run(args: argparse.Namespace) -> int:
    """Dispatch ``vigil audit ...``."""
    from agent.cli.audit_evidence import Usage

    try:
        if args.audit_command == "export":
            return _export(args)
        if args.audit_command == "pubkey":
            return _pubkey(args)
        if getattr(args, "jsonl", None) is not None:
            return _verify_export(args)
        return _verify(args)
    except Usage as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _print_report(report: ChainReport, where: str) -> int:
    anchored = (
        f"; events 1..{report.anchor_seq} removed by retention, anchored"
        if report.anchor_seq
        else ""
    )
    if report.ok:
        print(f"audit chain ok: {report.checked} events verified ({where}){anchored}")
        if report.head_seq is not None:
            print(f"head: seq {report.head_seq} sha256 {report.head_hash}")
        return EXIT_OK
    print(
        f"audit chain BROKEN at event {report.broken_seq}: {report.reason} "
        f"({report.checked} events verified before it)"
    )
    return EXIT_FAILURE


def _verify(args: argparse.Namespace) -> int:
    from agent.cli import audit_evidence as ev
    from storage.audit import verify_chain
    from storage.db import connect

    db = _database(args)
    if db is None:
        return EXIT_USAGE
    if args.checkpoint:  # the key and files first: a usage error before any output
        key, where = ev.public_key(args.pubkey, db.parent)
        parsed = ev.read_checkpoints(args.checkpoint, key)
    conn = connect(db, readonly=True)
    try:
        report = verify_chain(conn)
        findings = ev.verify_db(conn, parsed) if args.checkpoint else []
    finally:
        conn.close()
    code = _print_report(report, str(db))
    if args.checkpoint and not ev.report_findings(parsed, findings, key, where):
        code = EXIT_FAILURE
    return code


def _verify_export(args: argparse.Namespace) -> int:
    from agent.cli import audit_evidence as ev
    from storage.audit import ExportError, verify_export

    path: Path = args.jsonl
    if args.checkpoint:
        if args.pubkey is None and args.db is None and args.config is None:
            raise ev.Usage("--checkpoint with --jsonl needs --pubkey FILE (the host's key)")
        data_dir = None if args.pubkey is not None else _data_dir(args)
        key, where = ev.public_key(args.pubkey, data_dir)
        parsed = ev.read_checkpoints(args.checkpoint, key)
    try:
        with open(path, encoding="utf-8") as f:
            report = verify_export(f)
        findings = ev.verify_export_file(path, parsed) if args.checkpoint else []
    except OSError as exc:
        print(f"vigil: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ExportError, ValueError, KeyError) as exc:
        print(f"vigil: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code = _print_report(report, str(path))
    if args.checkpoint and not ev.report_findings(parsed, findings, key, where):
        code = EXIT_FAILURE
    return code


def _data_dir(args: argparse.Namespace) -> Path | None:
    db = _database(args)
    return None if db is None else db.parent


def _pubkey(args: argparse.Namespace) -> int:
    from agent.cli.audit_evidence import pubkey

    data_dir = _data_dir(args)
    return EXIT_USAGE if data_dir is None else pubkey(data_dir, args.output)


def _export(args: argparse.Namespace) -> int:
    from agent.cli.audit_evidence import Usage, export_bundle
    from storage.audit import export_chain
    from storage.db import connect

    if args.format == "jsonl" and (args.from_ or args.to):
        raise Usage("--from/--to pick the time range of a bundle: add --format bundle")
    db = _database(args)
    if db is None:
        return EXIT_USAGE
    if args.format == "bundle":
        return export_bundle(db, args)
    out_path: Path | None = args.output
    if out_path is not None and not out_path.parent.is_dir():
        print(f"vigil: -o {out_path}: directory {out_path.parent} does not exist", file=sys.stderr)
        return EXIT_USAGE
    conn = connect(db, readonly=True)
    try:
        if out_path is None:
            n = export_chain(conn, sys.stdout, exported_ms=time.time_ns() // 1_000_000)
        else:
            tmp = out_path.with_name(out_path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                n = export_chain(conn, f, exported_ms=time.time_ns() // 1_000_000)
            tmp.replace(out_path)
    finally:
        conn.close()
    if out_path is not None:
        print(f"exported {n} events to {out_path}", file=sys.stderr)
    return EXIT_OK
