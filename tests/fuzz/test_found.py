"""What the fuzzers found, each input once a crash (an exception other than the documented one),
kept as a plain regression test so it is checked whatever the fuzzers draw next time."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from agent.config import ConfigError, parse_config
from agent.config.alerting.routes import Matcher
from agent.serve.httpserver import Limits, _Refused, parse_head
from probes.base import Probe, ProbeTarget
from probes.common import is_number
from probes.httpclient import HttpClient
from probes.kserve_v2 import compare_output, generate_inputs
from probes.ollama import OllamaProbe
from probes.openai import OpenAIProbe
from probes.promtext import ExpositionError, Value, parse_exposition, select, total
from probes.streamparse import NDJSONParser, StreamFormatError
from probes.tgi import TgiProbe
from storage.records import Event, ProbeRun
from storage.writer import Writer
from tests.fuzz.canned import Canned, CannedServer, check_storable
from tests.fuzz.httpraw import exchange
from tests.fuzz.support import deadline
from tests.helpers import RunningAgent
from tui.fleet import FleetError, parse_fleet

MODEL = '[[model]]\nname = "m"\nprotocol = "{protocol}"\nurl = "{url}"\n'
OPENAI = MODEL.format(protocol="openai", url="http://127.0.0.1:8000")
METRICS = MODEL.format(protocol="metrics", url="http://127.0.0.1:8000/metrics")
PROC = '[[process]]\nname = "p"\n'


@pytest.mark.parametrize(
    ("text", "field", "said"),
    [
        # TypeError: unhashable type: 'list' (the channel type looked up in a dict)
        (
            '[[notify]]\nname = "n"\ntype = ["webhook"]\n',
            "notify[0].type",
            "unknown channel type",
        ),
        # TypeError: unhashable type: 'list' (the preset looked up in a dict)
        (METRICS + "canary = { preset = [] }\n", "model[0].canary.preset", "expected one of"),
        # RuntimeError: Could not determine home directory (Path.expanduser)
        ('[agent]\ndata_dir = "~no-such-user-here/v"\n', "agent.data_dir", "names no user"),
        (PROC + 'command = ["x"]\ncwd = "~no-such-user-here"\n', "process[0].cwd", "no user"),
        (OPENAI + 'api_key_file = "~no-such-user-here/k"\n', "api_key_file", "no user"),
        # ValueError: embedded null byte (pwd.getpwnam, open)
        (PROC + 'command = ["x"]\nuser = "a\\u0000b"\n', "process[0].user", "expected a user"),
        (OPENAI + 'api_key_file = "/tmp/k\\u0000"\n', "model[0].api_key_file", "NUL"),
        # accepted, then a ValueError where the OS is handed the NUL (spawn, environment)
        (PROC + 'command = ["x\\u0000"]\n', "process[0].command[0]", "NUL"),
        (PROC + 'command = ["x"]\nenv = { "A\\u0000" = "b" }\n', "process[0].env", "NUL"),
        # OverflowError and RecursionError from re.compile (only re.error was caught)
        (
            PROC + 'match = "a{99999999999}"\nrestart = "never"\n',
            "process[0].match",
            "regular expression",
        ),
        (
            PROC + 'match = "' + "(" * 2000 + '"\nrestart = "never"\n',
            "process[0].match",
            "regular expression",
        ),
        # OverflowError from min_good_canaries x interval in the bake check (found by make fuzz)
        (
            OPENAI
            + 'process = "p"\ndeploy = { link = "/srv/m", min_good_canaries = 1'
            + "0" * 400
            + ' }\n[[process]]\nname = "p"\ncommand = ["x"]\n',
            "model[0].deploy.min_good_canaries",
            "at most 10^15",
        ),
        # ValueError: embedded null byte from ssl.create_default_context (found by make fuzz)
        (
            MODEL.format(protocol="http", url="https://127.0.0.1/health")
            + 'canary = { tls_ca_file = "/etc/ca\\u0000.pem" }\n',
            "model[0].canary.tls_ca_file",
            "CA bundle",
        ),
        (
            OPENAI + 'canary = { expect_regex = "x{99999999999}" }\n',
            "model[0].canary.expect_regex",
            "regular expression",
        ),
    ],
    ids=[
        "notify-type-list",
        "scrape-preset-list",
        "data-dir-unknown-user",
        "cwd-unknown-user",
        "api-key-file-unknown-user",
        "user-nul",
        "api-key-file-nul",
        "command-nul",
        "env-key-nul",
        "match-huge-repeat",
        "match-deep-groups",
        "min-good-canaries-400-digits",
        "tls-ca-file-nul",
        "expect-regex-huge-repeat",
    ],
)
def test_config_refused_not_crashed(text: str, field: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/vigil/vigil.toml")
    assert field in str(info.value) and said in str(info.value), str(info.value)


def test_silence_matcher_regex_too_large_is_a_value_error() -> None:
    # The API's silence route and [[alert]] routes parse matchers; an OverflowError was a 500.
    with pytest.raises(ValueError, match="regex"):
        Matcher.parse("model=~a{99999999999}")


@pytest.mark.parametrize(
    ("token_file", "said"),
    [
        ("tok\\u0000en", "NUL"),  # ValueError: embedded null byte
        ("~no-such-user-here/token", "names no user"),  # RuntimeError from expanduser
    ],
)
def test_fleet_token_file_refused_not_crashed(tmp_path: Path, token_file: str, said: str) -> None:
    text = f'[[agent]]\nname = "a"\nurl = "http://10.0.0.1:8470"\ntoken_file = "{token_file}"\n'
    with pytest.raises(FleetError, match=said) as info:
        parse_fleet(text, tmp_path / "fleet.toml")
    assert "agent[0].token_file" in str(info.value)


# --- the HTTP server and the API ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "status"),
    [
        (b"\xb2", 400),  # latin-1 "²": str.isdigit() said yes, int() raised ValueError
        (b"9" * 5000, 413),  # int() refuses 4,300 digits: ValueError
        (b"99999999999999999999", 413),
    ],
    ids=["superscript-two", "5000-digits", "20-digits"],
)
def test_content_length_refused_not_crashed(length: bytes, status: int) -> None:
    # The ValueError escaped parse_head: the connection was closed unanswered, with a traceback.
    head = b"POST /api/v1/silences HTTP/1.1\r\nHost: h\r\nContent-Length: " + length + b"\r\n\r\n"
    with pytest.raises(_Refused) as info:
        parse_head(head, Limits())
    assert info.value.status == status


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "target", "body", "status"),
    [
        # RecursionError from json.loads: 500
        ("POST", "/api/v1/silences", b"[" * 100_000, 400),
        ("POST", "/api/v1/models/m1/canary", b'{"a":' * 50_000, 400),
        ("POST", "/api/v1/models/m1/deploy", b"[" * 100_000, 400),
        ("GET", "/api/v1/series?name=x&labels=" + "%5B" * 2000, b"", 400),
        # OverflowError from float() of a 400-digit integer: 500
        ("POST", "/api/v1/models/m1/rollback", b'{"bake": 1' + b"0" * 400 + b"}", 400),
        (
            "POST",
            "/api/v1/silences",
            b'{"matchers": ["a=b"], "comment": "c", "duration": 1' + b"0" * 400 + b"}",
            400,
        ),
        # OverflowError from re.compile of a silence matcher: 500
        (
            "POST",
            "/api/v1/silences",
            b'{"matchers": ["model=~a{99999999999}"], "duration": "1h", "comment": "c"}',
            400,
        ),
        # isdigit() then int(): ValueError (superscript two), or SQLite's OverflowError: 500
        ("GET", "/api/v1/processes/sleeper/logs?lines=%C2%B2", b"", 400),
        ("GET", "/api/v1/events?since=%C2%B2", b"", 400),
        ("GET", "/api/v1/events?since=--5", b"", 400),
        ("GET", "/api/v1/series?name=x&since=99999999999999999999", b"", 400),
        ("GET", "/api/v1/deployments/99999999999999999999", b"", 404),
        ("POST", "/api/v1/deployments/%C2%B2/approve", b"", 404),
        ("GET", "/api/v1/deployments?limit=%C2%B2", b"", 400),
    ],
    ids=[
        "silence-deep-array",
        "canary-deep-object",
        "deploy-deep-array",
        "series-labels-deep-array",
        "rollback-bake-400-digits",
        "silence-duration-400-digits",
        "silence-regex-huge-repeat",
        "logs-lines-superscript",
        "events-since-superscript",
        "events-since-double-minus",
        "series-since-20-digits",
        "deployment-id-20-digits",
        "approve-id-superscript",
        "deployments-limit-superscript",
    ],
)
def test_api_refuses_not_500(
    agent: RunningAgent, method: str, target: str, body: bytes, status: int
) -> None:
    split = urlsplit(agent.url)
    assert split.hostname is not None and split.port is not None
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        f"Authorization: Bearer {agent.token}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answer = exchange((split.hostname, split.port), request)
    assert answer.status == status, answer.body[:300]
    assert isinstance(answer.json()["error"], str)


# --- the probes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedServer]:
    server = CannedServer()
    yield server
    server.close()


def run_once(probe: Probe) -> ProbeRun:
    async def once() -> ProbeRun:
        async with HttpClient() as session:
            return await asyncio.wait_for(probe.run(session), 10)

    run = asyncio.run(once())
    check_storable(run)  # an output_tokens over 64 bits made the writer's INSERT fail
    return run


HUGE = 10**400


@pytest.mark.parametrize("tokens", [2**63, HUGE], ids=["2**63", "10**400"])
def test_openai_usage_too_large_is_not_a_count(canned: CannedServer, tokens: int) -> None:
    answer = {"choices": [{"message": {"content": "Hello"}}], "usage": {"completion_tokens": 0}}
    body = json.dumps(answer).replace('"completion_tokens": 0', f'"completion_tokens": {tokens}')
    canned.routes = {"/v1/chat/completions": Canned(body.encode())}
    options = {"model": "m", "stream": False, "check_models": False}
    run = run_once(OpenAIProbe(ProbeTarget("m", canned.url, 3.0, options)))
    assert run.ok and run.output_tokens is None


def test_ollama_counts_too_large_are_ignored(canned: CannedServer) -> None:
    final = f'{{"response": "", "done": true, "eval_count": {2**63}, "eval_duration": {HUGE}}}'
    canned.routes = {
        "/api/generate": Canned(b'{"response": "Hi", "done": false}\n' + final.encode())
    }
    probe = OllamaProbe(ProbeTarget("m", canned.url, 3.0, {"model": "m", "check_tags": False}))
    run = run_once(probe)  # OverflowError from eval_count / (eval_duration / 1e9) before
    assert run.ok and run.output_tokens == 1


def test_tgi_generated_tokens_too_large_is_ignored(canned: CannedServer) -> None:
    final = {"token": {"text": "Hi"}, "generated_text": "Hi", "details": {"generated_tokens": 0}}
    data = json.dumps(final).replace('"generated_tokens": 0', f'"generated_tokens": {2**63}')
    canned.routes = {"/generate_stream": Canned(f"data: {data}\n\n".encode())}
    run = run_once(TgiProbe(ProbeTarget("m", canned.url, 3.0, {"check_health": False})))
    assert run.ok and run.output_tokens == 1


def test_deeply_nested_json_is_a_protocol_error(canned: CannedServer) -> None:
    # RecursionError from json.loads escaped parse_json: the probe raised instead of a run.
    canned.routes = {"/v1/models": Canned(b"[" * 100_000)}
    run = run_once(OpenAIProbe(ProbeTarget("m", canned.url, 3.0, {"model": "m"})))
    assert run.category == "protocol_error"
    with pytest.raises(StreamFormatError):
        NDJSONParser().feed(b"[" * 100_000 + b"\n", 0)


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "x", "datatype": ["FP32"], "shape": [1]},  # TypeError: unhashable list
        {"name": "x", "datatype": "FP32", "shape": [None]},  # TypeError from int(None)
        {"name": "x", "datatype": "FP32", "shape": [1e400]},  # OverflowError from int(inf)
        {"name": "x", "datatype": "FP32", "shape": [100_000, 100_000]},  # 10**10 values built
    ],
    ids=["datatype-list", "shape-null", "shape-infinity", "shape-10e10"],
)
def test_kserve_metadata_refused_not_crashed(spec: dict[str, Any]) -> None:
    with deadline("generate_inputs", 5), pytest.raises(ValueError, match=r"metadata|configure"):
        generate_inputs({"inputs": [spec]})


def test_kserve_compare_output_odd_answers_are_mismatches() -> None:
    expect = {"name": "y", "shape": [1], "data": [0.5]}
    assert compare_output([{"name": "y", "shape": 1, "data": [0.5]}], expect)  # TypeError
    assert compare_output([{"name": "y", "shape": [1], "data": [HUGE]}], expect)  # Overflow
    assert not is_number(HUGE)  # math.isfinite raised OverflowError


def test_prometheus_oddities_refused_or_summed() -> None:
    # OverflowError from prometheus-client's timestamp division escaped parse_exposition.
    with pytest.raises(ExpositionError, match="line 1"):
        parse_exposition(f"m 1 {HUGE}\n")
    # OverflowError from math.fsum of finite values whose sum is not finite.
    values = [Value("m", (("i", "1"),), 1e308), Value("m", (("i", "2"),), 1e308)]
    assert total(values, "m") == math.inf


def test_maintenance_timezone_too_long_is_refused() -> None:
    # OSError (File name too long) from zoneinfo, found by `make fuzz`.
    text = (
        '[[maintenance]]\nname = "w"\nschedule = "0 2 * * sun"\nduration = "1h"\n'
        f'timezone = "{"a" * 100_000}"\n'
    )
    with pytest.raises(ConfigError, match="time zone"):
        parse_config(text)


def test_prometheus_integer_value_too_large_is_dropped() -> None:
    # The parser reads "1000...0" as an int; math.isfinite raised OverflowError on it.
    families = parse_exposition(f'# TYPE m gauge\nm {HUGE}\nm{{a="b"}} 2\n')
    assert [v.value for v in select(families, ["m"])] == [2.0]


def test_the_writer_keeps_the_events_behind_an_unstorable_run(tmp_path: Path) -> None:
    # check_storable's finding, one layer down: a run holding an integer over 64 bits failed
    # its batch with OverflowError, and the writer called itself with the same batch until a
    # RecursionError, losing the audit event committed with it.
    writer = Writer(tmp_path / "vigil.db", flush_interval_s=60.0)
    writer.start()
    try:
        writer.submit_one(ProbeRun("m", 1, True, "ok", output_tokens=2**63))
        writer.submit_one(Event(ts_ms=2, kind="agent.test", subject="agent", message="kept"))
        assert writer.flush()
        assert writer.stats.committed_events == 1 and writer.stats.dropped == 1
    finally:
        writer.close()
