"""Names that reach terminals, HTML and logs are refused with control characters (issue 17,
defect 10): ``host = "a\\u001bb\\nc"`` used to pass, and went raw into every agent output that
did not escape it itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config

CFG = Path("/etc/vigil/test.toml")


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, CFG)
    return info.value


@pytest.mark.parametrize(
    "value",
    [
        r"a\u001bb\nc",  # the audit's own: ESC and a newline
        r"gpu\u001b]0;pwned\u0007",  # an OSC that retitles a terminal
        r"gpu-01\r",
        r"gpu\u0000",
        r"gpu\u009b2J",  # C1 CSI
        r"gpu\u007f",
        r"gpu\u2028x",  # a Unicode line separator
        r"gpu\u202e10-upg",  # a right-to-left override: shows a name that is not the one given
        r"gpu\u200b01",  # a zero-width space: two hosts that look the same
        "x" * 254,
    ],
)
def test_a_host_name_with_control_characters_is_refused(value: str) -> None:
    text = f'[agent]\nhost = "{value}"\n'
    err = refused(text)
    assert err.field == "agent.host"
    assert err.line == 2
    assert "expected a host name of 1-253 printable characters" in err.reason
    # The error itself is safe to print: the value is shown escaped.
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in str(err))


@pytest.mark.parametrize(
    "value", ["gpu-01", "gpu-01.example.com", "GPU node 1 (rack 4)", "x" * 253, "ノード-1"]
)
def test_ordinary_host_names_still_load(value: str) -> None:
    assert parse_config(f'[agent]\nhost = "{value}"\n', CFG).agent.host == value


def test_an_empty_host_name_still_means_this_machines() -> None:
    import socket

    assert parse_config('[agent]\nhost = ""\n', CFG).agent.host == socket.gethostname()


def test_a_route_name_with_control_characters_is_refused() -> None:
    text = (
        '[[notify]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:1/h"\n'
        '[[notify.route]]\nname = "pages\\u001b[2J"\n'
    )
    err = refused(text)
    assert err.field == "notify[0].route[0].name"
    assert "no control characters" in err.reason


def test_model_and_process_names_were_already_refused() -> None:
    # Checked by the schema's Name pattern since the start; kept here beside the host.
    err = refused('[[process]]\nname = "p\\u001b"\ncommand = ["x"]\n')
    assert err.field == "process[0].name"
    err = refused('[[model]]\nname = "m\\nx"\nprotocol = "tcp"\nurl = "tcp://h:1"\n')
    assert err.field == "model[0].name"
