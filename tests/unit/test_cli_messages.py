"""What the CLI says when something is missing or wrong: counts, hints, connection errors, and
the README's config-error examples."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from agent import cli
from agent.client import AgentUnreachable, ApiClient, resolve_target

README = Path(__file__).resolve().parents[2] / "README.md"

MODEL = 'name = "{name}"\nprotocol = "tcp"\nurl = "tcp://127.0.0.1:9"\n'
PROCESS = 'name = "{name}"\ncommand = ["true"]\n'


def config_with(tmp_path: Path, models: int, processes: int) -> Path:
    text = "".join(f"[[model]]\n{MODEL.format(name=f'm{i}')}" for i in range(models))
    text += "".join(f"[[process]]\n{PROCESS.format(name=f'p{i}')}" for i in range(processes))
    path = tmp_path / f"vigil-{models}-{processes}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("models", "processes", "said"),
    [
        (1, 1, "1 model, 1 process"),
        (2, 2, "2 models, 2 processes"),
        (0, 1, "0 models, 1 process"),
    ],
)
def test_check_config_counts_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: int, processes: int, said: str
) -> None:
    path = config_with(tmp_path, models, processes)
    assert cli.main(["agent", "check-config", "--config", str(path)]) == cli.EXIT_OK
    assert capsys.readouterr().out == f"{path}: ok ({said})\n"


# The files behind the README's "Other examples" (the first one's file is in the README).
OTHER_BAD_FILES = {
    "bad3.toml": '[agent]\nsample_intervall = "1s"\n',
    "bad2.toml": (
        '[[model]]\nname = "m"\nprotocol = "kserve_v2"\nurl = "http://127.0.0.1:8000"\n'
        "[model.canary]\n"
        'inputs = [{ name = "input", shape = [1, 4], datatype = "FP32", data = [1, 2, 3, 4] }]\n'
        "max_latency = 200\n"
    ),
    "bad4.toml": '[[process]]\nname = "p"\ncommand = "python -m server"\n',
}


def test_the_readme_config_errors_are_what_check_config_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index("### Errors") :]
    bad = re.search(r"with this\s+`/tmp/bad.toml`:\s+```toml\n(.*?)```", section, re.S)
    assert bad is not None, "the README's bad.toml example moved"
    files = {"bad.toml": bad.group(1), **OTHER_BAD_FILES}
    shown = re.findall(r"^vigil: config refused: /tmp/(\S+?\.toml):.*$", section, re.M)
    assert sorted(shown) == sorted(files), "a README example without its file here, or back"
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert cli.main(["agent", "check-config", "--config", name]) == cli.EXIT_USAGE
        printed = capsys.readouterr().err.strip().replace(f": {name}:", f": /tmp/{name}:")
        assert re.search(rf"^{re.escape(printed)}$", section, re.M), printed


def test_audit_verify_without_a_database_says_how_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.client.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: the data dir is under XDG
    assert cli.main(["audit", "verify"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.rstrip().endswith("(pass --db or --config)")
    assert cli.main(["audit", "verify", "--db", str(tmp_path / "x.db")]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == f"vigil: no database at {tmp_path / 'x.db'}"


def test_no_local_agent_suggests_config_for_another_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.client.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(AgentUnreachable) as default:
        resolve_target(None, None, None)
    assert "pass --config with that file, or --url" in str(default.value)
    config = config_with(tmp_path, 0, 1)
    with pytest.raises(AgentUnreachable) as named:
        resolve_target(None, None, config)
    assert f"is `vigil agent run --config {config}` running? or pass --url" in str(named.value)


def test_a_refused_connection_reads_plainly() -> None:
    # A bound socket that does not listen refuses connections, and keeps its port from reuse.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(AgentUnreachable) as refused:
            ApiClient(url, "token").status()
    assert (
        str(refused.value) == f"cannot connect to {url}: connection refused (is the agent running?)"
    )
