"""``vigil token create|list|rotate|revoke``: the API's bearer tokens.

The commands edit the token store in the agent's data dir (found through ``--config`` as the
other commands find it); a running agent picks each change up at its next request, without a
restart, and records it in the audit trail. So they need no running agent, but the right to
write the data dir (the agent's user, or root).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli.exits import EXIT_OK, EXIT_USAGE
from agent.config import DEFAULT_CONFIG_PATH, ConfigError
from agent.serve import tokenfile
from agent.serve.tokenfile import LOCAL_FILES, LOCAL_NAMES, Entry, TokenError
from storage.text import printable
from storage.tomlschema import MAX_DURATION_S
from storage.units import format_duration, parse_duration

EXIT_FAILURE = 1
DEFAULT_GRACE = "1h"


def add_parser(sub: Any) -> None:
    """``vigil token``'s subcommands (``sub``: the top-level subparsers)."""
    token = sub.add_parser(
        "token", help="the API's bearer tokens: create named ones, list, rotate, revoke"
    )
    token_sub = token.add_subparsers(dest="token_command", required=True, parser_class=type(token))
    create = token_sub.add_parser(
        "create", help="make a named token and print its value (once: only its hash is kept)"
    )
    create.add_argument("name", help="the token's name, recorded as who acts (e.g. alice, ci)")
    create.add_argument(
        "--scope", choices=("read", "operate"), required=True, help="what the token may do"
    )
    create.add_argument(
        "--expires", metavar="DURATION", help="refused after this long, e.g. 90d (default: never)"
    )
    _add_common(create)
    listing = token_sub.add_parser(
        "list", help="every token: name, scope, created, expiry, last rotation (never a value)"
    )
    _add_common(listing)
    rotate = token_sub.add_parser(
        "rotate",
        help="give a token a new value; the old one still works for the grace period",
    )
    which = rotate.add_mutually_exclusive_group()
    which.add_argument(
        "name", nargs="?", help="the token (local-operate, local-read or a named one)"
    )
    which.add_argument(
        "--scope",
        choices=("read", "operate"),
        help="the agent's default token of this scope (api-token or api-token.read; "
        "default: operate)",
    )
    rotate.add_argument(
        "--grace",
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help=f"how long the old value keeps working (default {DEFAULT_GRACE}; 0s: not at all)",
    )
    _add_common(rotate)
    revoke = token_sub.add_parser("revoke", help="refuse a named token from now on")
    revoke.add_argument("name", help="the named token")
    _add_common(revoke)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help=f"agent config, to find the data dir (default: {DEFAULT_CONFIG_PATH} if it exists)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace, operator: str) -> int:
    """Run a ``vigil token`` command; ``operator`` (user@host) is recorded with the change."""
    from agent.cli.api_client import data_dir_for

    try:
        data_dir = data_dir_for(args.config)
        now = int(time.time() * 1000)
        command = args.token_command
        if command == "create":
            return _create(args, data_dir, operator, now)
        if command == "rotate":
            return _rotate(args, data_dir, operator, now)
        if command == "revoke":
            entry = tokenfile.revoke(data_dir, args.name, by=operator, now_ms=now)
            _say(args, f"revoked {entry.scope} token {entry.name}", {"revoked": entry.name})
            return EXIT_OK
        return _list(args, data_dir, now)
    except ConfigError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TokenError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_FAILURE if isinstance(exc, tokenfile.TokenFileError) else EXIT_USAGE


def _duration(value: str, option: str, *, zero: bool) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise TokenError(f"{option}: {exc}") from None
    if seconds < 0 or (seconds == 0 and not zero) or seconds > MAX_DURATION_S:
        least = "0s" if zero else "more than 0s"
        raise TokenError(f"{option}: expected {least} and at most 100y, got {value!r}")
    return seconds


def _create(args: argparse.Namespace, data_dir: Path, operator: str, now: int) -> int:
    expires_s = None if args.expires is None else _duration(args.expires, "--expires", zero=False)
    value = tokenfile.create(
        data_dir, args.name, args.scope, by=operator, now_ms=now, expires_s=expires_s
    )
    ends = "never expires" if expires_s is None else f"expires in {format_duration(expires_s)}"
    if args.json:
        print(json.dumps({"name": args.name, "scope": args.scope, "token": value}))
    else:
        # The value alone on stdout (TOKEN=$(vigil token create ...)); the words on stderr.
        print(
            f"created {args.scope} token {args.name} ({ends}); its value, shown only now:",
            file=sys.stderr,
        )
        print(value)
    return EXIT_OK


def _rotate(args: argparse.Namespace, data_dir: Path, operator: str, now: int) -> int:
    name = args.name or LOCAL_NAMES[args.scope or "operate"]
    grace_s = _duration(args.grace, "--grace", zero=True)
    value = tokenfile.rotate(data_dir, name, grace_s=grace_s, by=operator, now_ms=now)
    old = (
        f"the old value works until {_when(now + round(grace_s * 1000))}"
        if grace_s > 0
        else "the old value is refused now"
    )
    if value is None:
        where = data_dir / LOCAL_FILES[name]
        _say(args, f"rotated {name}: the new value is in {where}; {old}", {"rotated": name})
    elif args.json:
        print(json.dumps({"rotated": name, "token": value}))
    else:
        print(f"rotated {name}; {old}; the new value, shown only now:", file=sys.stderr)
        print(value)
    return EXIT_OK


def _list(args: argparse.Namespace, data_dir: Path, now: int) -> int:
    entries = tokenfile.list_tokens(data_dir)
    if args.json:
        print(json.dumps({"tokens": [_entry_json(e, now) for e in entries]}, indent=2))
        return EXIT_OK
    rows = [("NAME", "SCOPE", "CREATED", "EXPIRES", "ROTATED", "OLD VALUE UNTIL")]
    for e in entries:
        grace = max((p.until_ms for p in e.previous if p.until_ms > now), default=None)
        rows.append(
            (
                printable(e.name),
                e.scope,
                _when(e.created_ms) if e.created_ms else "-",
                _expiry(e.expires_ms, now),
                _when(e.rotated_ms) if e.rotated_ms else "-",
                _when(grace) if grace else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def _entry_json(e: Entry, now: int) -> dict[str, Any]:
    return {
        "name": e.name,
        "scope": e.scope,
        "local": e.local,
        "created_ms": e.created_ms,
        "created_by": e.created_by,
        "expires_ms": e.expires_ms,
        "expired": e.expires_ms is not None and e.expires_ms <= now,
        "rotated_ms": e.rotated_ms,
        "previous_until_ms": [p.until_ms for p in e.previous if p.until_ms > now],
    }


def _expiry(expires_ms: int | None, now: int) -> str:
    if expires_ms is None:
        return "never"
    return f"{_when(expires_ms)}{' (expired)' if expires_ms <= now else ''}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _say(args: argparse.Namespace, text: str, doc: dict[str, Any]) -> None:
    print(json.dumps(doc) if args.json else text)
