"""``vigil report``: a host report from the local database, in any format (``--fleet``: a
fleet report, agent/cli/fleet_report.py)."""

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

    try:
        span_ms = reports.parse_since(args.since)
        fmt = _format_of(args)
        fleet = getattr(args, "fleet", None) is not None
        if not fleet and getattr(args, "group_by", None) is not None:
            raise _Usage("--group-by groups the hosts of a fleet report: pass --fleet FILE")
        source = None if fleet else _source_of(args)
    except _Usage as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"vigil: --since: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if source is None:
        from agent.cli.fleet_report import fleet_report_command

        return fleet_report_command(args, fmt, span_ms)
    db, host, models = source
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


class _Usage(Exception):
    """A usage error, said as it is (exit 2)."""


def _format_of(args: argparse.Namespace) -> str:
    """``--format``, else from ``-o``'s suffix, else Markdown."""
    fmt: str | None = args.format
    if fmt is None:
        fmt = "md" if args.output is None else _SUFFIX_FORMATS.get(args.output.suffix.lower())
        if fmt is None:
            raise _Usage(
                f"-o {args.output}: cannot tell the format from the suffix; "
                "pass --format html, md, json or csv"
            )
    if fmt == "csv" and args.output is None:
        raise _Usage("--format csv writes one file per table: pass -o DIR")
    return fmt


def _source_of(args: argparse.Namespace) -> tuple[Path, str | None, list[str] | None]:
    """The database to read, with the host name and models a config names (if one does)."""
    from agent.config import default_data_dir
    from storage.db import DB_FILENAME

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
            raise _Usage(f"config refused: {exc}") from None
    if not db.is_file():
        raise _Usage(f"no database at {db} (pass --db or --config)")
    return db, host, models
