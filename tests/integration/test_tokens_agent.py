"""Named tokens, rotation and revocation against a real agent, driven by the real CLI: the
agent picks each change up without a restart, a rotated value works through its grace period
and is refused (401) after it, the token's name is who acts in the audit trail, and no token
value reaches the agent's log or its database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RunningAgent, child_env, running_agent, vigil_cmd, wait_for, write_config

pytestmark = pytest.mark.integration


def call(
    agent: RunningAgent,
    path: str,
    token: str,
    method: str = "GET",
    operator: str | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    if operator is not None:
        headers["X-Vigil-Operator"] = operator
    data = b"" if method == "POST" else None
    req = urllib.request.Request(agent.url + path, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def token_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        vigil_cmd("token", *args, "--config", str(cfg)),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def local(agent: RunningAgent, file: str = "api-token") -> str:
    return (agent.data_dir / file).read_text().strip()


def events(agent: RunningAgent, kind: str) -> list[dict[str, Any]]:
    code, body = call(agent, f"/api/v1/events?kind={kind}", local(agent))
    assert code == 200, body
    return list(body["events"])


def test_named_tokens_rotation_and_revocation_in_a_running_agent(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        f"""
log_level = "debug"

[[process]]
name = "sleeper"
command = ["{sys.executable}", "-c", "import time; time.sleep(600)"]
""",
    )
    with running_agent(cfg) as agent:
        secrets = {local(agent), local(agent, "api-token.read")}
        alice = token_cli(cfg, "create", "alice", "--scope", "operate").stdout.strip()
        secrets.add(alice)
        # Picked up without a restart; the token's name is who acts, whatever the header says.
        assert call(agent, "/api/v1/whoami", alice, operator="mallory@x") == (
            200,
            {"scope": "operate", "operator": "alice", "token": "alice"},
        )
        code, body = call(agent, "/api/v1/processes/sleeper/restart", alice, "POST", "bob@laptop")
        assert code == 202, body
        # A default token names no person: the header does, and the token is recorded beside.
        code, body = call(
            agent, "/api/v1/processes/sleeper/restart", local(agent), "POST", "ann@desk"
        )
        assert code == 202, body
        found = wait_for(
            lambda: (got := [e["data"] for e in events(agent, "process.action")])[1:] and got,
            what="both restarts' audit events",
        )
        # Newest first: the default token's restart, then alice's.
        assert {
            "action": "restart",
            "by": "alice",
            "token": "alice",
            "claimed": "bob@laptop",
        }.items() <= found[1].items()
        assert found[0]["by"] == "ann@desk" and found[0]["token"] == "local-operate"
        assert "claimed" not in found[0]

        # Rotation: the old value works through the grace period, then 401.
        rotated = token_cli(cfg, "rotate", "alice", "--grace", "3s", "--json")
        new_alice = json.loads(rotated.stdout)["token"]
        secrets.add(new_alice)
        until_ms = wait_for(
            lambda: [e["data"]["grace_until_ms"] for e in events(agent, "token.rotated")],
            what="token.rotated",
        )[0]
        assert call(agent, "/api/v1/whoami", new_alice)[0] == 200
        assert time.time() * 1000 < until_ms, "the grace ran out before it could be tried"
        assert call(agent, "/api/v1/whoami", alice)[0] == 200
        refused = wait_for(
            lambda: call(agent, "/api/v1/whoami", alice)[0] == 401 and time.time() * 1000,
            timeout=30,
            what="the old value refused after its grace",
        )
        assert refused >= until_ms - 50  # not before the grace ended (clock ms granularity)
        assert call(agent, "/api/v1/whoami", new_alice)[0] == 200

        # The default tokens: rotated in their files, which local tools keep reading.
        old_op, old_read = local(agent), local(agent, "api-token.read")
        token_cli(cfg, "rotate", "--scope", "operate", "--grace", "1h")
        token_cli(cfg, "rotate", "local-read", "--grace", "0s")
        secrets |= {local(agent), local(agent, "api-token.read")}
        assert local(agent) != old_op and local(agent, "api-token.read") != old_read
        assert call(agent, "/api/v1/whoami", old_op)[0] == 200  # within its hour
        assert call(agent, "/api/v1/whoami", old_read)[0] == 401  # no grace
        assert call(agent, "/api/v1/whoami", local(agent, "api-token.read"))[1]["scope"] == "read"
        status = subprocess.run(
            vigil_cmd("status", "--config", str(cfg), "--json"),
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode in (0, 1) and json.loads(status.stdout)["host"] == "test-host"

        # Revocation: refused at the next request.
        token_cli(cfg, "revoke", "alice")
        code, body = call(agent, "/api/v1/whoami", new_alice)
        assert code == 401 and new_alice not in json.dumps(body)

        listed = json.loads(token_cli(cfg, "list", "--json").stdout)["tokens"]
        assert [t["name"] for t in listed] == ["local-operate", "local-read"]

        # Every change is audited, by the CLI's user, never with a value.
        def changes() -> list[tuple[str, str]] | None:
            got = [
                (e["kind"], e["subject"])
                for kind in ("token.created", "token.rotated", "token.revoked")
                for e in events(agent, kind)
            ]
            return got if len(got) == 5 else None

        assert sorted(wait_for(changes, what="five token events")) == [
            ("token.created", "token:alice"),
            ("token.revoked", "token:alice"),
            ("token.rotated", "token:alice"),
            ("token.rotated", "token:local-operate"),
            ("token.rotated", "token:local-read"),
        ]

        # Presented and refused: a made-up token and one with bytes that are not UTF-8.
        bogus = "bogus-secret-0123456789abcdefXYZ"
        assert call(agent, "/api/v1/whoami", bogus)[0] == 401
        assert call(agent, "/api/v1/whoami", bogus + "\xff\xfe")[0] == 401
        secrets.add(bogus)
        code, everything = call(agent, "/api/v1/events?limit=1000", local(agent))
        assert code == 200 and len(everything["events"]) > 10
    agent_files = [agent.log_path, *agent.data_dir.glob("vigil.db*")]
    assert "level=debug" in agent.log()  # the chattiest it gets
    for secret in secrets:
        assert secret not in json.dumps(everything), "a token value in the events"
        for path in agent_files:
            assert secret.encode() not in path.read_bytes(), f"a token value in {path.name}"
