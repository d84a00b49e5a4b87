"""``vigil report``: a host report from the local database, in any format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

_SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json"}


def report_command(args: argparse.Namespace) -> int:
    """``vigil report``: write a host report; 1 when the audit chain is broken."""
    import sqlite3
    import time

    from agent import report as reports
    from agent.config import default_data_dir
    from storage.db import DB_FILENAME

    try:
        span_ms = reports.parse_since(args.since)
    except ValueError as exc:
        print(f"vigil: --since: {exc}", file=sys.stderr)
        return EXIT_USAGE
    fmt = args.format
    if fmt is None:
        fmt = "md" if args.output is None else _SUFFIX_FORMATS.get(args.output.suffix.lower())
        if fmt is None:
            print(
                f"vigil: -o {args.output}: cannot tell the format from the suffix; "
                "pass --format html, md, json or csv",
                file=sys.stderr,
            )
            return EXIT_USAGE
    if fmt == "csv" and args.output is None:
        print("vigil: --format csv writes one file per table: pass -o DIR", file=sys.stderr)
        return EXIT_USAGE
    db: Path | None = args.db
    host: str | None = None
    models: list[str] | None = None
    if db is None:
        config_path = args.config
        if config_path is None and DEFAULT_CONFIG_PATH.exists():
            config_path = DEFAULT_CONFIG_PATH
        try:
            if config_path is not None:
                config = load_config(config_path)
                db = config.agent.data_dir / DB_FILENAME
                host = config.agent.host
                models = [m.name for m in config.models]
            else:
                db = default_data_dir() / DB_FILENAME
        except ConfigError as exc:
            print(f"vigil: config refused: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if not db.is_file():
        print(f"vigil: no database at {db} (pass --db or --config)", file=sys.stderr)
        return EXIT_USAGE
    now = time.time_ns() // 1_000_000
    try:
        report = reports.generate(
            db, since_ms=now - span_ms, until_ms=now, host=host, models=models
        )
    except sqlite3.Error as exc:
        print(f"vigil: cannot read {db}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if fmt == "csv":
            files = reports.write_csv(report, args.output)
            print(f"wrote {len(files)} CSV files to {args.output}", file=sys.stderr)
        elif args.output is not None:
            args.output.write_text(reports.render(report, fmt), encoding="utf-8")
            print(f"wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(reports.render(report, fmt))
    except OSError as exc:
        print(f"vigil: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not report.audit.ok:
        # The report is written either way; a broken chain is a failure found, as for
        # `vigil audit verify`.
        print(
            f"vigil: audit chain BROKEN at event {report.audit.broken_seq}: {report.audit.reason}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK
