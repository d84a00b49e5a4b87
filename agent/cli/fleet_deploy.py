"""``vigil deploy --fleet FILE MODEL --artifact PATH``: one version rolled across a fleet, host
by host or in waves, each host through its own canary gate.

Each selected member runs its own deploy (``POST /api/v1/models/{name}/deploy``, followed
through ``GET /api/v1/deployments/{id}`` until it ends). The rollout stops at the first host
whose deploy did not promote (that host rolled itself back through its gate); hosts of the
same wave already in flight finish, no new host starts. With ``--rollback-done`` the hosts this
rollout promoted are rolled back (``POST /api/v1/models/{name}/rollback`` with ``to`` = the
version each ran before). The rollout's id and wave go into each deploy's notes and, unless
``--pipeline-id`` is given, its pipeline id, so each agent's own audit trail shows it.
``ssh://`` members are refused (their transport is the TUI's): give an http(s):// address.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import secrets
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agent.cli.alerts_cmd import BadRequest, call
from agent.cli.api_client import AgentUnreachable, ApiClient
from agent.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from storage.labels import merge_labels, name_problem, read_labels
from storage.text import printable

MAX_PARALLEL = 16
POLL_S = 0.5
LOST_AFTER_S = 60.0
"""A host that has not answered a poll for this long is given up on (its deploy goes on)."""
SSH_REFUSED = (
    "ssh:// members are not supported by `vigil deploy --fleet` (the ssh transport is the "
    "TUI's); give this agent's http(s):// address, e.g. through `ssh -L` to its port"
)


def _line(dep: Mapping[str, Any]) -> str:
    """``#12 clf baking: 3/5 ok in a row`` (deploy_cmd's line, shorter; not imported from it:
    deploy_cmd opens this module)."""
    out = f"#{dep['id']} {printable(dep['model'])} {dep['state']}"
    progress = dep.get("progress") or {}
    if progress:
        out += f": {progress['good_in_a_row']}/{progress['needed']} ok in a row"
    if dep.get("error"):
        out += f": {printable(dep['error'])}"
    return out


class UsageError(Exception):
    """A bad option or fleet selection; nothing was deployed."""


def parse_waves(spec: str | None, hosts: int) -> list[int]:
    """Wave sizes for ``hosts`` hosts: ``1,25%,100%`` are cumulative counts or shares (rounded
    up); hosts a spec leaves over form a last wave. None: host by host."""
    if hosts <= 0:
        return []
    if not spec:
        return [1] * hosts
    done, sizes = 0, []
    for item in spec.split(","):
        word = item.strip()
        try:
            if word.endswith("%"):
                share = float(word[:-1])
                if not 0 < share <= 100:
                    raise ValueError
                upto = math.ceil(hosts * share / 100)
            else:
                upto = int(word)
                if upto < 1:
                    raise ValueError
        except ValueError:
            raise UsageError(
                f"--waves {spec}: {word!r} is not a host count (1, 2...) or a share (25%)"
            ) from None
        upto = min(upto, hosts)
        if upto < done:
            raise UsageError(f"--waves {spec}: the waves are cumulative; {word!r} goes back")
        if upto > done:
            sizes.append(upto - done)
            done = upto
    if done < hosts:
        sizes.append(hosts - done)
    return sizes


def parse_selectors(groups: Sequence[str]) -> dict[str, str]:
    """``--group region=eu-west`` (repeatable, ANDed) as {label: value}."""
    out: dict[str, str] = {}
    for g in groups:
        name, eq, value = g.partition("=")
        if not eq or not value:
            raise UsageError(f"--group {g}: expected LABEL=VALUE, e.g. region=eu-west")
        if problem := name_problem(name):
            raise UsageError(f"--group {g}: {problem}")
        out[name] = value
    return out


@dataclass
class HostResult:
    """One member's part in the rollout (the ``--json`` summary's rows)."""

    name: str
    url: str
    wave: int | None = None
    outcome: str = "not_started"
    deployment: int | None = None
    from_version: int | None = None
    to_version: int | None = None
    error: str | None = None
    rollback: str | None = None
    rollback_deployment: int | None = None


class Rollout:
    """The rollout's state and its printing (progress lines go to stderr under --json)."""

    def __init__(self, args: argparse.Namespace, operator: str) -> None:
        self.args = args
        self.operator = operator
        self.id = time.strftime("fleet-%Y%m%dT%H%M%SZ-", time.gmtime()) + secrets.token_hex(2)
        self.lock = threading.Lock()
        self.failed = threading.Event()
        self.out = sys.stderr if args.json else sys.stdout

    def say(self, line: str) -> None:
        with self.lock:
            print(line, file=self.out, flush=True)

    def client(self, entry: Any) -> ApiClient:
        return ApiClient(
            entry.url, entry.token or "", max(entry.timeout_s, 120.0), ssl_context=entry.ssl_context
        )

    def body(self, wave: int, waves: int, extra_notes: str) -> dict[str, Any]:
        a = self.args
        note = f"fleet rollout {self.id}, wave {wave}/{waves}"
        body: dict[str, Any] = {
            "pipeline_id": a.pipeline_id or self.id,
            "notes": note + (f"; {extra_notes}" if extra_notes else ""),
        }
        for key in ("actor", "git_sha", "bake", "strategy"):
            if getattr(a, key, None):
                body[key] = getattr(a, key)
        return body

    def follow(self, client: ApiClient, name: str, dep: Mapping[str, Any]) -> Mapping[str, Any]:
        """Poll a deployment until it ends, printing each new state; raises AgentUnreachable
        when the host stays silent for LOST_AFTER_S."""
        shown, silent_since = "", None
        while True:
            line = _line(dep)
            if line != shown:
                self.say(f"[{name}] {line}")
                shown = line
            if not dep["in_flight"]:
                return dep
            time.sleep(POLL_S)
            try:
                dep = call(client, "GET", f"/api/v1/deployments/{dep['id']}")["deployment"]
                silent_since = None
            except AgentUnreachable:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > LOST_AFTER_S:
                    raise

    def deploy_host(self, entry: Any, result: HostResult, wave: int, waves: int) -> None:
        if self.failed.is_set():
            return  # a host of this wave failed: start no more
        result.wave = wave
        model = quote(self.args.model, safe="")
        body = {"artifact": str(self.args.artifact), **self.body(wave, waves, self.args.notes)}
        client = self.client(entry)
        try:
            dep = call(
                client,
                "POST",
                f"/api/v1/models/{model}/deploy",
                body,
                self.operator,
                refused=(400, 401, 403, 404, 409),
            )["deployment"]
            result.deployment = dep["id"]
            dep = self.follow(client, entry.name, dep)
        except BadRequest as exc:
            result.outcome, result.error = "refused", str(exc)
        except AgentUnreachable as exc:
            result.outcome, result.error = "unreachable", printable(str(exc))
        else:
            versions = dep.get("versions") or {}
            result.from_version = (versions.get("from") or {}).get("id")
            result.to_version = (versions.get("to") or {}).get("id")
            result.outcome = str(dep["state"])
            result.error = printable(dep["error"]) if dep.get("error") else None
        if result.outcome != "promoted":
            self.failed.set()
        self.say(f"[{entry.name}] {result.outcome}" + (f": {result.error}" if result.error else ""))

    def roll_back(self, entry: Any, result: HostResult, stopped_at: str) -> None:
        if result.from_version is None:
            result.rollback = "no previous version recorded on this host; not rolled back"
            self.say(f"[{entry.name}] {result.rollback}")
            return
        body = self.body(result.wave or 0, 0, f"rolled back: the rollout stopped at {stopped_at}")
        body["to"] = str(result.from_version)
        client = self.client(entry)
        model = quote(self.args.model, safe="")
        try:
            dep = call(
                client,
                "POST",
                f"/api/v1/models/{model}/rollback",
                body,
                self.operator,
                refused=(400, 401, 403, 404, 409),
            )["deployment"]
            result.rollback_deployment = dep["id"]
            dep = self.follow(client, entry.name, dep)
            result.rollback = "rolled_back" if dep["state"] == "promoted" else str(dep["state"])
        except (BadRequest, AgentUnreachable) as exc:
            result.rollback = f"failed: {printable(str(exc))}"
        self.say(f"[{entry.name}] rollback: {result.rollback}")


def select(entries: Sequence[Any], args: argparse.Namespace) -> list[Any]:
    """The members ``--hosts`` and ``--group`` name (fleet-file labels over the agent's own,
    read from its status only when the file does not settle a label)."""
    hosts: list[str] = args.hosts or []
    chosen = [e for e in entries if not hosts or any(fnmatch.fnmatch(e.name, h) for h in hosts)]
    want = parse_selectors(args.group or [])
    out = []
    for e in chosen:
        given = dict(e.labels)
        if want and not all(k in given for k in want):
            if e.is_ssh:
                raise UsageError(f"{e.name}: {SSH_REFUSED}")
            try:
                served = read_labels(
                    ApiClient(e.url, e.token or "", e.timeout_s, ssl_context=e.ssl_context)
                    .get("/api/v1/status")
                    .get("labels")
                )
            except AgentUnreachable as exc:
                raise UsageError(f"{e.name}: cannot read its labels: {exc}") from None
            labels = merge_labels(served, tuple(e.labels))
        else:
            labels = merge_labels({}, tuple(e.labels))
        if all(labels.get(k) == v for k, v in want.items()):
            if e.is_ssh:
                raise UsageError(f"{e.name}: {SSH_REFUSED}")
            out.append(e)
    return out


def fleet_deploy_command(args: argparse.Namespace, operator: str) -> int:
    """Roll ``args.model`` to ``args.artifact`` across the fleet; 0 all promoted, 1 stopped at
    a failed host, 2 usage."""
    from tui.fleet import FleetError, load_fleet

    if args.url or args.token_file:
        print("vigil: --fleet names every agent: drop --url and --token-file", file=sys.stderr)
        return EXIT_USAGE
    artifact: Path = args.artifact
    if not artifact.is_absolute():
        print(
            f"vigil: --artifact {artifact}: expected an absolute path, the same on every host",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        entries = select(load_fleet(args.fleet), args)
        if not entries:
            raise UsageError(f"no member of {args.fleet} matches the selection")
        sizes = parse_waves(args.waves, len(entries))
    except (FleetError, UsageError) as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ro = Rollout(args, operator)
    results = {e.name: HostResult(e.name, e.url) for e in entries}
    ro.say(
        f"fleet rollout {ro.id}: {printable(args.model)} to {artifact} on {len(entries)} "
        f"hosts in {len(sizes)} waves ({', '.join(map(str, sizes))})"
    )
    start = 0
    with ThreadPoolExecutor(max_workers=MAX_PARALLEL) as pool:
        for w, size in enumerate(sizes, 1):
            wave = entries[start : start + size]
            start += size
            ro.say(f"wave {w}/{len(sizes)}: {', '.join(e.name for e in wave)}")
            list(pool.map(lambda e, w=w: ro.deploy_host(e, results[e.name], w, len(sizes)), wave))
            if ro.failed.is_set():
                break
        failed = [r for r in results.values() if r.outcome not in ("promoted", "not_started")]
        if failed:
            stopped = failed[0].name
            left = [r.name for r in results.values() if r.outcome == "not_started"]
            ro.say(
                f"stopped at {stopped}: {failed[0].outcome}"
                + (f"; not started: {', '.join(left)}" if left else "")
            )
            if args.rollback_done:
                done = [e for e in entries if results[e.name].outcome == "promoted"]
                list(pool.map(lambda e: ro.roll_back(e, results[e.name], stopped), done))
    if args.json:
        summary = {
            "rollout": ro.id,
            "model": args.model,
            "artifact": str(artifact),
            "waves": sizes,
            "ok": not failed,
            "hosts": [asdict(r) for r in results.values()],
        }
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        for r in results.values():
            print(
                f"  {r.name:24} {r.outcome:12} "
                + (f"#{r.deployment} " if r.deployment else "")
                + (f"rollback: {r.rollback}" if r.rollback else "")
            )
    return EXIT_FAILURE if failed else EXIT_OK
