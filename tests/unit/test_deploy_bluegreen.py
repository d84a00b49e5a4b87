"""A blue-green model's config, its copies' slots, and the children the traffic switch runs.

The config: ``{port}`` and ``{artifact}`` where they must be, two ports (or a spare beside the
process's own), exactly one switch with what it needs, no port another process of the config
uses; each refusal names the field and says what was expected. The slots: everything about a
copy follows from its port and version, and the running config is the templates filled in for
the serving copy (its probes: for the copy they go to now). The switch's commands (``nginx
-t``, a switch script) get the agent's environment less its secrets and the children's umask.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.deploy.commandswitch import CommandSwitch
from agent.deploy.proxy import run_argv
from agent.deploy.proxysettings import CommandSwitchSettings
from agent.deploy.slots import Routes, Slot, copy_address, copy_config, probe_url, spare_port
from storage import private

PROCESS = """
[[process]]
name = "srv"
command = ["python", "-m", "server", "--port", "{port}", "--model", "{artifact}/model.onnx"]
env = { PORT = "{port}", OTHER = "{x}" }
"""


def cfg(
    deploy: str = 'ports = [8001, 8002]\n[model.deploy.nginx]\npid_file = "/run/nginx.pid"',
    *,
    url: str = "http://127.0.0.1:{port}",
    process: str = PROCESS,
    extra: str = "",
    strategy: str = "blue-green",
) -> str:
    return f"""
[agent]
host = "h"
data_dir = "/tmp/vigil-unused"
listen = "127.0.0.1:8470"
{process}
[[model]]
name = "clf"
protocol = "kserve_v2"
url = "{url}"
process = "srv"
[model.deploy]
link = "/srv/models/clf/current"
strategy = "{strategy}"
{deploy}
{extra}
"""


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    return str(err.value)


def test_a_blue_green_model_is_read_with_its_ports_and_switch() -> None:
    c = parse_config(cfg())
    d = c.models[0].deploy
    assert d is not None and d.blue_green and d.ports == (8001, 8002)
    assert d.nginx is not None and d.nginx.pid_file == "/run/nginx.pid"
    assert d.nginx.include_dir == "/etc/nginx/vigil" and d.switch_command is None
    assert d.drain_timeout_s == 300.0
    spare = parse_config(
        cfg(
            "spare_port = 9002\n[model.deploy.switch_command]\n"
            'argv = ["sw", "{model}", "{address}"]',
            process=PROCESS + "port = 9001\n",
        )
    )
    d = spare.models[0].deploy
    assert d is not None and d.ports == (9001, 9002)
    assert d.switch_command is not None and d.switch_command.argv == ("sw", "{model}", "{address}")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            cfg('[model.deploy.nginx]\npid_file = "/p"'),
            "model[0].deploy.ports: a blue-green deploy starts the new copy on a spare port",
        ),
        (cfg("ports = [8001, 8002, 8003]"), "expected two port numbers [A, B]"),
        (cfg('ports = [8001, 8001]\n[model.deploy.nginx]\npid_file = "/p"'), "two different"),
        (cfg("ports = [8001, 8002]"), "expected [model.deploy.nginx] or [model.deploy.switch"),
        (cfg("ports = [8001, 8002]\n[model.deploy.nginx]\n"), "a switch must be confirmed"),
        (
            cfg('ports = [8001, 8002]\n[model.deploy.nginx]\nconfirm_url = "ftp://x"'),
            "confirm_url: expected an http:// or https:// URL",
        ),
        (
            cfg('ports = [8001, 8002]\n[model.deploy.switch_command]\nargv = ["s", "{adress}"]'),
            "unknown placeholder {adress}",
        ),
        (
            cfg(
                'ports = [8001, 8002]\n[model.deploy.nginx]\npid_file = "/p"\n'
                '[model.deploy.switch_command]\nargv = ["s"]'
            ),
            "expected [model.deploy.nginx] or this, not both",
        ),
        (
            cfg('ports = [8001, 8002]\n[model.deploy.nginx]\npid_file = "/p"', url="http://h:1"),
            "model[0].url: a blue-green model is probed on the copy that serves",
        ),
        (
            cfg(
                'ports = [8001, 8002]\n[model.deploy.nginx]\npid_file = "/p"',
                process=PROCESS.replace('"--port", "{port}", ', ""),
            ),
            "expected {port} in its command",
        ),
        (
            cfg(
                'ports = [8001, 8002]\n[model.deploy.nginx]\npid_file = "/p"',
                process=PROCESS.replace("{artifact}", "/srv/m"),
            ),
            "expected {artifact} in its command or env",
        ),
        (
            cfg('spare_port = 8002\n[model.deploy.nginx]\npid_file = "/p"'),
            "expected port in [[process]] 'srv', or ports = [A, B] here",
        ),
        (
            cfg('ports = [8470, 8002]\n[model.deploy.nginx]\npid_file = "/p"'),
            "port 8470 is used by the agent's API",
        ),
        (
            cfg(
                'ports = [8001, 8002]\n[model.deploy.nginx]\npid_file = "/p"',
                extra='[[process]]\nname = "other"\ncommand = ["x"]\nport = 8002\n',
            ),
            "port 8002 is used by process 'other'",
        ),
        (
            cfg("ports = [8001, 8002]", strategy="in-place", url="http://127.0.0.1:1"),
            'applies to strategy = "blue-green"',
        ),
        (
            cfg("", strategy="in-place", url="http://127.0.0.1:{port}"),
            "model[0].url: {port} is filled in only for a blue-green model",
        ),
    ],
    ids=lambda v: v[:40] if "[agent]" not in str(v) else "",
)
def test_a_bad_blue_green_config_is_refused_naming_the_field(text: str, words: str) -> None:
    assert words in refused(text)


def test_a_copy_is_its_port_and_version() -> None:
    c = parse_config(cfg())
    m, proc = c.models[0], c.processes[0]
    slot = Slot(8002, "/srv/models/clf/v7")
    copy = copy_config(proc, slot)
    assert copy.command == (
        "python",
        "-m",
        "server",
        "--port",
        "8002",
        "--model",
        "/srv/models/clf/v7/model.onnx",
    )
    assert copy.env == {"PORT": "8002", "OTHER": "{x}"} and copy.port == 8002
    assert probe_url(m, 8002) == "http://127.0.0.1:8002"
    assert copy_address(m, 8002) == "127.0.0.1:8002"
    assert spare_port(m, 8001) == 8002 and spare_port(m, 8002) == 8001
    v6 = parse_config(cfg(url="http://[::1]:{port}/")).models[0]
    assert copy_address(v6, 8001) == "[::1]:8001"
    assert Slot.from_json(slot.to_json()) == slot
    assert Slot.from_json({"port": True, "artifact": "x"}) is None


def test_the_running_config_is_the_serving_copy_and_where_the_probes_go() -> None:
    c = parse_config(cfg())
    routes = Routes()
    routes.serving["clf"] = Slot(8002, "/v/7")
    running = routes.resolve(c)
    assert running.processes[0].command[4] == "8002"
    assert running.processes[0].command[6] == "/v/7/model.onnx"
    assert running.models[0].url == "http://127.0.0.1:8002"
    routes.probing["clf"] = 8001  # a bake: the canaries go to the new copy
    running = routes.resolve(c)
    assert running.models[0].url == "http://127.0.0.1:8001"
    assert running.processes[0].command[4] == "8002"
    # Before anything is known: the first port, the version the link names (or the link).
    fresh = Routes().resolve(c)
    assert fresh.processes[0].command[4] == "8001"
    assert fresh.processes[0].command[6] == "/srv/models/clf/current/model.onnx"
    # An in-place config is left as it is.
    plain = parse_config(cfg("", strategy="in-place", url="http://127.0.0.1:1"))
    assert Routes().resolve(plain) == plain


ENV_AND_UMASK = "import json, os; u = os.umask(0); print(json.dumps([u, dict(os.environ)]))"


async def test_the_switch_commands_get_no_agent_secrets_and_the_childrens_umask(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VIGIL_TOKEN", "operate-token")
    monkeypatch.setenv("PLAIN_SETTING", "kept")
    monkeypatch.setattr(private._Umask, "inherited", 0o027)
    old = os.umask(0o077)
    try:
        out = await run_argv((sys.executable, "-c", ENV_AND_UMASK), 30.0)
        umask, env = json.loads(out.stdout)
        assert umask == 0o027 and "VIGIL_TOKEN" not in env and env["PLAIN_SETTING"] == "kept"
        # A switch command: its own VIGIL_* values, never the agent's.
        dump = tmp_path / "env.json"
        script = tmp_path / "switch"
        script.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            f"open({str(dump)!r}, 'w').write(json.dumps([os.umask(0), dict(os.environ)]))\n"
        )
        script.chmod(0o755)
        switch = CommandSwitch(
            CommandSwitchSettings(argv=(str(script), "{address}"), state_dir=str(tmp_path / "s"))
        )
        await switch.switch("clf", "127.0.0.1:8002")
        umask, env = json.loads(dump.read_text())
        assert umask == 0o027 and "VIGIL_TOKEN" not in env
        assert env["VIGIL_MODEL"] == "clf" and env["VIGIL_ADDRESS"] == "127.0.0.1:8002"
    finally:
        os.umask(old)
