"""``vigil``: the command line. Exit codes: 0 ok, 1 failure found, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from agent import __version__
from agent.client import AgentUnreachable, ApiClient, resolve_target
from agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from agent.status_view import render_status
from storage.records import AgentStatus
from storage.text import printable

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", help="agent API URL (default: the local agent, found through its data dir)"
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token (default: the data dir's api-token, or $VIGIL_TOKEN)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help=f"agent config, to find the data dir (default: {DEFAULT_CONFIG_PATH} if it exists)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also used by the README's CLI reference)."""
    parser = _Parser(prog="vigil", description="Vigil keeps watch over ML inference hosts.")
    parser.add_argument("--version", action="version", version=f"vigil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    agent = sub.add_parser("agent", help="run or manage the agent daemon")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, parser_class=_Parser)
    run = agent_sub.add_parser("run", help="run the agent in the foreground")
    run.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"config file (default: {DEFAULT_CONFIG_PATH})",
    )
    check = agent_sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"config file (default: {DEFAULT_CONFIG_PATH})",
    )
    svc = agent_sub.add_parser(
        "install-service", help="write a hardened systemd unit for the agent and its data dir"
    )
    svc.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"config file the service runs (must be valid; default: {DEFAULT_CONFIG_PATH})",
    )
    svc.add_argument("--user", help="run the agent as this user (default: root)")
    svc.add_argument(
        "--read-write",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="another path the agent and its model servers may write (repeatable)",
    )
    svc.add_argument(
        "--unit-dir",
        type=Path,
        default=Path("/etc/systemd/system"),
        help="where to write vigil-agent.service (default: /etc/systemd/system)",
    )
    svc.add_argument("--dry-run", action="store_true", help="print the unit; change nothing")

    status = sub.add_parser("status", help="show an agent's host, models and processes")
    _add_target_args(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    tui = sub.add_parser("tui", help="open the terminal UI on an agent")
    _add_target_args(tui)
    tui.add_argument("--refresh", type=float, default=1.0, help="seconds between refreshes")

    demo = sub.add_parser("demo", help="run an agent on a bundled demo model, with the TUI")
    demo.add_argument(
        "--no-tui", action="store_true", help="print status lines instead of opening the TUI"
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="with --no-tui: stop after this many seconds"
    )
    demo.add_argument("--keep", action="store_true", help="keep the temporary data dir")

    proc = sub.add_parser("process", help="act on a supervised process, or read its log")
    proc_sub = proc.add_subparsers(dest="process_command", required=True, parser_class=_Parser)
    for action, text in (
        ("start", "start a stopped, exited or quarantined process"),
        ("stop", "stop a process (its whole tree); it stays stopped until started"),
        ("restart", "stop and start a process now"),
        ("release", "release a quarantined process and start it again"),
    ):
        a = proc_sub.add_parser(action, help=text)
        a.add_argument("name", help="the [[process]] name")
        _add_target_args(a)
    logs = proc_sub.add_parser("logs", help="print the last lines of a process's output")
    logs.add_argument("name", help="the [[process]] name")
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
    _add_target_args(logs)

    audit = sub.add_parser("audit", help="the tamper-evident audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    verify = audit_sub.add_parser("verify", help="walk the event chain; exit 1 if broken")
    verify.add_argument(
        "--config", type=Path, default=None, help="agent config, to find the data dir"
    )
    verify.add_argument("--db", type=Path, default=None, help="the database file itself")
    return parser


def _agent_run(config_path: Path) -> int:
    from agent.daemon import Agent
    from agent.logfmt import setup_logging

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"vigil: config refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.agent.log_level)
    return asyncio.run(Agent(config).run())


def _install_service(args: argparse.Namespace) -> int:
    from agent.service import ServiceError, ServiceSpec, check_user, install, render_unit

    try:
        config = load_config(args.config)
        check_user(args.user)
    except ConfigError as exc:
        print(f"vigil: config refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServiceError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bad = [p for p in args.read_write if not p.is_absolute()]
    if bad:
        print(f"vigil: --read-write {bad[0]}: expected an absolute path", file=sys.stderr)
        return EXIT_USAGE
    spec = ServiceSpec(
        config=args.config.resolve(),
        data_dir=config.agent.data_dir.resolve(),
        user=args.user,
        read_write=tuple(args.read_write),
    )
    if args.dry_run:
        print(render_unit(spec), end="")
        return EXIT_OK
    try:
        for line in install(spec, args.unit_dir):
            print(line)
    except (OSError, ServiceError) as exc:
        print(f"vigil: cannot install the service: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _check_config(config_path: Path) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"vigil: config refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{config_path}: ok ({len(config.models)} models, {len(config.processes)} processes)")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    try:
        url, token = resolve_target(args.url, args.token_file, args.config)
        client = ApiClient(url, token)
        status = client.status()
        models = client.get("/api/v1/models")["models"]
    except (AgentUnreachable, ConfigError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    if args.json:
        # The status document, with each model carrying its latency percentiles and outcomes.
        print(json.dumps({**status.to_json(), "models": models}, indent=2, sort_keys=True))
    else:
        print(render_status(status, model_details={m["name"]: m for m in models}))
    return EXIT_FAILURE if _has_failure(status) else EXIT_OK


def _has_failure(status: AgentStatus) -> bool:
    return (
        any(m.state == "down" for m in status.models)
        or any(p.state in ("failed", "backoff") for p in status.processes)
        or not status.storage_ok
    )


def _tui(args: argparse.Namespace) -> int:
    try:
        url, token = resolve_target(args.url, args.token_file, args.config)
    except (AgentUnreachable, ConfigError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    from tui.app import run_tui  # textual is imported only when the TUI is opened

    run_tui(url, token, refresh_s=args.refresh)
    return EXIT_OK


def _process(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    try:
        url, token = resolve_target(args.url, args.token_file, args.config)
        client = ApiClient(url, token)
        name = quote(args.name, safe="")
        if args.process_command == "logs":
            body = client.get(f"/api/v1/processes/{name}/logs?lines={max(1, args.lines)}")
            for line in body["lines"]:
                print(printable(line))
            return EXIT_OK
        body = client.post(f"/api/v1/processes/{name}/{args.process_command}", operator_name())
    except (AgentUnreachable, ConfigError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    proc = body["process"]
    print(f"{printable(proc['name'])}: {args.process_command} accepted (was {proc['state']})")
    return EXIT_OK


def operator_name() -> str:
    """Who acts, for the audit trail: the login and host of whoever runs the command."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _audit_verify(args: argparse.Namespace) -> int:
    from storage.audit import verify_chain
    from storage.db import DB_FILENAME, connect

    db = args.db
    if db is None:
        try:
            from agent.client import data_dir_for

            db = data_dir_for(args.config) / DB_FILENAME
        except ConfigError as exc:
            print(f"vigil: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if not Path(db).exists():
        print(f"vigil: no database at {db}", file=sys.stderr)
        return EXIT_USAGE
    conn = connect(db, readonly=True)
    try:
        report = verify_chain(conn)
    finally:
        conn.close()
    if report.ok:
        print(f"audit chain ok: {report.checked} events verified ({db})")
        return EXIT_OK
    print(
        f"audit chain BROKEN at event {report.broken_seq}: {report.reason} "
        f"({report.checked} events verified before it)"
    )
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vigil`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "agent":
        if args.agent_command == "run":
            return _agent_run(args.config)
        if args.agent_command == "install-service":
            return _install_service(args)
        return _check_config(args.config)
    if args.command == "status":
        return _status(args)
    if args.command == "tui":
        return _tui(args)
    if args.command == "demo":
        from agent.demo.run import run_demo

        return run_demo(tui=not args.no_tui, duration_s=args.duration, keep=args.keep)
    if args.command == "audit":
        return _audit_verify(args)
    if args.command == "process":
        return _process(args)
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
