"""``vigil deploy`` (start, approve, list, show, record, versions) and ``vigil rollback``,
through the agent's API.

``vigil deploy MODEL --artifact PATH`` is ``vigil deploy start MODEL --artifact PATH``: the
parser reads a first word that is no subcommand as a model. ``--wait`` follows the deploy until
it ends, printing each state it passes and the bake's progress, and exits 0 when it was
promoted, 1 when it was rolled back, failed or cancelled: a pipeline step's verdict. A refused
request (a bad artifact, an unknown model, a model without a supervised process, a deploy in
flight, a quarantined process) exits 2 with the agent's reason; nothing was switched then.
Every text the agent sends back is made printable before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from agent.cli.alerts_cmd import BadRequest, call, failed
from agent.cli.api_client import AgentUnreachable, ApiClient, connect
from agent.cli.exits import EXIT_FAILURE, EXIT_OK
from agent.config import ConfigError
from storage.text import printable

__all__ = ["VERBS", "run"]

VERBS = ("start", "approve", "list", "show", "record", "versions")
"""``vigil deploy``'s subcommands; any other first word is a model (``start``)."""
FINAL = {"promoted": EXIT_OK, "rolled_back": EXIT_FAILURE, "failed": EXIT_FAILURE}
POLL_S = 0.5
WAIT_TIMEOUT_S = 7 * 86400.0


Refused = BadRequest
"""The agent refused the request (a 4xx), or its input was found bad before sending it."""
_request = functools.partial(call, refused=(400, 403, 404, 409))
"""One call; a 4xx answer is :class:`Refused` with the agent's reason."""


def _lineage(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in ("actor", "pipeline_id", "git_sha", "notes", "bake", "strategy"):
        value = getattr(args, key, None)
        if value:
            body[key] = value
    return body


def _artifact(path: Path, remote: bool = False) -> str:
    """The artifact as the agent must read it: absolute (the agent's cwd is not ours). It is
    checked here only for a clear message; the agent checks it again as it hashes. With
    ``remote`` (``--url``: an agent on another host, a pipeline's runner) the path is the
    agent's, not ours: it must be absolute, and only the agent can tell whether it exists."""
    if remote:
        if not path.is_absolute():
            raise Refused(f"--artifact {path}: expected an absolute path on the agent's host")
        return str(path)
    full = path.expanduser().absolute()
    if not full.exists():
        raise Refused(f"--artifact {path}: no such file or directory")
    return str(full)


def _line(dep: Mapping[str, Any]) -> str:
    """``#12 iris baking 3/5 ok (ends in 40s)``."""
    out = f"#{dep['id']} {printable(dep['model'])} {dep['state']}"
    progress = dep.get("progress") or {}
    if progress:
        left = max(0.0, (progress["bake_ends_ms"] - time.time() * 1000) / 1000)
        out += (
            f": {progress['good_in_a_row']}/{progress['needed']} ok in a row, "
            f"{progress['canaries']} canaries, {progress['failed']} failed"
            + (f", bake ends in {left:.0f}s" if left > 0 else "")
        )
    if dep.get("error"):
        out += f": {printable(dep['error'])}"
    return out


def _print(dep: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(dep, indent=2, sort_keys=True))
        return
    versions = dep.get("versions") or {}
    print(_line(dep))
    for role in ("from", "to", "rollback"):
        v = versions.get(role)
        if v:
            print(f"  {role:8} v{v['id']} {printable(v['hash'])} {printable(v['path'])}")
    who = f"requested by {printable(dep['requested_by'])}"
    if dep.get("approved_by"):
        who += f", approved by {printable(dep['approved_by'])}"
    print(f"  {who}; strategy {dep['strategy']}, bake {dep['bake_s']:g}s")
    if dep.get("config_diff"):
        print(f"  {dep.get('kind', 'config')} diff:")
        for line in str(dep["config_diff"]).splitlines():
            print(f"    {printable(line)}")


def _wait(client: ApiClient, dep: Mapping[str, Any], as_json: bool) -> int:
    """Follow a deployment to its end; the exit code says how it ended."""
    shown = ""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        line = _line(dep)
        if line != shown and not as_json:
            print(line, flush=True)
            shown = line
        if not dep["in_flight"]:
            if as_json:
                print(json.dumps(dep, indent=2, sort_keys=True))
            return FINAL.get(dep["state"], EXIT_FAILURE)
        time.sleep(POLL_S)
        dep = _request(client, "GET", f"/api/v1/deployments/{dep['id']}")["deployment"]
    return EXIT_FAILURE


def _start(client: ApiClient, args: argparse.Namespace, operator: str) -> int:
    body = {"artifact": _artifact(args.artifact, args.url is not None), **_lineage(args)}
    path = f"/api/v1/models/{quote(args.model, safe='')}/deploy"
    dep = _request(client, "POST", path, body, operator)["deployment"]
    if args.wait:
        return _wait(client, dep, args.json)
    _print(dep, args.json)
    return EXIT_OK


def _rollback(client: ApiClient, args: argparse.Namespace, operator: str) -> int:
    body = {**_lineage(args), **({"to": args.to} if args.to else {})}
    path = f"/api/v1/models/{quote(args.model, safe='')}/rollback"
    dep = _request(client, "POST", path, body, operator)["deployment"]
    if args.wait:
        return _wait(client, dep, args.json)
    _print(dep, args.json)
    return EXIT_OK


def _record(client: ApiClient, args: argparse.Namespace, operator: str) -> int:
    if (args.artifact is None) == (args.version_hash is None):
        raise Refused("expected one of --artifact PATH or --version-hash sha256:HEX")
    body = _lineage(args)
    if args.artifact is not None:
        body["artifact"] = _artifact(args.artifact, args.url is not None)
    else:
        body["version_hash"] = args.version_hash
    path = f"/api/v1/models/{quote(args.model, safe='')}/record"
    _print(_request(client, "POST", path, body, operator)["deployment"], args.json)
    return EXIT_OK


def _list(client: ApiClient, args: argparse.Namespace) -> int:
    query = {"model": args.model} if args.model else {}
    path = "/api/v1/deployments" + (f"?{urlencode(query)}" if query else "")
    rows = _request(client, "GET", path)["deployments"]
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    if not rows:
        print("no deployments")
    for d in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["requested_ms"] / 1000))
        short = (d.get("version_hash") or "").partition(":")[2][:12]
        print(
            f"#{d['id']:<5} {when}  {printable(d['model']):20} {d['state']:17} "
            f"{d['strategy']:9} {short:12}  {printable(d['requested_by'])}"
        )
    return EXIT_OK


def _versions(client: ApiClient, args: argparse.Namespace) -> int:
    doc = _request(client, "GET", f"/api/v1/models/{quote(args.model, safe='')}/versions")
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return EXIT_OK
    if not doc["versions"]:
        print(f"no versions of {printable(args.model)}")
    for v in doc["versions"]:
        marks = ("current " if v["current"] else "") + ("known-good" if v["known_good"] else "")
        print(
            f"v{v['id']:<4} {printable(v['hash'])[:19]}  {marks:18} {v['outcome'] or '':12} "
            f"{printable(v['path'])}"
        )
    return EXIT_OK


def run(args: argparse.Namespace, operator: str) -> int:
    """``vigil deploy ...`` or ``vigil rollback``; ``operator`` (user@host) acts."""
    if getattr(args, "fleet", None) is not None:
        from agent.cli.fleet_deploy import fleet_deploy_command

        return fleet_deploy_command(args, operator)
    try:
        client = connect(args, timeout_s=120.0)  # a deploy's hash may take a while
        if args.command == "rollback":
            return _rollback(client, args, operator)
        verb = args.deploy_command
        if verb == "start":
            return _start(client, args, operator)
        if verb == "approve":
            path = f"/api/v1/deployments/{args.id}/approve"
            _print(_request(client, "POST", path, None, operator)["deployment"], args.json)
            return EXIT_OK
        if verb == "record":
            return _record(client, args, operator)
        if verb == "versions":
            return _versions(client, args)
        if verb == "show":
            dep = _request(client, "GET", f"/api/v1/deployments/{args.id}")["deployment"]
            _print(dep, args.json)
            return EXIT_OK
        return _list(client, args)
    except (Refused, AgentUnreachable, ConfigError) as exc:
        return failed(exc)


def parse_shorthand(args: list[str]) -> list[str]:
    """``deploy MODEL ...`` -> ``deploy start MODEL ...`` (a first word that is no verb)."""
    if args and args[0].startswith("--fleet"):  # vigil deploy --fleet FILE MODEL ...
        return ["start", *args]
    if args and not args[0].startswith("-") and args[0] not in VERBS:
        return ["start", *args]
    return args
