"""``vigil canary``: run a model's canary now, N times, print a verdict and the figures.

Two ways, told apart by whether a MODEL is named:

- ``vigil canary MODEL [--count N]``: through the agent (``POST /api/v1/models/{name}/canary``),
  with the model's own probe and canary; each run is recorded like any other. ``--url``,
  ``--token-file`` and ``--config`` find the agent, as for every other command.
- ``vigil canary --url URL --protocol P --model-name NAME [options]``: in this process, against
  any server, with no agent: a pre-deploy pipeline step against a staging server. The canary
  options come from ``--config FILE`` (that file's ``[[model]]`` named ``--model-name``: its
  protocol, canary, timeout and API key) and ``--input-json`` (a ``[model.canary]`` table as
  JSON, over the file's); ``--max-latency``, ``--expect-json`` and ``--golden`` add to what a
  pass needs (:mod:`agent.deploy.canarycheck`).

Exit codes: 0 the canary passed; 1 it failed (a server that cannot be reached is a failed
canary too); 2 a usage error, or, through the agent, an agent that cannot be reached or refuses
(an unknown model): the canary did not run, which a pipeline must not read as a verdict.
Every text a server or the agent sends back is made printable before it reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agent.cli.alerts_cmd import BadRequest, call
from agent.cli.api_client import AgentUnreachable, connect
from agent.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from agent.config import FILE_PROTOCOLS, ConfigError, ModelConfig, load_config
from storage.text import printable
from storage.units import parse_duration

if TYPE_CHECKING:
    from agent.deploy.canarycheck import CanaryCriteria

__all__ = ["add_parser", "run"]

# The probes and the verdict (agent.deploy.canarycheck) are imported when a canary runs, not
# when the command line is parsed: every other command would pay for them.
MAX_COUNT = 100
"""As agent.deploy.canarycheck.MAX_COUNT (a test checks): most runs one canary asks for."""

SERVER_ONLY = (
    ("protocol", "--protocol"),
    ("model_name", "--model-name"),
    ("input_json", "--input-json"),
    ("max_latency", "--max-latency"),
    ("timeout", "--timeout"),
    ("expect_json", "--expect-json"),
    ("golden", "--golden"),
    ("api_key_env", "--api-key-env"),
)
"""Options of a canary against a server (no MODEL); through the agent, its config says."""
DEFAULT_TIMEOUT_S = 5.0


class Usage(Exception):
    """A usage error: the message names the option and what was expected."""


def add_parser(sub: Any) -> None:
    """``vigil canary``'s options (``sub``: the top-level subparsers)."""
    p = sub.add_parser(
        "canary",
        help="run a model's canary now, N times: a verdict and the figures (exit 0 pass, "
        "1 fail); through the agent, or against any server with --url",
        description="Runs a model's canary now, N times, and prints a verdict and the figures. "
        "With MODEL: through the agent, with the model's own canary. Without: against the "
        "server at --url, in this process, no agent (a pre-deploy pipeline step). Exits 0 "
        "when it passed, 1 when it failed, 2 on a usage error or an agent it cannot reach.",
    )
    p.add_argument(
        "model",
        nargs="?",
        help="the [[model]] to run through the agent; leave it out to probe --url directly",
    )
    p.add_argument(
        "--count", type=int, default=5, help=f"how many runs, one after another (1-{MAX_COUNT})"
    )
    p.add_argument("--json", action="store_true", help="print the verdict and runs as JSON")
    p.add_argument(
        "--url",
        help="with MODEL: the agent's API URL (default: the local agent); without: the model "
        "server to probe (http(s)://HOST:PORT, tcp://HOST:PORT for tcp)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="with MODEL: file holding the agent's bearer token (default: the data dir's "
        "api-token, or $VIGIL_TOKEN)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="with MODEL: the agent config, to find the agent; without: a config file whose "
        "[[model]] named --model-name gives the protocol, canary, timeout and API key",
    )
    p.add_argument(
        "--protocol", help="without MODEL: the probe protocol (kserve_v2, openai, ollama, ...)"
    )
    p.add_argument(
        "--model-name",
        dest="model_name",
        help="without MODEL: the model's name on the server, and the [[model]] of --config",
    )
    p.add_argument(
        "--input-json",
        dest="input_json",
        metavar="JSON",
        help="without MODEL: the canary's [model.canary] options as a JSON object (or @FILE), "
        'e.g. \'{"prompt": "2+2=", "max_tokens": 4}\' or KServe inputs',
    )
    p.add_argument(
        "--max-latency",
        dest="max_latency",
        metavar="DURATION",
        help="without MODEL: fail a run slower than this end to end, e.g. 500ms",
    )
    p.add_argument(
        "--timeout",
        metavar="DURATION",
        help=f"without MODEL: each run's timeout (default: --config's, else "
        f"{DEFAULT_TIMEOUT_S:g}s)",
    )
    p.add_argument(
        "--expect-json",
        dest="expect_json",
        metavar="JSON",
        help="without MODEL: the answer every run must give, as JSON: a string for LLM "
        "protocols, the output tensors for kserve_v2",
    )
    p.add_argument(
        "--golden",
        type=Path,
        metavar="FILE",
        help="without MODEL: a file holding that expected answer (e.g. `--json | jq "
        "'.runs[0].answer'` of a run against a known-good server)",
    )
    p.add_argument(
        "--api-key-env",
        dest="api_key_env",
        metavar="NAME",
        help="without MODEL: the environment variable holding the server's API key",
    )


# --- through the agent -----------------------------------------------------------------------


def _through_agent(args: argparse.Namespace, operator: str) -> int:
    given = [flag for attr, flag in SERVER_ONLY if getattr(args, attr) is not None]
    if given:
        raise Usage(
            f"{given[0]} is for a canary against a server without an agent (no MODEL); "
            f"through the agent, model {args.model!r} runs its own canary from the agent's config"
        )
    try:
        # Runs go one after another, each within the model's timeout: be patient.
        client = connect(args, timeout_s=30.0 + 65.0 * args.count)
    except AgentUnreachable as exc:
        raise Usage(str(exc)) from None
    path = f"/api/v1/models/{quote(args.model, safe='')}/canary"
    try:
        body = call(client, "POST", path, {"count": args.count}, operator)
    except BadRequest as exc:
        raise Usage(f"refused: {exc}") from None
    except AgentUnreachable as exc:
        raise Usage(str(exc)) from None
    return _report(body["report"], args.json, through_agent=True)


# --- against a server, no agent ---------------------------------------------------------------


def _json_arg(flag: str, raw: str) -> Any:
    """A JSON option's value: inline, or ``@FILE``."""
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise Usage(f"{flag} {raw}: cannot read {raw[1:]}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Usage(f"{flag}: not JSON: {exc}") from None


def _duration_s(flag: str, raw: str) -> float:
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise Usage(f"{flag}: {exc}") from None
    if not 0 < seconds <= 3600:
        raise Usage(f"{flag}: expected a duration above 0 and at most 1h, got {raw!r}")
    return seconds


def _check_url(protocol: str, url: str) -> None:
    if protocol == "tcp":
        ok, want = url.startswith("tcp://"), "tcp://HOST:PORT"
    elif protocol in FILE_PROTOCOLS:
        ok, want = url.startswith("file:///"), "file:///ABSOLUTE/PATH"
    else:
        ok, want = url.startswith(("http://", "https://")), "an http:// or https:// URL"
    if not ok:
        raise Usage(f"--url: expected {want} for protocol {protocol}, got {url!r}")


def _from_config(path: Path, name: str) -> ModelConfig:
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise Usage(f"config refused: {exc}") from None
    for m in config.models:
        if m.name == name:
            return m
    known = ", ".join(m.name for m in config.models) or "none"
    raise Usage(f"--model-name {name!r}: no such [[model]] in {path}; known: {known}")


def _server_model(args: argparse.Namespace) -> ModelConfig:
    """The model to probe, from the options (and --config's [[model]])."""
    from probes.base import OptionError
    from probes.registry import probe_for

    if not args.url:
        raise Usage(
            "expected a MODEL to run through the agent, or --url URL (and --protocol, "
            "--model-name) to probe a server directly"
        )
    if not args.model_name:
        raise Usage("--model-name: required without MODEL: the model's name on the server")
    base = _from_config(args.config, args.model_name) if args.config else None
    protocol = args.protocol or (base.protocol if base else None)
    if protocol is None:
        raise Usage("--protocol: required without --config (kserve_v2, openai, ollama, ...)")
    try:
        cls = probe_for(protocol)
    except KeyError as exc:
        raise Usage(f"--protocol: {exc.args[0]}") from None
    if base is not None and base.protocol != protocol:
        raise Usage(
            f"--protocol {protocol}: model {base.name!r} in {args.config} speaks "
            f"{base.protocol}; its canary options would not fit"
        )
    _check_url(protocol, args.url)
    canary = dict(base.canary) if base is not None else {}
    if args.input_json is not None:
        extra = _json_arg("--input-json", args.input_json)
        if not isinstance(extra, dict):
            raise Usage("--input-json: expected a JSON object of [model.canary] options")
        canary.update(extra)
    try:
        cls.check_options(canary)
    except OptionError as exc:
        raise Usage(f"canary option {exc.field or '?'}: {exc}") from None
    timeout = base.timeout_s if base is not None else DEFAULT_TIMEOUT_S
    if args.timeout is not None:
        timeout = _duration_s("--timeout", args.timeout)
    api_key = base.api_key if base is not None else None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env, "").strip() or None
        if api_key is None:
            raise Usage(f"--api-key-env: the environment variable {args.api_key_env} is unset")
    fields: dict[str, Any] = {
        "url": args.url,
        "timeout_s": timeout,
        "canary": canary,
        "api_key": api_key,
    }
    if base is not None:
        return dataclasses.replace(base, **fields)
    return ModelConfig(name=args.model_name, protocol=protocol, **fields)


def _criteria(args: argparse.Namespace, protocol: str) -> CanaryCriteria:
    from agent.deploy.canarycheck import CanaryCriteria, check_expected

    if args.expect_json is not None and args.golden is not None:
        raise Usage("--expect-json and --golden both give the expected answer: give one")
    expected = None
    if args.expect_json is not None:
        expected = _json_arg("--expect-json", args.expect_json)
    elif args.golden is not None:
        expected = _json_arg("--golden", f"@{args.golden}")
    if expected is not None:
        try:
            check_expected(protocol, expected)
        except ValueError as exc:
            raise Usage(str(exc)) from None
    max_ms = None
    if args.max_latency is not None:
        max_ms = _duration_s("--max-latency", args.max_latency) * 1000
    return CanaryCriteria(max_latency_ms=max_ms, expected=expected)


def _against_server(args: argparse.Namespace) -> int:
    from agent.deploy.canarycheck import judge, run_canaries

    model = _server_model(args)
    criteria = _criteria(args, model.protocol)
    runs = asyncio.run(run_canaries(model, args.count))
    report = judge(model.name, model.protocol, model.url, runs, criteria)
    return _report(report.to_json(), args.json, through_agent=False)


# --- output ------------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g} ms"


def _report(doc: dict[str, Any], as_json: bool, *, through_agent: bool) -> int:
    passed = doc.get("verdict") == "pass"
    if as_json:
        print(json.dumps({**doc, "through_agent": through_agent}, indent=2, sort_keys=True))
        return EXIT_OK if passed else EXIT_FAILURE
    where = "through the agent" if through_agent else f"at {printable(doc['url'])}"
    print(
        f"canary {printable(doc['model'])} {where} ({printable(doc['protocol'])}): "
        f"{'PASS' if passed else 'FAIL'}, {doc['ok']}/{doc['count']} ok"
    )
    e2e, ttft = doc.get("e2e_ms") or {}, doc.get("ttft_ms") or {}
    figures = f"  e2e p50 {_ms(e2e.get('p50'))}, p95 {_ms(e2e.get('p95'))}"
    if ttft.get("p50") is not None:
        figures += f"; TTFT p50 {_ms(ttft.get('p50'))}, p95 {_ms(ttft.get('p95'))}"
    if doc.get("tokens_per_s_p50") is not None:
        figures += f"; {float(doc['tokens_per_s_p50']):.4g} tokens/s (median)"
    print(figures)
    for f in doc.get("failures") or []:
        print(f"  run {f['run']}: {printable(f['category'])}: {printable(f['error'])}")
    return EXIT_OK if passed else EXIT_FAILURE


def run(args: argparse.Namespace, operator: str) -> int:
    """``vigil canary``; ``operator`` (user@host) is who asks the agent."""
    try:
        if not 1 <= args.count <= MAX_COUNT:
            raise Usage(f"--count: expected a whole number from 1 to {MAX_COUNT}, got {args.count}")
        if args.model is not None:
            return _through_agent(args, operator)
        return _against_server(args)
    except (Usage, ConfigError) as exc:
        print(f"vigil: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
