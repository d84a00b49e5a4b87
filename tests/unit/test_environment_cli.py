"""``[agent] fingerprint_interval``, ``vigil environment``'s text (agent text is data) and its
exit code when the agent cannot be reached, and the API route over a stand-in agent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import commands as cli
from agent.cli.environment_cmd import render
from agent.config import ConfigError, parse_config
from agent.serve.environment_api import environment_hash, register
from agent.serve.httpmessages import Headers, Request, Response
from agent.serve.routing import Router


def test_fingerprint_interval_default_and_bounds() -> None:
    assert parse_config("[agent]\n").agent.fingerprint_interval_s == 600.0
    assert (
        parse_config('[agent]\nfingerprint_interval = "30s"\n').agent.fingerprint_interval_s == 30
    )
    with pytest.raises(ConfigError) as info:
        parse_config('[agent]\nfingerprint_interval = "100ms"\n')
    assert "agent.fingerprint_interval" in str(info.value) and "at least 1s" in str(info.value)


def test_render_groups_sections_and_escapes_what_the_agent_sends() -> None:
    doc: dict[str, Any] = {
        "hash": "sha256:1a2b3c4d5e6f7a8b",
        "collected_ms": 1_765_000_000_000,
        "sections": {
            "model:llm": {"server.version": "0.6.3\x1b[2J"},
            "process:vllm": {"pkg:torch": "2.5.0", "python": "3.11.7"},
            "host": {"kernel": "6.1.0"},
        },
        "last_change": {
            "ts_ms": 1_765_000_000_000,
            "changes": [
                {"section": "process:vllm", "item": "pkg:torch", "old": "2.4.0", "new": "2.5.0"},
                {"section": "gpu", "item": "driver", "old": None, "new": "550.54.15"},
            ],
        },
        "history": [{"ts_ms": 1, "section": "gpu", "item": "driver", "old": "535", "new": None}],
    }
    text = render(doc)
    assert "\x1b" not in text and "0.6.3?[2J" in text
    lines = text.splitlines()
    assert lines[0].startswith("serving environment sha256:1a2b3c4d5e6f7a8b, read 2025-")
    # host first, then processes, then models.
    assert [ln for ln in lines if ln and not ln.startswith(" ") and ":" not in ln[:4]][1:4] == [
        "host",
        "process:vllm",
        "model:llm",
    ]
    assert "  pkg:torch  2.5.0" in lines
    assert "  process:vllm pkg:torch 2.4.0 -> 2.5.0" in lines
    assert "  gpu driver (none) -> 550.54.15" in lines
    assert any(ln.endswith("gpu driver 535 -> (none)") for ln in lines)
    empty = render({"hash": None, "collected_ms": None, "sections": {}, "last_change": None})
    assert "(not read yet)" in empty and "last change: none recorded" in empty


def test_the_command_exits_1_when_the_agent_cannot_be_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    code = cli.main(["environment", "--url", "http://127.0.0.1:1", "--token-file", str(token)])
    assert code == 1
    assert "127.0.0.1:1" in capsys.readouterr().err


def _get(app: Router, target: str) -> tuple[int, Any]:
    path, _, query = target.partition("?")
    request = Request("GET", path, path, query, Headers([]))
    response = asyncio.run(app.dispatch(request))
    assert isinstance(response, Response)
    return response.status, json.loads(response.body)


def test_the_route_over_stand_in_agents(tmp_path: Path) -> None:
    class Bare:
        pass

    known = {"hash": "sha256:0000000000000001", "sections": {"host": {"kernel": "6.1"}}}

    class Job:
        hash = known["hash"]

        def state(self) -> dict[str, Any]:
            return dict(known)

    class WithJob:
        environment = Job()
        data_dir = tmp_path  # no database here: history cannot be read

    assert environment_hash(Bare()) is None
    assert environment_hash(WithJob()) == "sha256:0000000000000001"
    bare, full = Router(), Router()
    register(bare, Bare())
    register(full, WithJob())
    assert _get(bare, "/api/v1/environment")[0] == 503
    assert _get(full, "/api/v1/environment") == (200, known)
    for bad in ("0", "1001", "x", "-1", "%C2%B2"):
        code, body = _get(full, f"/api/v1/environment?history={bad}")
        assert code == 400 and body["error"].startswith("history: expected a whole number")
