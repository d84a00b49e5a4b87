"""``vigil``: the command line. Exit codes: 0 ok, 1 failure found, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
from pathlib import Path

from agent.cli import alerts_cmd
from agent.cli import audit as audit_cmd
from agent.cli.api_client import AgentUnreachable, connect, resolve_target
from agent.cli.config_state import config_lines, config_state
from agent.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agent.cli.extras import missing_extra
from agent.cli.golden import record_golden_command
from agent.cli.parser import build_parser
from agent.cli.report_cmd import report_command
from agent.cli.status_view import render_status
from agent.cli.stopping import stop_signals_interrupt
from agent.config import ConfigError, load_config
from storage import private
from storage.records import FAILING_PROCESS_STATES, AgentStatus
from storage.text import printable


def _agent_run(config_path: Path) -> int:
    from agent.runtime.daemon import Agent
    from agent.runtime.logfmt import setup_logging

    # Events, log tails, error bodies and tokens are no other local user's business, whatever
    # umask the agent was started with (000 in some containers); children get the old one back.
    private.restrict_umask()
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"vigil: config refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.agent.log_level)
    return asyncio.run(Agent(config).run())


def _install_service(args: argparse.Namespace) -> int:
    from agent.cli.service import ServiceError, ServiceSpec, check_user, install, render_unit

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
    models = _plural(len(config.models), "model")
    processes = _plural(len(config.processes), "process", "processes")
    print(f"{config_path}: ok ({models}, {processes})")
    return EXIT_OK


def _plural(n: int, one: str, many: str | None = None) -> str:
    """``1 model``, ``2 models``; ``many`` where adding an s is wrong (``processes``)."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _status(args: argparse.Namespace) -> int:
    try:
        client = connect(args)
        status = client.status()
        models = client.models()
    except (AgentUnreachable, ConfigError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    alerts = alerts_cmd.firing(client)
    config = config_state(client)
    if args.json:
        # The status document, with each model carrying its latency percentiles and outcomes.
        doc = {**status.to_json(), "models": models}
        if alerts is not None:
            doc["alerts"] = alerts
        if config is not None:
            doc["config"] = config
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render_status(status, model_details={m["name"]: m for m in models}, alerts=alerts))
        for line in config_lines(config):
            print(line)
    return EXIT_FAILURE if _has_failure(status) else EXIT_OK


def _has_failure(status: AgentStatus) -> bool:
    return (
        any(m.state == "down" for m in status.models)
        # quarantined too: a crash loop given up on until an operator acts is a failure.
        or any(p.state in FAILING_PROCESS_STATES for p in status.processes)
        or not status.storage_ok
    )


def _tui(args: argparse.Namespace) -> int:
    if args.fleet is not None or (args.url or "").startswith("ssh://"):
        return _tui_remote(args)
    try:
        client = connect(args)
    except (AgentUnreachable, ConfigError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    from tui.app import run_tui  # textual is imported only when the TUI is opened

    run_tui(client.url, client.token, refresh_s=args.refresh, ssl_context=client.ssl_context)
    return EXIT_OK


def _tui_remote(args: argparse.Namespace) -> int:
    """``vigil tui --fleet FILE`` or ``--url ssh://...``: agents the TUI reaches itself."""
    from tui.app import FleetError, run_fleet_tui, run_ssh_tui

    if args.fleet is not None and (args.url or args.token_file):
        print("vigil: --fleet names every agent: drop --url and --token-file", file=sys.stderr)
        return EXIT_USAGE
    token = None
    if args.fleet is None and args.token_file is not None:
        try:
            token = resolve_target(args.url, args.token_file, None)[1]
        except AgentUnreachable as exc:
            print(f"vigil: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    try:
        if args.fleet is not None:
            run_fleet_tui(args.fleet, refresh_s=args.refresh)
        else:
            run_ssh_tui(args.url, token, refresh_s=args.refresh)
    except FleetError as exc:
        print(f"vigil: {'fleet refused: ' if args.fleet else ''}{exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _process(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    try:
        client = connect(args)
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


def _until_stopped(command: argparse.Namespace) -> int:
    """``vigil tui`` or ``vigil demo``, cleaned up on SIGHUP and SIGTERM as on Ctrl-C; the
    exit code is then 128 + the signal's number, as a shell reports a signal."""
    with stop_signals_interrupt() as stop:
        try:
            if command.command == "tui":
                code = _tui(command)
            else:
                from agent.cli.demo import run_demo

                code = run_demo(
                    tui=not command.no_tui,
                    duration_s=command.duration,
                    keep=command.keep,
                    on_forced_exit=stop.on_forced_exit,
                )
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
    return 128 + stop.received[0] if stop.received else code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vigil`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ModuleNotFoundError as exc:
        # An install without the extra this command needs (pyproject.toml): say which.
        command = " ".join(filter(None, (args.command, getattr(args, "agent_command", None))))
        message = missing_extra(command, exc)
        if message is None:
            raise
        print(f"vigil: {message}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "agent":
        if args.agent_command == "run":
            return _agent_run(args.config)
        if args.agent_command == "install-service":
            return _install_service(args)
        return _check_config(args.config)
    if args.command == "status":
        return _status(args)
    if args.command in ("tui", "demo"):
        return _until_stopped(args)
    if args.command == "audit":
        return audit_cmd.run(args)
    if args.command == "process":
        return _process(args)
    if args.command == "probe":
        return record_golden_command(args)
    if args.command == "report":
        return report_command(args)
    if args.command in ("alerts", "notify"):
        return alerts_cmd.run(args, operator_name())
    if args.command in ("deploy", "rollback"):
        from agent.cli import deploy_cmd

        return deploy_cmd.run(args, operator_name())
    if args.command in ("canary", "token", "environment"):
        # Imported when used: `vigil status` need not load them.
        command = importlib.import_module(f"agent.cli.{args.command}_cmd")
        return int(command.run(args, operator_name()))
    return EXIT_USAGE  # pragma: no cover - argparse requires a command
