"""What a supervised process inherits from the agent's environment (issue 17, defect 7).

The agent's own ``VIGIL_*`` variables (``VIGIL_TOKEN``: the API's operate token) and every
variable the config names as a secret (a model's ``api_key_env``, a channel's ``secret_env``,
...) stay with the agent; a process's own ``env`` may still set any of them. Real children
print their environment; nothing is mocked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent.config import ProcessConfig, parse_config
from agent.supervise.proclogs import ProcessLog
from agent.supervise.targets import CommandTarget, run_command

DUMP = "import json, os; print(json.dumps(dict(os.environ)))"
WRITE = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"

CONFIG = """
[agent]
host = "h"
data_dir = "/tmp/vigil-unused"

[[model]]
name = "m"
protocol = "openai"
url = "http://127.0.0.1:1"
api_key_env = "MODEL_KEY_FOR_TEST"

[[notify]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:1/hook"
secret_env = "HOOK_SECRET_FOR_TEST"
"""


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "VIGIL_TOKEN": "operate-token",
        "VIGIL_SOMETHING": "agent-only",
        "MODEL_KEY_FOR_TEST": "sk-model",
        "HOOK_SECRET_FOR_TEST": "hook-secret",
        "PLAIN_SETTING": "kept",
    }.items():
        monkeypatch.setenv(name, value)
    parse_config(CONFIG)  # the loader learns which variables hold secrets


SCRUBBED = ("VIGIL_TOKEN", "VIGIL_SOMETHING", "MODEL_KEY_FOR_TEST", "HOOK_SECRET_FOR_TEST")


async def test_a_remediation_command_gets_no_agent_secrets(agent_env: None, tmp_path: Path) -> None:
    plog = ProcessLog(tmp_path / "logs", "p", 1 << 20, 1)
    out = await run_command((sys.executable, "-c", DUMP), plog, 30.0)
    env = json.loads(out)
    assert not [name for name in SCRUBBED if name in env]
    assert env["PLAIN_SETTING"] == "kept"
    # The process's own env sets what it needs, secrets included.
    out = await run_command(
        (sys.executable, "-c", DUMP),
        plog,
        30.0,
        {"VIGIL_TOKEN": "given", "MODEL_KEY_FOR_TEST": "k"},
    )
    env = json.loads(out)
    assert (env["VIGIL_TOKEN"], env["MODEL_KEY_FOR_TEST"]) == ("given", "k")
    assert "HOOK_SECRET_FOR_TEST" not in env


async def test_a_started_process_gets_no_agent_secrets(agent_env: None, tmp_path: Path) -> None:
    dump = tmp_path / "env.json"
    cfg = ProcessConfig(
        name="srv",
        command=(sys.executable, "-c", WRITE, str(dump)),
        env={"HOOK_SECRET_FOR_TEST": "its-own"},
    )
    target = CommandTarget(cfg, ProcessLog(tmp_path / "logs", "srv", 1 << 20, 1))
    handle = await target.launch()
    info = await handle.exited
    assert info.returncode == 0, (tmp_path / "logs" / "srv.log").read_text()
    env = json.loads(dump.read_text())
    assert [name for name in SCRUBBED if name in env] == ["HOOK_SECRET_FOR_TEST"]
    assert env["HOOK_SECRET_FOR_TEST"] == "its-own"
    assert env["PLAIN_SETTING"] == "kept"
