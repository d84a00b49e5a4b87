"""``vigil environment``: the agent's serving-environment fingerprint (``GET
/api/v1/environment``): host, GPUs, each supervised server's Python and packages, each model
server's version and artifact hash, with the fingerprint's hash and its last change.

``--history N`` adds the newest N item changes. Every text the agent sends back (package
versions, server answers, paths) is made printable before it reaches the terminal.
Exit codes: 0 shown; 1 the agent cannot be reached; 2 a usage or config error.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from agent.cli.exits import EXIT_OK
from storage.text import printable

__all__ = ["add_parser", "render", "run"]

SECTION_ORDER = ("host", "gpu", "process:", "model:")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """``vigil environment``'s options but the agent's address (``sub``: the top-level
    subparsers); the caller adds those, as for every command that asks the agent."""
    p = sub.add_parser(
        "environment",
        help="show the agent's serving environment: OS, GPUs, servers' Python packages and "
        "versions, artifact hashes, and the last change",
    )
    p.add_argument("--json", action="store_true", help="print the fingerprint as JSON")
    p.add_argument(
        "--history",
        type=int,
        metavar="N",
        help="also list the newest N item changes (1-1000)",
    )
    return p


def run(args: argparse.Namespace, operator: str) -> int:
    """Fetch and print the fingerprint."""
    from agent.cli.alerts_cmd import BadRequest, call, failed
    from agent.cli.api_client import AgentUnreachable, connect
    from agent.config import ConfigError

    path = "/api/v1/environment"
    if args.history is not None:
        path += f"?history={int(args.history)}"
    try:
        doc = call(connect(args), "GET", path)
    except (BadRequest, AgentUnreachable, ConfigError) as exc:
        return failed(exc)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render(doc))
    return EXIT_OK


def _when(ms: object) -> str:
    if not isinstance(ms, int):
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _order(section: str) -> tuple[int, str]:
    for i, prefix in enumerate(SECTION_ORDER):
        if section.startswith(prefix):
            return i, section
    return len(SECTION_ORDER), section


def _change_line(c: Any) -> str:
    if not isinstance(c, dict):
        return printable(c)
    old = "(none)" if c.get("old") is None else c.get("old")
    new = "(none)" if c.get("new") is None else c.get("new")
    return printable(f"{c.get('section')} {c.get('item')} {old} -> {new}")


def render(doc: dict[str, Any]) -> str:
    """The fingerprint as text: one block per section, one line per item."""
    lines = [
        f"serving environment {printable(doc.get('hash') or '(not read yet)')}, "
        f"read {_when(doc.get('collected_ms'))}"
    ]
    sections = doc.get("sections") or {}
    for section in sorted(sections, key=_order):
        items = sections[section] or {}
        lines.append("")
        lines.append(printable(section))
        width = max((len(printable(k)) for k in items), default=0)
        for item in sorted(items):
            lines.append(f"  {printable(item).ljust(width)}  {printable(items[item])}")
    last = doc.get("last_change")
    lines.append("")
    if isinstance(last, dict):
        lines.append(f"last change {_when(last.get('ts_ms'))}:")
        lines.extend(f"  {_change_line(c)}" for c in last.get("changes") or [])
    else:
        lines.append("last change: none recorded")
    history = doc.get("history")
    if isinstance(history, list):
        lines.append("")
        lines.append(f"history (newest first, {len(history)} changes):")
        lines.extend(f"  {_when(c.get('ts_ms'))}  {_change_line(c)}" for c in history)
    return "\n".join(lines)
