"""The routes the TUI's triage actions need: whoami, probe now, and audited report exports."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RunningAgent, running_agent, wait_for, write_config

pytestmark = pytest.mark.integration


def request(
    agent: RunningAgent,
    path: str,
    token: str,
    method: str = "GET",
    operator: str | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    if operator:
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
        return status, body.decode()


def events(agent: RunningAgent, kind: str) -> list[dict[str, Any]]:
    code, body = agent.get(f"/api/v1/events?kind={kind}")
    assert code == 200, body
    return list(body["events"])


def test_whoami_probe_now_and_report_exports(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        """
[[model]]
name = "nothing-listens"
protocol = "tcp"
url = "tcp://127.0.0.1:9"
interval = "1h"
""",
    )
    with running_agent(cfg) as agent:
        read = (agent.data_dir / "api-token.read").read_text().strip()
        assert request(agent, "/api/v1/whoami", agent.token) == (
            200,
            # The default token's name, not its scope, when no header names a person (the
            # token's name is who acts since named tokens: issue 17).
            {"scope": "operate", "operator": "local-operate", "token": "local-operate"},
        )
        code, body = request(agent, "/api/v1/whoami", read, operator="eve@desk")
        assert (code, body) == (
            200,
            {"scope": "read", "operator": "eve@desk", "token": "local-read"},
        )
        assert request(agent, "/api/v1/whoami", "wrong")[0] == 401

        def runs() -> int:
            code, body = agent.get("/api/v1/probe_runs?model=nothing-listens")
            assert code == 200, body
            return len(body["probe_runs"])

        # The first scheduled run happens at start; wait for it, then probe by hand.
        before = wait_for(runs, what="the first probe run")
        path = "/api/v1/models/nothing-listens/probe"
        code, body = request(agent, path, read, "POST")
        assert code == 403 and "operate" in body["error"]
        code, body = request(agent, "/api/v1/models/nope/probe", agent.token, "POST")
        assert code == 404 and "known: nothing-listens" in body["error"]
        code, body = request(agent, path, agent.token, "POST", "carol@desk")
        assert (code, body) == (202, {"model": "nothing-listens", "accepted": "probe"})
        wait_for(lambda: runs() > before, what="the requested probe stored")
        (asked,) = wait_for(lambda: events(agent, "model.probe_requested"), what="the event")
        assert asked["subject"] == "model:nothing-listens"
        # The token that authorised it is recorded beside the operator its header names.
        assert asked["data"] == {"by": "carol@desk", "token": "local-operate"}

        # A report asked for by a person is audited; one polled by a dashboard is not.
        code, body = request(agent, "/api/v1/report?format=md&since=1h", read, operator="dan@desk")
        assert code == 200 and "nothing-listens" in body
        (exported,) = wait_for(lambda: events(agent, "report.exported"), what="the export event")
        assert exported["data"]["by"] == "dan@desk" and exported["data"]["format"] == "md"
        assert request(agent, "/api/v1/report?format=json", read)[0] == 200
        # The unaudited request left nothing, even after a later event has been stored.
        request(agent, path, agent.token, "POST", "carol@desk")
        wait_for(lambda: len(events(agent, "model.probe_requested")) == 2, what="2nd probe")
        assert len(events(agent, "report.exported")) == 1
