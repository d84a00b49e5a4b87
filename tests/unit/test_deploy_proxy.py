"""The traffic switch's pieces without nginx: what may go into a proxy's config, the include
file, the switch command (a real program that records its argv), the atomic write, the drain.

The switch against a real nginx is tests/integration/test_proxy_switch.py."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import stat
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.deploy.commandswitch import CommandSwitch, substitute
from agent.deploy.nginx import NginxSwitch, read_include_address, render_include
from agent.deploy.proxy import (
    Address,
    InvalidTarget,
    SwitchError,
    SwitchStage,
    TrafficSwitch,
    answered_by,
    check_model_name,
    parse_address,
    wait_drained,
)
from agent.deploy.proxyfiles import restore_file, write_atomic
from agent.deploy.proxysettings import CommandSwitchSettings, ConfirmSettings, NginxSettings

# --- model names and addresses ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "Llama-3.1-8B", "m_2", "a", "x" * 64])
def test_good_model_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "../x", "a/b", "a b", "a;b", "-rf", ".hidden", "m\n", "x" * 65, "é", "a{b}", 'a"b'],
)
def test_bad_model_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidTarget, match="is not 1-64 characters"):
        check_model_name(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8001", Address("127.0.0.1", 8001)),
        ("[::1]:8001", Address("::1", 8001)),
        ("[0:0::1]:80", Address("::1", 80)),
        ("GPU-02.internal:65535", Address("gpu-02.internal", 65535)),
        ("localhost:1", Address("localhost", 1)),
    ],
)
def test_good_addresses(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


def test_addresses_print_as_a_proxy_reads_them() -> None:
    assert str(parse_address("[::1]:8001")) == "[::1]:8001"
    assert str(parse_address("127.0.0.1:8001")) == "127.0.0.1:8001"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("127.0.0.1", "has no port"),
        (":8001", "has no port"),
        ("127.0.0.1:0", "not 1-65535"),
        ("127.0.0.1:65536", "not 1-65535"),
        ("127.0.0.1:080", "not 1-65535"),
        ("127.0.0.1:+80", "not 1-65535"),
        ("999.1.1.1:80", "not an IPv4 address"),
        ("1.2.3.4.5:80", "not an IPv4 address"),
        ("::1:80", "goes in brackets"),
        ("[::1]80", "not [ipv6]:port"),
        ("[nope]:80", "not an IPv6 address"),
        ("a b:80", "not a host name"),
        ("host;evil:80", "not a host name"),
        ("h_1:80", "not a host name"),
        ("-h:80", "not a host name"),
        ("h:80;", "not 1-65535"),
        ("h:80\nserver 10.0.0.1:80", "not host:port"),
        ("hôst:80", "not host:port"),
        ("unix:/run/x.sock", "not 1-65535"),
    ],
)
def test_bad_addresses_are_refused_with_why(text: str, why: str) -> None:
    with pytest.raises(InvalidTarget, match=re.escape(why)):
        parse_address(text)


# --- the include ------------------------------------------------------------------------------


def test_include_holds_one_server_line_and_reads_back() -> None:
    text = render_include("llama", parse_address("[::1]:8002"))
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "server [::1]:8002;"
    ]
    assert read_include_address(text) == Address("::1", 8002)
    assert read_include_address("# nothing\n") is None
    assert read_include_address("  server 10.0.0.2:80 max_fails=0;\n") == Address("10.0.0.2", 80)


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("127.0.0.1:8002", True),
        ("127.0.0.1:8001, 127.0.0.1:8002", True),
        ("127.0.0.1:8002 : 127.0.0.1:8001", False),
        ("127.0.0.1:8001", False),
        ("", False),
        ("unix:/tmp/s", False),
    ],
)
def test_upstream_header_names_the_answering_server_last(header: str, matches: bool) -> None:
    assert answered_by(header, Address("127.0.0.1", 8002)) is matches


def test_nginx_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"set pid_file .* or confirm.url"):
        NginxSwitch(NginxSettings(include_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="not an absolute path"):
        NginxSwitch(NginxSettings(include_dir="vigil", pid_file="/run/nginx.pid"))
    with pytest.raises(ValueError, match="is not an http"):
        NginxSwitch(NginxSettings(include_dir="/x", confirm=ConfirmSettings(url="ftp://x")))
    switch = NginxSwitch(NginxSettings(pid_file="/run/nginx.pid", conf="/etc/nginx/nginx.conf"))
    assert isinstance(switch, TrafficSwitch)
    assert switch.test_argv == ("nginx", "-c", "/etc/nginx/nginx.conf", "-t")
    assert switch.reload_argv is None  # SIGHUP to the master in the pid file
    assert switch.include_path("llama") == Path("/etc/nginx/vigil/llama.upstream.conf")


async def test_nginx_preflight_without_nginx_says_what_is_missing(tmp_path: Path) -> None:
    switch = NginxSwitch(
        NginxSettings(
            include_dir=str(tmp_path / "absent"),
            nginx=str(tmp_path / "no-nginx"),
            pid_file=str(tmp_path / "nginx.pid"),
        )
    )
    preflight = await switch.preflight("m")
    assert not preflight.ok
    problems = "\n".join(preflight.problems())
    assert "no-nginx not found" in problems
    assert "absent is not a directory this agent may write to" in problems
    assert "absent/m.upstream.conf is missing" in problems
    assert "cannot read nginx pid file" in problems


# --- the atomic write ---------------------------------------------------------------------------


def test_write_atomic_replaces_whole_and_restore_puts_bytes_back(tmp_path: Path) -> None:
    path = tmp_path / "m.upstream.conf"
    write_atomic(path, b"server 127.0.0.1:1;\n", 0o640)
    assert path.read_bytes() == b"server 127.0.0.1:1;\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    write_atomic(path, b"server 127.0.0.1:2;\n")
    restore_file(path, b"server 127.0.0.1:1;\n\x00odd bytes\xff")
    assert path.read_bytes() == b"server 127.0.0.1:1;\n\x00odd bytes\xff"
    restore_file(path, None)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left


# --- the switch command -------------------------------------------------------------------------

RECORDER = """#!{python}
import json, os, sys
with open({out!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items()
                                                     if k.startswith("VIGIL_")}}}}) + "\\n")
if os.environ.get("FAIL"):
    sys.stderr.write("haproxy: server be_llama/blue not found\\n")
    sys.exit(3)
if os.environ.get("HANG"):
    import time; time.sleep(60)
print("switched")
"""


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "calls.jsonl"
    script = tmp_path / "switch-traffic"
    script.write_text(RECORDER.format(python=sys.executable, out=str(out)))
    script.chmod(0o755)
    return script, out


def calls(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


async def test_switch_command_gets_each_placeholder_as_one_argument(tmp_path: Path) -> None:
    script, out = recorder(tmp_path)
    switch = CommandSwitch(
        CommandSwitchSettings(
            argv=(
                str(script),
                "set server be_{model}/app addr {host} port {port}",
                "{address}",
                '{"json": "{previous}"}',
                "{unknown_but_json_like",
            ),
            state_dir=str(tmp_path / "state"),
        )
    )
    assert isinstance(switch, TrafficSwitch)
    assert await switch.current("llama") is None

    first = await switch.switch("llama", "127.0.0.1:8002")
    second = await switch.switch("llama", "[::1]:8003")

    argvs = [c["argv"] for c in calls(out)]
    assert argvs[0] == [
        "set server be_llama/app addr 127.0.0.1 port 8002",
        "127.0.0.1:8002",
        '{"json": ""}',
        "{unknown_but_json_like",
    ]
    assert argvs[1][:3] == [
        "set server be_llama/app addr ::1 port 8003",
        "[::1]:8003",
        '{"json": "127.0.0.1:8002"}',
    ]
    assert calls(out)[1]["env"] == {
        "VIGIL_MODEL": "llama",
        "VIGIL_ADDRESS": "[::1]:8003",
        "VIGIL_HOST": "::1",
        "VIGIL_PORT": "8003",
        "VIGIL_PREVIOUS_ADDRESS": "127.0.0.1:8002",
    }
    assert first.previous is None and second.previous == "127.0.0.1:8002"
    assert second.check_output == "switched" and second.confirmed_by.endswith("exited 0")
    assert await switch.current("llama") == "[::1]:8003"
    # The state survives a new switch object (an agent restart).
    again = CommandSwitch(replace(switch.settings))
    assert await again.current("llama") == "[::1]:8003"


async def test_switch_command_failure_is_a_clear_error_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, _ = recorder(tmp_path)
    settings = CommandSwitchSettings(argv=(str(script), "{address}"), state_dir=str(tmp_path))
    switch = CommandSwitch(settings)
    await switch.switch("m", "127.0.0.1:8001")
    monkeypatch.setenv("FAIL", "1")

    with pytest.raises(SwitchError) as err:
        await switch.switch("m", "127.0.0.1:8002")

    assert err.value.stage is SwitchStage.COMMAND and not err.value.restored
    assert "exited 3" in str(err.value)
    assert "server be_llama/blue not found" in str(err.value)
    assert "switch back to 127.0.0.1:8001" in str(err.value)
    assert await switch.current("m") == "127.0.0.1:8001"  # not recorded as switched


async def test_switch_command_past_its_timeout_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, _ = recorder(tmp_path)
    switch = CommandSwitch(
        CommandSwitchSettings(argv=(str(script),), state_dir=str(tmp_path), timeout_s=0.5)
    )
    monkeypatch.setenv("HANG", "1")
    start = time.monotonic()
    with pytest.raises(SwitchError, match=r"ran past 0.5s and was killed"):
        await switch.switch("m", "127.0.0.1:8002")
    assert time.monotonic() - start < 5


async def test_switch_command_missing_program(tmp_path: Path) -> None:
    switch = CommandSwitch(
        CommandSwitchSettings(argv=(str(tmp_path / "nope"),), state_dir=str(tmp_path))
    )
    with pytest.raises(SwitchError, match="cannot run") as err:
        await switch.switch("m", "127.0.0.1:8002")
    assert err.value.restored
    preflight = await switch.preflight("m")
    assert preflight.problems() == [
        f"switch command: {tmp_path / 'nope'} not found or not executable"
    ]


def test_switch_command_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown placeholders \{adress\}"):
        CommandSwitch(CommandSwitchSettings(argv=("x", "{adress}"), state_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="argv is empty"):
        CommandSwitch(CommandSwitchSettings(argv=(), state_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="check_argv"):
        CommandSwitch(
            CommandSwitchSettings(argv=("x",), check_argv=("c", "{address}"), state_dir="/x")
        )


async def test_switch_command_refuses_bad_input_before_running(tmp_path: Path) -> None:
    script, out = recorder(tmp_path)
    switch = CommandSwitch(CommandSwitchSettings(argv=(str(script),), state_dir=str(tmp_path)))
    for model, address in [("m", "127.0.0.1:1 ; rm -rf /"), ("$(reboot)", "127.0.0.1:1")]:
        with pytest.raises(InvalidTarget):
            await switch.switch(model, address)
    assert not out.exists()


def test_substitute_leaves_other_braces() -> None:
    assert substitute(("{a}{b}", "{{x}}", "{}"), {"a": "1"}) == ("1{b}", "{{x}}", "{}")


# --- the drain ----------------------------------------------------------------------------------


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("family", "host"),
    [
        (socket.AF_INET, "127.0.0.1"),
        pytest.param(
            socket.AF_INET6,
            "::1",
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
    ],
)
async def test_drain_waits_for_connections_to_the_old_address(
    family: socket.AddressFamily, host: str
) -> None:
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        port = listener.getsockname()[1]
        address = str(Address(host, port))
        assert (await wait_drained(address, 0)).drained
        # The agent's own connection (a canary's, kept alive) is not the proxy's traffic.
        own = socket.create_connection((host, port))
        own_peer, _ = listener.accept()
        assert (await wait_drained(address, 0)).drained
        # Another process's (the proxy's) is.
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])));"
            " print('connected', flush=True); sys.stdin.read()",
            host,
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert client.stdout is not None and client.stdin is not None
        assert await client.stdout.readline() == b"connected\n"
        peer, _ = listener.accept()
        busy = await wait_drained(address, 0.2)
        assert not busy.drained and busy.open_connections == 1 and busy.waited_ms >= 200
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, client.stdin.close)
        done = await wait_drained(address, 10, interval_s=0.05)
        await client.wait()
        for s in (peer, own, own_peer):
            s.close()
    assert done.drained and done.open_connections == 0
    assert 250 <= done.waited_ms < 5000
