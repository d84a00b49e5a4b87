"""What the fuzzers found, each input once a crash (an exception other than the documented one),
kept as a plain regression test so it is checked whatever the fuzzers draw next time."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.config.alerting.routes import Matcher
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
