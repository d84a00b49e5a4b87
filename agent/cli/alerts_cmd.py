"""``vigil alerts`` (list, silence, unsilence) and ``vigil notify test``: the agent's alerting
through its API (``/api/v1/alerts``, ``/api/v1/silences``, ``/api/v1/notify/{channel}/test``).

Every text the agent sends back (rule summaries, label values, a receiver's answer) is made
printable before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from agent.cli.api_client import AgentUnreachable, ApiClient, connect, connect_failure
from agent.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agent.cli.status_view import render_alerts
from agent.config import ConfigError
from storage.text import printable


class BadRequest(Exception):
    """The agent refused the request (HTTP 400, or another 4xx the caller names in ``call``'s
    ``refused``): a bad input or a state that does not allow it; the message is the agent's."""


def call(
    client: ApiClient,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    operator: str | None = None,
    *,
    refused: Collection[int] = (400,),
) -> Any:
    """One JSON request (any method, an optional JSON body) to the agent.

    Raises:
        BadRequest: the agent answered one of the ``refused`` codes (its message says which
            field and why). Deploys name 403/404/409 too: there those are the agent saying no
            (an unknown model, a deploy in flight), not a broken connection.
        AgentUnreachable: any other failure, with the reason.
    """
    if not client.url.startswith(("http://", "https://")):
        raise AgentUnreachable(f"not an http(s) URL: {client.url!r}")
    headers = {"Authorization": f"Bearer {client.token}"}
    if operator:
        headers["X-Vigil-Operator"] = operator
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    elif method != "GET":
        data = b""
    # The scheme is checked above, so urlopen cannot be steered to file: or others.
    req = urllib.request.Request(  # noqa: S310
        client.url + path, headers=headers, method=method, data=data
    )
    try:
        with urllib.request.urlopen(  # noqa: S310
            req, timeout=client.timeout_s, context=client.ssl_context
        ) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode("utf-8", "replace")[:300]
        try:
            detail = str(json.loads(raw)["error"])
        except (ValueError, KeyError, TypeError):
            detail = raw
        if exc.code in refused:
            raise BadRequest(printable(detail)) from None
        raise AgentUnreachable(
            f"{client.url}{path}: HTTP {exc.code}: {printable(detail)}"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
        raise connect_failure(client.url, exc, client.timeout_s) from None
    except ValueError as exc:
        raise AgentUnreachable(f"{client.url}{path}: not JSON: {exc}") from None


def failed(exc: BadRequest | AgentUnreachable | ConfigError) -> int:
    """Say why an API command failed; its exit status: 2 when the agent refused the request or
    the config is wrong (the input needs fixing), 1 when the agent was not reached."""
    if isinstance(exc, BadRequest):
        print(f"vigil: refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"vigil: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE


def firing(client: ApiClient) -> list[dict[str, Any]] | None:
    """The firing alerts for ``vigil status``; None when the agent does not say (an agent
    older than alerting, or one that cannot answer now): status is shown without them."""
    try:
        return list(call(client, "GET", "/api/v1/alerts?state=firing")["alerts"])
    except (AgentUnreachable, BadRequest, KeyError, TypeError):
        return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _list(client: ApiClient, args: argparse.Namespace) -> int:
    query = {"state": args.state} if getattr(args, "state", None) else {}
    path = "/api/v1/alerts" + (f"?{urlencode(query)}" if query else "")
    alerts = call(client, "GET", path)["alerts"]
    if getattr(args, "json", False):
        print(json.dumps(alerts, indent=2, sort_keys=True))
        return EXIT_OK
    if not alerts:
        print(
            "no alerts"
            + (f" {args.state}" if query else " pending, firing or resolved in the last hour")
        )
        return EXIT_OK
    print("\n".join(render_alerts(alerts, _now_ms())))
    return EXIT_OK


def _silence(client: ApiClient, args: argparse.Namespace, operator: str) -> int:
    body = {"matchers": list(args.matchers), "duration": args.duration, "comment": args.comment}
    silence = call(client, "POST", "/api/v1/silences", body, operator)["silence"]
    if args.json:
        print(json.dumps(silence, indent=2, sort_keys=True))
        return EXIT_OK
    until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(silence["ends_ms"] / 1000))
    matchers = " ".join(printable(m) for m in silence["matchers"])
    print(f"silence {printable(silence['id'])}: {matchers} until {until}")
    return EXIT_OK


def _unsilence(client: ApiClient, args: argparse.Namespace, operator: str) -> int:
    path = f"/api/v1/silences/{quote(args.id, safe='')}"
    silence = call(client, "DELETE", path, None, operator)["silence"]
    print(f"silence {printable(silence['id'])}: expired")
    return EXIT_OK


def _notify_test(client: ApiClient, args: argparse.Namespace, operator: str) -> int:
    path = f"/api/v1/notify/{quote(args.channel, safe='')}/test"
    answer = call(client, "POST", path, None, operator)
    status = f" (HTTP {answer['status']})" if answer.get("status") else ""
    verdict = "ok" if answer["ok"] else "FAILED"
    print(f"{printable(answer['channel'])}: {verdict}{status}: {printable(answer['detail'])}")
    return EXIT_OK if answer["ok"] else EXIT_FAILURE


def run(args: argparse.Namespace, operator: str) -> int:
    """``vigil alerts ...`` or ``vigil notify test``; ``operator`` (user@host) is recorded
    with every change."""
    try:
        client = connect(args)
        if args.command == "notify":
            return _notify_test(client, args, operator)
        sub = getattr(args, "alerts_command", None) or "list"
        if sub == "silence":
            return _silence(client, args, operator)
        if sub == "unsilence":
            return _unsilence(client, args, operator)
        return _list(client, args)
    except (BadRequest, AgentUnreachable, ConfigError) as exc:
        return failed(exc)
