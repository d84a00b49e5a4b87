"""``vigil``: the command line. Exit codes: 0 ok, 1 failure found, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from agent import __version__
from agent.cli import audit as audit_cmd
from agent.cli.api_client import AgentUnreachable, ApiClient, resolve_target
from agent.cli.extras import missing_extra
from agent.cli.status_view import render_status
from agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from storage.records import FAILING_PROCESS_STATES, AgentStatus
from storage.text import printable

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_target_args(p: argparse.ArgumentParser, *, ssh: bool = False) -> None:
    url_help = "agent API URL (default: the local agent, found through its data dir)"
    if ssh:
        url_help += (
            "; also ssh://[user@]host[:port][/data/dir]: the agent reached through your own ssh"
        )
    p.add_argument("--url", help=url_help)
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
    """The whole command tree (documented in docs/cli.md, which the tests check against it)."""
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
    _add_target_args(tui, ssh=True)
    tui.add_argument("--refresh", type=float, default=1.0, help="seconds between refreshes")
    tui.add_argument(
        "--fleet",
        type=Path,
        metavar="FILE",
        help="watch many agents listed in a fleet file (TOML; its agents may be http(s):// or "
        "ssh:// addresses); not with --url or --token-file",
    )

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
    audit_cmd.add_parsers(audit_sub)

    report = sub.add_parser(
        "report", help="a host report from the local database (HTML, Markdown, JSON or CSV)"
    )
    report.add_argument(
        "--since", default="7d", help="the window, up to now: 24h, 7d, 30d... (default 7d)"
    )
    report.add_argument(
        "--format",
        choices=("html", "md", "json", "csv"),
        default=None,
        help="default: from -o's suffix (.html, .md, .json), else md",
    )
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="file to write (for csv: a directory, one file per table); default: stdout",
    )
    source = report.add_mutually_exclusive_group()
    source.add_argument(
        "--config", type=Path, default=None, help="agent config: its data dir, host and models"
    )
    source.add_argument("--db", type=Path, default=None, help="the database file itself")

    probe = sub.add_parser("probe", help="tools for model probes")
    probe_sub = probe.add_subparsers(dest="probe_command", required=True, parser_class=_Parser)
    golden = probe_sub.add_parser(
        "record-golden",
        help="run an ONNX model once and write its inputs and outputs as a golden file",
    )
    golden.add_argument("--model", type=Path, required=True, help="the .onnx model file")
    golden.add_argument(
        "--inputs",
        type=Path,
        help="JSON file of {input name: nested list}, or an older golden file to reuse its "
        "inputs (default: generated from the model's signature)",
    )
    golden.add_argument("-o", "--output", type=Path, required=True, help="golden JSON to write")
    golden.add_argument(
        "--max-memory-mb", type=int, default=2048, help="the worker's memory cap (default 2048)"
    )
    golden.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to load and run (default 120)"
    )
    return parser


def _agent_run(config_path: Path) -> int:
    from agent.runtime.daemon import Agent
    from agent.runtime.logfmt import setup_logging

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
        url, token = resolve_target(args.url, args.token_file, args.config)
        client = ApiClient(url, token)
        status = client.status()
        models = client.models()
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
        # quarantined too: a crash loop given up on until an operator acts is a failure.
        or any(p.state in FAILING_PROCESS_STATES for p in status.processes)
        or not status.storage_ok
    )


def _tui(args: argparse.Namespace) -> int:
    if args.fleet is not None or (args.url or "").startswith("ssh://"):
        return _tui_remote(args)
    try:
        url, token = resolve_target(args.url, args.token_file, args.config)
    except (AgentUnreachable, ConfigError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    from tui.app import run_tui  # textual is imported only when the TUI is opened

    run_tui(url, token, refresh_s=args.refresh)
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


def _read_golden_inputs(path: Path) -> dict[str, object]:
    """``--inputs``: a JSON object of input name -> value, or a golden file holding one.

    Raises:
        ValueError: the file is unreadable or holds something else; the text says what.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, dict) and "outputs" in data and isinstance(data.get("inputs"), dict):
        data = data["inputs"]  # re-recording after a deliberate model change keeps the inputs
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object of input name -> (nested) list")
    return data


def _shape_of(value: object) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _record_golden(args: argparse.Namespace) -> int:
    from probes.onnx_client import GoldenInputError, OnnxError, record_golden

    inputs = None
    try:
        if args.inputs is not None:
            inputs = _read_golden_inputs(args.inputs)
        if not args.output.parent.is_dir():
            raise ValueError(f"-o {args.output}: directory {args.output.parent} does not exist")
        if args.timeout <= 0:
            raise ValueError(f"--timeout: expected seconds > 0, got {args.timeout:g}")
        if args.max_memory_mb < 256:
            raise ValueError(f"--max-memory-mb: expected at least 256, got {args.max_memory_mb}")
        golden = record_golden(
            args.model,
            inputs,
            args.output,
            max_memory_mb=args.max_memory_mb,
            timeout_s=args.timeout,
        )
    except (ValueError, GoldenInputError) as exc:
        print(f"vigil: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OnnxError as exc:
        print(f"vigil: {printable(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"recorded {args.output} from {args.model} (sha256 {golden['sha256']})")
    for kind in ("inputs", "outputs"):
        for name, value in golden[kind].items():
            print(f"  {kind[:-1]} {printable(name)}: shape {_shape_of(value)}")
    print(f'use it in [model.canary] as: golden = "{args.output.resolve()}"')
    return EXIT_OK


_SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json"}


def _report(args: argparse.Namespace) -> int:
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


STOP_SIGNALS = (signal.SIGHUP, signal.SIGTERM)
"""What a closed terminal (SIGHUP) or a ``kill`` (SIGTERM) sends a command."""
STOP_GRACE_S = 5.0
"""How long a stop signal gives the command to wind down before it is ended by force."""


class StopSignals:
    """SIGHUP and SIGTERM while a command runs: those received, and the cleanups that must run
    even if the command cannot stop by itself (see :func:`stop_signals_interrupt`)."""

    def __init__(self, grace_s: float) -> None:
        self.received: list[int] = []
        self.grace_s = grace_s
        self._cleanups: list[Callable[[], None]] = []
        self._deadline: threading.Timer | None = None

    def on_forced_exit(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` (from another thread) before a forced exit; it may run twice."""
        self._cleanups.append(cleanup)

    def _arm(self) -> None:
        self._deadline = threading.Timer(self.grace_s, self._force_exit)
        self._deadline.daemon = True
        self._deadline.start()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()

    def _force_exit(self) -> None:
        for cleanup in self._cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        os._exit(128 + self.received[0])


@contextlib.contextmanager
def stop_signals_interrupt(grace_s: float = STOP_GRACE_S) -> Iterator[StopSignals]:
    """Let SIGHUP and SIGTERM stop a command as Ctrl-C does, so that its cleanup runs.

    ``vigil demo`` and ``vigil tui`` start processes (the demo's agent and model server, ssh
    forwards) and make temporary directories, and undo that in ``finally`` blocks. Python's
    default for SIGHUP and SIGTERM ends the process without running them, so a dropped ssh
    connection or a killed tmux window left the demo running. The first stop signal is handed
    to the current SIGINT handler: while the TUI runs that is asyncio's, which cancels the
    app's main task so Textual shuts down (and gives the terminal back) before
    ``KeyboardInterrupt`` comes out of it; elsewhere ``KeyboardInterrupt`` is raised at once.
    Later ones are only noted: a second exception raised at a random point of the shutdown
    under way could wreck it. Not for ``vigil agent run``, where SIGHUP reloads the config.

    After SIGHUP the terminal is gone: the standard streams that were a terminal are pointed
    at /dev/null, so writing to them cannot fail (Textual's output thread dies on EIO, and its
    shutdown then waits forever). Whatever still hangs is ended after ``grace_s``: the
    cleanups given to :meth:`StopSignals.on_forced_exit` run, then the process exits with
    128 + the signal's number.

    Yields:
        The stop signals received so far, and where to leave the forced-exit cleanups.
    """
    stop = StopSignals(grace_s)
    terminals = [fd for fd in (1, 2) if os.isatty(fd)]  # now: a hung-up one is no tty

    def interrupt(signum: int, frame: FrameType | None) -> None:
        stop.received.append(signum)
        if len(stop.received) > 1:
            return  # already stopping
        if signum == signal.SIGHUP:
            _detach(terminals)
        stop._arm()
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
        else:  # SIGINT ignored (started in the background) or left to the OS
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        stop._disarm()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _detach(fds: list[int]) -> None:
    """Point ``fds`` at /dev/null: what is still written to the closed terminal is dropped."""
    if not fds:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(null, fd)
    os.close(null)


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
        return _record_golden(args)
    if args.command == "report":
        return _report(args)
    return EXIT_USAGE  # pragma: no cover - argparse requires a command
