"""What the fuzzers found, each input once a crash (an exception other than the documented one),
kept as a plain regression test so it is checked whatever the fuzzers draw next time."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.config import ConfigError, parse_config
from agent.config.alerting.routes import Matcher
from agent.serve.httpserver import Limits, _Refused, parse_head
from tests.fuzz.httpraw import exchange
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
