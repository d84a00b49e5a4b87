"""The fleet file: what is accepted, and how a bad one is refused (file, line, field)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from tui.fleet import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, FleetError, load_fleet
from tui.remote.ssh import SshAddress


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(FleetError) as info:
        load_fleet(write(tmp_path, text))
    return str(info.value)


def test_a_full_fleet_file(tmp_path: Path) -> None:
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "gpu-01").write_text("tok-01\n")
    path = write(
        tmp_path,
        """
[defaults]
timeout = "2s"

[[agent]]
name = "gpu-01"
url = "http://10.0.0.11:8470/"
token_file = "tokens/gpu-01"      # relative to this file

[[agent]]
name = "gpu-02"
url = "https://gpu-02.internal:8470"
token = "  tok-02 "
timeout = "500ms"

[[agent]]
name = "gpu-03"
url = "ssh://ops@gpu-03.internal:2222"
data_dir = "/var/lib/vigil"
ssh_options = ["-J", "bastion"]
connect_timeout = "30s"
""",
    )
    one, two, three = load_fleet(path)
    assert (one.name, one.url, one.token, one.timeout_s) == (
        "gpu-01",
        "http://10.0.0.11:8470",
        "tok-01",
        2.0,
    )
    assert not one.is_ssh
    assert (two.token, two.timeout_s) == ("tok-02", 0.5)
    assert three.is_ssh and three.token is None
    assert three.ssh_options == ("-J", "bastion")
    assert (three.timeout_s, three.connect_timeout_s) == (2.0, 30.0)
    assert three.ssh_address() == SshAddress(
        host="gpu-03.internal", user="ops", port=2222, data_dir="/var/lib/vigil"
    )
    # The token never shows in a repr (reprs reach logs and tracebacks).
    assert "tok-02" not in repr(two)


def test_defaults_apply_and_an_agent_overrides_them(tmp_path: Path) -> None:
    (tmp_path / "read-token").write_text("shared\n")
    entries = load_fleet(
        write(
            tmp_path,
            """
[defaults]
token_file = "read-token"
[[agent]]
name = "a"
url = "http://127.0.0.1:1"
[[agent]]
name = "b"
url = "http://127.0.0.1:2"
token = "own"
[[agent]]
name = "c"
url = "ssh://c"
""",
        )
    )
    assert [e.token for e in entries] == ["shared", "own", "shared"]
    assert entries[0].timeout_s == DEFAULT_TIMEOUT_S
    assert entries[2].connect_timeout_s == DEFAULT_CONNECT_TIMEOUT_S


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[[agent]]\nname = 'a'\nurl = 'ftp://x'\ntoken = 't'\n",
            ":3: agent[0].url: expected http",
        ),
        ("[[agent]]\nname = 'a'\nurl = 'http://x:1'\n", ":1: agent[0].token: required for an http"),
        ("[[agent]]\nurl = 'http://x:1'\ntoken = 't'\n", ":1: agent[0].name: required"),
        ("[[agent]]\nname = 'a'\ntoken = 't'\n", "agent[0].url: required"),
        (
            "[[agent]]\nname = 'a'\nurl = 'http://x:1'\ntoken = 't'\n"
            "[[agent]]\nname = 'a'\nurl = 'http://y:1'\ntoken = 't'\n",
            ":6: agent[1].name: 'a' is already the name of agent[0]",
        ),
        (
            "[[agent]]\nname = 'a'\nurl = 'http://x:1'\ntoken = 't'\ntimeout = 3\n",
            ":5: agent[0].timeout: expected a positive duration",
        ),
        (
            "[[agent]]\nname = 'a'\nurl = 'http://x:1'\ntoken = 't'\nurll = 'x'\n",
            ":5: agent[0].urll: unknown key in [[agent]]; expected one of: ca, connect_timeout",
        ),
        (
            "[[agent]]\nname = 'a'\nurl = 'http://x:1'\ntoken = 't'\ndata_dir = '/d'\n",
            ":5: agent[0].data_dir: only for ssh:// agents",
        ),
        (
            "[[agent]]\nname = 'a'\nurl = 'ssh://h'\nssh_options = '-J b'\n",
            ":4: agent[0].ssh_options: expected a list of strings",
        ),
        ("[[agent]]\nname = 'a'\nurl = 'ssh://-oProxyCommand=x'\n", "bad host name"),
        ("[[agent]]\nname = 'bad name'\nurl = 'ssh://h'\n", ":2: agent[0].name: expected 1-64"),
        (
            "[[agent]]\nname = 'a'\nurl = 'http://x:1'\ntoken = 't'\ntoken_file = 'f'\n",
            "agent[0].token_file: give token or token_file, not both",
        ),
        ("[defaults]\ntimeout = 'soon'\n[[agent]]\nname = 'a'\nurl = 'ssh://h'\n", ":2: defaults"),
        ("[[agnet]]\nname = 'a'\n", "agnet: unknown key; expected [defaults] and [[agent]]"),
        ("", "agent: no agents"),
        ("[[agent]\n", "invalid TOML"),
    ],
)
def test_bad_files_are_refused_with_file_line_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = refused(tmp_path, text)
    assert message.startswith(str(tmp_path / "fleet.toml"))
    assert expected in message


def test_a_missing_token_file_is_refused_at_load(tmp_path: Path) -> None:
    message = refused(tmp_path, "[[agent]]\nname = 'a'\nurl = 'http://x:1'\ntoken_file = 'nope'\n")
    assert f":4: agent[0].token_file: cannot read {tmp_path / 'nope'}" in message


def test_a_missing_fleet_file(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=r"cannot read fleet file .*missing\.toml"):
        load_fleet(tmp_path / "missing.toml")


def test_cli_exits_2_on_a_bad_fleet_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[[agent]]\nname = 'a'\nurl = 'http://x:1'\n")
    assert main(["tui", "--fleet", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vigil: fleet refused: {path}:1: agent[0].token: required")
    assert main(["tui", "--url", "ssh://-oProxyCommand=x"]) == 2
    assert "bad host name" in capsys.readouterr().err
    assert main(["tui", "--fleet", str(path), "--url", "http://x:1"]) == 2
    assert "drop --url" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("ssh://gpu", SshAddress("gpu")),
        ("ssh://Gpu-01.Internal", SshAddress("Gpu-01.Internal")),
        ("ssh://ops@gpu:2222", SshAddress("gpu", "ops", 2222)),
        ("ssh://gpu/var/lib/vigil/", SshAddress("gpu", data_dir="/var/lib/vigil")),
        ("ssh://gpu/~/state/vigil", SshAddress("gpu", data_dir="~/state/vigil")),
        ("ssh://[::1]:22", SshAddress("::1", port=22)),
    ],
)
def test_ssh_addresses(url: str, address: SshAddress) -> None:
    assert SshAddress.parse(url) == address


@pytest.mark.parametrize(
    "url",
    ["ssh://", "ssh://h?x=1", "ssh://u:pw@h", "ssh://-J@h", "ssh://h;rm", "http://h", "ssh://h:x"],
)
def test_bad_ssh_addresses(url: str) -> None:
    with pytest.raises(ValueError, match="expected ssh://"):
        SshAddress.parse(url)


@pytest.mark.parametrize("timeout", ["200y", "99999999999999999999999y"])
def test_a_timeout_beyond_a_century_is_refused(tmp_path: Path, timeout: str) -> None:
    message = refused(
        tmp_path,
        f"[defaults]\nconnect_timeout = '{timeout}'\n[[agent]]\nname = 'a'\nurl = 'ssh://h'\n",
    )
    assert (
        f":2: defaults.connect_timeout: expected a duration of at most 100y, got '{timeout}'"
        in message
    )


def test_an_unknown_key_in_defaults_names_the_table(tmp_path: Path) -> None:
    message = refused(tmp_path, "[defaults]\nname = 'x'\n[[agent]]\nname = 'a'\nurl = 'ssh://h'\n")
    assert (
        ":2: defaults.name: unknown key in [defaults]; expected one of: ca, connect_timeout"
        in message
    )
