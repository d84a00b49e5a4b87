"""Alerts, silences, deliveries and test notifications through a real agent's API and the
``vigil alerts`` / ``vigil notify`` commands, with a webhook receiver on loopback."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RunningAgent, child_env, running_agent, vigil_cmd, wait_for, write_config
from tests.integration.test_alerting_agent import (
    Hook,
    evaluations,
    free_port,
    hook_receiver,
    model_server,
    notify,
    tcp_model,
)

pytestmark = pytest.mark.integration


def request(
    agent: RunningAgent,
    path: str,
    token: str | None = None,
    method: str = "GET",
    body: Any = None,
    operator: str | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token or agent.token}"}
    if operator:
        headers["X-Vigil-Operator"] = operator
    data = None
    if body is not None:
        data = (body if isinstance(body, bytes) else json.dumps(body).encode()) or b""
        headers["Content-Type"] = "application/json"
    elif method != "GET":
        data = b""
    req = urllib.request.Request(agent.url + path, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw)


def alerts(agent: RunningAgent, query: str = "") -> list[dict[str, Any]]:
    code, body = request(agent, "/api/v1/alerts" + query)
    assert code == 200, body
    return list(body["alerts"])


def firing_for(agent: RunningAgent, model: str) -> dict[str, Any] | None:
    return next(
        (
            a
            for a in alerts(agent, "?state=firing")
            if a["rule"] == "model_down" and a["labels"].get("model") == model
        ),
        None,
    )


def vigil(agent: RunningAgent, *args: str) -> subprocess.CompletedProcess[str]:
    target = ["--url", agent.url, "--token-file", str(agent.data_dir / "api-token")]
    return subprocess.run(
        vigil_cmd(*args, *target),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
        check=False,
    )


def test_alerts_silences_deliveries_and_test_notifications(tmp_path: Path) -> None:
    closed, served = free_port(), free_port()
    with hook_receiver() as hook, model_server(served) as m2_server:
        cfg = write_config(
            tmp_path,
            tcp_model("m1", closed)
            + tcp_model("m2", served)
            + notify(hook, group_wait='"0s"', match='["alertname=model_down"]'),
        )
        with running_agent(cfg) as agent:
            read = (agent.data_dir / "api-token.read").read_text().strip()

            # m1 is down from its first probe: firing, and paged.
            m1 = wait_for(lambda: firing_for(agent, "m1"), 20, what="m1 firing")
            assert m1["silenced_by"] is None and m1["severity"]
            wait_for(lambda: hook.of_kind("firing"), 20, what="the page for m1")
            assert request(agent, "/api/v1/alerts", read)[0] == 200

            # Bad input names the field and what was expected.
            code, body = request(agent, "/api/v1/alerts?state=loud")
            assert code == 400 and body["error"].startswith("state: expected")
            for bad, field in (
                ({"matchers": ["model"], "duration": "1h", "comment": "x"}, "matchers"),
                ({"matchers": [], "duration": "1h", "comment": "x"}, "matchers"),
                ({"matchers": ["model=m2"], "duration": "soon", "comment": "x"}, "duration"),
                ({"matchers": ["model=m2"], "duration": -5, "comment": "x"}, "duration"),
                ({"matchers": ["model=m2"], "duration": "1h"}, "comment"),
                ([1, 2], "body"),
            ):
                code, body = request(agent, "/api/v1/silences", method="POST", body=bad)
                assert code == 400 and body["error"].startswith(f"{field}:"), (bad, body)
            code, body = request(agent, "/api/v1/silences", method="POST", body=b"{not json")
            assert code == 400 and body["error"].startswith("body:")

            # A read token may not silence, unsilence or send tests.
            new = {"matchers": ["model=m2"], "duration": "1h", "comment": "planned work"}
            for method, path, payload in (
                ("POST", "/api/v1/silences", new),
                ("DELETE", "/api/v1/silences/whatever", None),
                ("POST", "/api/v1/notify/hook/test", None),
            ):
                code, body = request(agent, path, read, method, payload)
                assert code == 403 and "operate" in body["error"], (path, body)

            code, body = request(
                agent, "/api/v1/silences", method="POST", body=new, operator="ann@desk"
            )
            assert code == 201, body
            silence = body["silence"]
            assert silence["author"] == "ann@desk" and silence["state"] == "active"
            assert silence["matchers"] == ["model=m2"] and silence["comment"] == "planned work"
            code, body = request(agent, "/api/v1/silences?state=active", read)
            assert code == 200 and [s["id"] for s in body["silences"]] == [silence["id"]]

            # m2 goes down under the silence: firing, shown silenced, nobody paged.
            pages = hook.count()
            m2_server.kill()
            m2 = wait_for(lambda: firing_for(agent, "m2"), 20, what="m2 firing")
            assert m2["silenced_by"] == silence["id"]
            assert [a["labels"]["model"] for a in alerts(agent, "?state=silenced")] == ["m2"]
            seen = evaluations(agent)
            # Past group_interval (1 s): an unsilenced alert would have been sent by then.
            wait_for(lambda: evaluations(agent) >= seen + 10, 10, what="2 s of evaluations")
            assert hook.count() == pages, hook.bodies[pages:]

            # Unsilenced: expired, by whom.
            code, body = request(
                agent, f"/api/v1/silences/{silence['id']}", method="DELETE", operator="bo@desk"
            )
            assert code == 200, body
            assert body["silence"]["state"] == "expired"
            assert body["silence"]["expired_by"] == "bo@desk"
            code, body = request(agent, f"/api/v1/silences/{silence['id']}", method="DELETE")
            assert code == 404

            def expired() -> bool:
                _, listed = request(agent, "/api/v1/silences?state=expired")
                return [s["id"] for s in listed["silences"]] == [silence["id"]]

            wait_for(expired, 10, what="the silence listed expired")
            assert request(agent, "/api/v1/silences?state=over")[0] == 400

            # A test notification reaches the receiver and its answer comes back.
            code, body = request(agent, "/api/v1/notify/hook/test", method="POST")
            assert code == 200 and body["ok"] is True, body
            assert body["channel"] == "hook" and body["status"] == 200
            assert len(hook.of_kind("test")) == 1
            code, body = request(agent, "/api/v1/notify/nope/test", method="POST")
            assert code == 404 and "hook" in body["error"]

            # Deliveries: status and error per row, channel health, never the channel's URL.
            code, body = request(agent, "/api/v1/deliveries", read)
            assert code == 200
            assert body["deliveries"] and all(
                d["state"] in ("pending", "delivered", "undelivered") for d in body["deliveries"]
            )
            assert any(d["state"] == "delivered" for d in body["deliveries"])
            assert [c["name"] for c in body["channels"]] == ["hook"]
            assert body["channels"][0]["delivered"] >= 1
            assert f"127.0.0.1:{hook.port}" not in json.dumps(body)
            assert request(agent, "/api/v1/deliveries?state=lost")[0] == 400
            assert request(agent, "/api/v1/deliveries?limit=many")[0] == 400

            _the_commands(agent, hook)
            test_events = agent.get("/api/v1/events?kind=notify.tested")[1]["events"]
            assert len(test_events) == 2
            assert agent.stop() == 0


def _the_commands(agent: RunningAgent, hook: Hook) -> None:
    done = vigil(agent, "alerts", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert {a["labels"]["model"] for a in listed if a["state"] == "firing"} == {"m1", "m2"}

    done = vigil(agent, "alerts")
    assert done.returncode == 0, done.stderr
    assert "FIRING" in done.stdout and "model_down" in done.stdout

    done = vigil(agent, "alerts", "silence", "model=m1", "--for", "2h", "--comment", "on it")
    assert done.returncode == 0, done.stderr
    silence_id = done.stdout.split()[1].rstrip(":")
    assert "model=m1" in done.stdout

    wait_for(
        lambda: (firing_for(agent, "m1") or {}).get("silenced_by") == silence_id,
        10,
        what="m1 silenced",
    )
    done = vigil(agent, "status")
    assert done.returncode == 1, done.stderr  # models are down
    assert "alerts (2 firing, 1 muted)" in done.stdout, done.stdout
    assert f"FIRING (silenced {silence_id})" in done.stdout
    done = vigil(agent, "status", "--json")
    assert len(json.loads(done.stdout)["alerts"]) == 2

    done = vigil(agent, "alerts", "unsilence", silence_id)
    assert done.returncode == 0, done.stderr
    assert f"silence {silence_id}: expired" in done.stdout
    done = vigil(agent, "alerts", "unsilence", silence_id)
    assert done.returncode == 1 and "404" in done.stderr

    done = vigil(agent, "alerts", "silence", "model", "--comment", "x")
    assert done.returncode == 2 and "matchers:" in done.stderr

    done = vigil(agent, "notify", "test", "hook")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("hook: ok (HTTP 200)")
    assert len(hook.of_kind("test")) == 2  # the command waited for the receiver's answer
    done = vigil(agent, "notify", "test", "nope")
    assert done.returncode == 1 and "no notify channel named 'nope'" in done.stderr
