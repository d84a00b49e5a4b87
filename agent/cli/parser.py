"""``vigil``'s command tree: every command, its options and its help (docs/cli.md lists them,
and a test checks the two against each other)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import __version__
from agent.cli import audit as audit_cmd
from agent.cli import canary_cmd, environment_cmd, token_cmd
from agent.cli.exits import EXIT_USAGE
from agent.config import DEFAULT_CONFIG_PATH


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
    p.add_argument(
        "--ca",
        type=Path,
        help="CA file (PEM) that an https:// agent's certificate is verified against (default: "
        "$VIGIL_CA; else a local agent's own certificate, else the system's CAs)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (documented in docs/cli.md, which the tests check against it)."""
    parser = _Parser(prog="vigil", description="Vigil keeps watch over ML inference hosts.")
    parser.add_argument("--version", action="version", version=f"vigil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _agent_parsers(sub)
    _view_parsers(sub)
    _process_parsers(sub)
    audit = sub.add_parser("audit", help="the tamper-evident audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    audit_cmd.add_parsers(audit_sub)
    _report_parser(sub)
    _probe_parsers(sub)
    _alerts_parsers(sub)
    _deploy_parsers(sub)
    canary_cmd.add_parser(sub)
    token_cmd.add_parser(sub)
    _add_target_args(environment_cmd.add_parser(sub))
    return parser


def _agent_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
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


def _view_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
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


def _process_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
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


def _report_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
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
    source.add_argument(
        "--fleet",
        type=Path,
        default=None,
        help="a fleet report: every agent of this fleet file, through its API",
    )
    report.add_argument(
        "--group-by",
        default=None,
        metavar="LABEL",
        help="with --fleet: one group per value of this host label (region, team...)",
    )


def _probe_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
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


def _alerts_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    alerts = sub.add_parser("alerts", help="list alerts (the default), silence or unsilence them")
    _add_list_args(alerts)
    alerts_sub = alerts.add_subparsers(dest="alerts_command", parser_class=_Parser)
    listing = alerts_sub.add_parser(
        "list", help="pending, firing (and silenced) alerts, and those resolved in the last hour"
    )
    _add_list_args(listing)
    silence = alerts_sub.add_parser(
        "silence", help="mute notifications of alerts matching every MATCHER for a while"
    )
    silence.add_argument(
        "matchers",
        nargs="+",
        metavar="MATCHER",
        help="label=value, label!=value, label=~regex or label!~regex (e.g. model=llama)",
    )
    silence.add_argument(
        "--for",
        dest="duration",
        default="1h",
        metavar="DURATION",
        help="how long: 30m, 2h, 1d... (default 1h)",
    )
    silence.add_argument("--comment", required=True, help="why (recorded with your user@host)")
    silence.add_argument("--json", action="store_true", help="print the new silence as JSON")
    _add_target_args(silence)
    unsilence = alerts_sub.add_parser("unsilence", help="expire a silence now")
    unsilence.add_argument("id", help="the silence's id (from `vigil alerts silence`)")
    _add_target_args(unsilence)

    notify = sub.add_parser("notify", help="notification channels")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True, parser_class=_Parser)
    test = notify_sub.add_parser(
        "test", help="send a test notification through a channel and print the receiver's answer"
    )
    test.add_argument("channel", help="the [[notify]] name")
    _add_target_args(test)


def _add_list_args(p: argparse.ArgumentParser) -> None:
    """``--state``, ``--json`` and the target flags of a listing, each left out of the
    namespace when not given: ``vigil alerts`` and ``vigil alerts list`` both take them, and a
    subcommand's defaults would otherwise overwrite what was given before its name."""
    before = len(p._actions)
    p.add_argument(
        "--state",
        choices=("pending", "firing", "silenced", "resolved"),
        help="only alerts in this state",
    )
    p.add_argument("--json", action="store_true", help="print the alerts as JSON")
    _add_target_args(p)
    for action in p._actions[before:]:
        action.default = argparse.SUPPRESS


class _DeployParser(_Parser):
    """``vigil deploy``: a first word that is no subcommand is a model (``start``)."""

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        from agent.cli.deploy_cmd import parse_shorthand

        return super().parse_known_args(
            parse_shorthand(list(args) if args is not None else sys.argv[1:]), namespace
        )


def _add_lineage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", help="who deploys, for the lineage (default: your user@host)")
    p.add_argument("--pipeline-id", dest="pipeline_id", help="the CI pipeline or run id")
    p.add_argument("--git-sha", dest="git_sha", help="the commit the artifact was built from")
    p.add_argument("--notes", help="free text kept with the version and the deployment")


def _add_follow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bake",
        help="how long to watch the new version before promoting it (default: "
        "[model.deploy] bake), e.g. 10m",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the deploy until it ends: exit 0 when promoted, 1 when rolled back or failed",
    )
    p.add_argument("--json", action="store_true", help="print the deployment as JSON")


def _deploy_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    # The subparsers action makes its parsers with one class; deploy's reads a model first.
    made_by = sub._parser_class
    sub._parser_class = _DeployParser
    try:
        deploy = sub.add_parser(
            "deploy",
            help="deploy a new version of a model (vigil deploy MODEL --artifact PATH), "
            "approve, list, show or record deploys",
        )
    finally:
        sub._parser_class = made_by
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True, parser_class=_Parser)
    start = deploy_sub.add_parser(
        "start",
        help="switch MODEL to a new artifact, bake it through the canary gate, promote it or "
        "roll back (also: vigil deploy MODEL ...)",
    )
    start.add_argument("model", help="the [[model]] name")
    start.add_argument(
        "--artifact", type=Path, required=True, help="the model file or directory to deploy"
    )
    start.add_argument(
        "--strategy",
        choices=("in-place", "blue-green"),
        help="check that the model deploys this way (default: its [model.deploy] strategy; "
        "the agent refuses another, naming what the model's config would need)",
    )
    _add_lineage_args(start)
    _add_follow_args(start)
    _add_target_args(start)
    fleet = start.add_argument_group("across a fleet (docs/deploy.md, Across a fleet)")
    fleet.add_argument(
        "--fleet", type=Path, metavar="FILE", help="deploy on every agent of this fleet file"
    )
    fleet.add_argument(
        "--group", action="append", metavar="LABEL=VALUE", help="only hosts with this label"
    )
    fleet.add_argument("--hosts", action="append", metavar="GLOB", help="only hosts named so")
    fleet.add_argument(
        "--waves", help="cumulative wave sizes, e.g. 1,25%%,100%% (default: host by host)"
    )
    fleet.add_argument(
        "--rollback-done",
        action="store_true",
        help="when a host fails, roll back the hosts this rollout promoted",
    )
    approve = deploy_sub.add_parser("approve", help="approve a deploy awaiting approval")
    approve.add_argument("id", type=int, help="the deployment's id")
    approve.add_argument("--json", action="store_true", help="print the deployment as JSON")
    _add_target_args(approve)
    listing = deploy_sub.add_parser("list", help="deployments, newest first")
    listing.add_argument("--model", help="only this model's")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    _add_target_args(listing)
    show = deploy_sub.add_parser("show", help="one deployment with its versions and evidence")
    show.add_argument("id", type=int, help="the deployment's id")
    show.add_argument("--json", action="store_true", help="print it as JSON (all evidence)")
    _add_target_args(show)
    record = deploy_sub.add_parser(
        "record", help="record a deployment another tool made (promoted, no gate)"
    )
    record.add_argument("model", help="the [[model]] name")
    record.add_argument("--artifact", type=Path, help="the model file or directory deployed")
    record.add_argument(
        "--version-hash", dest="version_hash", help="or its content hash, sha256:<64 hex>"
    )
    record.add_argument("--json", action="store_true", help="print the deployment as JSON")
    _add_lineage_args(record)
    _add_target_args(record)
    versions = deploy_sub.add_parser(
        "versions", help="a model's versions: current, known-good, outcome"
    )
    versions.add_argument("model", help="the [[model]] name")
    versions.add_argument("--json", action="store_true", help="print them as JSON")
    _add_target_args(versions)

    rollback = sub.add_parser(
        "rollback",
        help="roll a model back: stop a deploy that is starting or baking, or deploy a "
        "known-good version again (gated)",
    )
    rollback.add_argument("model", help="the [[model]] name")
    rollback.add_argument(
        "--to", help="the version: its id or a hash prefix (default: the last known-good one)"
    )
    rollback.add_argument("--notes", help="why, kept with the deployment")
    _add_follow_args(rollback)
    _add_target_args(rollback)
