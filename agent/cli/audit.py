"""``vigil audit verify`` and ``vigil audit export``: the audit chain from the command line."""

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
    verify = audit_sub.add_parser("verify", help="walk the event chain; exit 1 if broken")
    _add_source_args(verify)
    verify.add_argument(
        "--jsonl",
        type=Path,
        default=None,
        metavar="FILE",
        help="verify an export written by `vigil audit export` instead of a database",
    )
    export = audit_sub.add_parser(
        "export", help="write the event chain as JSON Lines, for offline verification"
    )
    _add_source_args(export)
    export.add_argument(
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
    if args.audit_command == "export":
        return _export(args)
    if getattr(args, "jsonl", None) is not None:
        return _verify_export(args.jsonl)
    return _verify(args)


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
    from storage.audit import verify_chain
    from storage.db import connect

    db = _database(args)
    if db is None:
        return EXIT_USAGE
    conn = connect(db, readonly=True)
    try:
        report = verify_chain(conn)
    finally:
        conn.close()
    return _print_report(report, str(db))


def _verify_export(path: Path) -> int:
    from storage.audit import ExportError, verify_export

    try:
        with open(path, encoding="utf-8") as f:
            report = verify_export(f)
    except OSError as exc:
        print(f"vigil: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except ExportError as exc:
        print(f"vigil: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _print_report(report, str(path))


def _export(args: argparse.Namespace) -> int:
    from storage.audit import export_chain
    from storage.db import connect

    db = _database(args)
    if db is None:
        return EXIT_USAGE
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
