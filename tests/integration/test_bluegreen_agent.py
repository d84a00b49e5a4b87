"""Blue-green deploys in a real agent, through a real nginx, under a steady client.

The model server is the demo KServe V2 server (``tests/fakes/versioned_server.py``) reading a
real ONNX model; its ``[[process]]`` command names ``{port}`` and ``{artifact}``, so each copy
is the same command on its own port with its own version. A real nginx (Debian's package,
started by the test in a tmp prefix on loopback: ``tests/nginx.py``) fronts the model through
the include Vigil owns. A steady client sends requests through nginx the whole time; a request
that fails on a reused keep-alive connection before any answer is retried once on a new one,
as HTTP clients do (RFC 9112 §9.3.1), and counted apart; any other error is a failure.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.deploy_support import (
    call,
    deploy_events,
    deployment,
    ended,
    events,
    free_port,
    in_state,
    model_up,
    srv_pid,
    version,
    vigil,
)
from tests.helpers import RunningAgent, running_agent, wait_for, write_config
from tests.nginx import NGINX, RunningNginx, SteadyClient, nginx_missing, running_nginx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nginx_missing() is not None, reason=str(nginx_missing())),
]

PATH = "/clf/v2/models/clf"
"""What the steady client asks through nginx: the model's metadata (both copies answer it)."""


def site(include_dir: Path, port: int) -> str:
    """docs/deploy.md's site for model clf, confirmed on the KServe server's health route."""
    return f"""
    upstream vigil_clf {{
        include {include_dir}/clf.upstream.conf;
        keepalive 16;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /clf/ {{
            proxy_pass http://vigil_clf/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /clf/vigil-upstream {{
            proxy_pass http://vigil_clf/v2/health/ready;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Vigil-Upstream $upstream_addr always;
        }}
    }}"""


def config(
    tmp: Path,
    link: Path,
    ports: tuple[int, int],
    nginx: RunningNginx,
    bake: str,
    nginx_extra: str = "",
    on_exit: str = "keep",
) -> Path:
    server = [sys.executable, "-m", "tests.fakes.versioned_server"]
    argv = [*server, "--model", "{artifact}/model.onnx", "--name", "clf", "--port", "{port}"]
    return write_config(
        tmp,
        f"""
[[process]]
name = "srv"
command = {json.dumps(argv)}
stop_timeout = "5s"
startup_timeout = "60s"

[[model]]
name = "clf"
protocol = "kserve_v2"
url = "http://127.0.0.1:{{port}}"
interval = "250ms"
jitter = "0s"
timeout = "5s"
process = "srv"

[model.deploy]
strategy = "blue-green"
link = "{link}"
ports = [{ports[0]}, {ports[1]}]
bake = "{bake}"
min_good_canaries = 3
latency_min_delta = "150ms"
drain_timeout = "20s"

[model.deploy.nginx]
include_dir = "{nginx.include_dir}"
nginx = "{NGINX}"
prefix = "{nginx.prefix}"
conf = "{nginx.conf}"
extra_args = ["-e", "{nginx.error_log}"]
pid_file = "{nginx.pid_file}"
confirm_url = "{nginx.url}/clf/vigil-upstream"
{nginx_extra}
""",
        on_exit=on_exit,
    )


def include_address(nginx: RunningNginx) -> str:
    """The address Vigil's include sends clf's traffic to."""
    for line in (nginx.include_dir / "clf.upstream.conf").read_text().splitlines():
        if line.startswith("server "):
            return line.removeprefix("server ").removesuffix(";").strip()
    raise AssertionError("no server line in the include")


def upstream_seen(nginx: RunningNginx) -> str:
    """Which copy answers through nginx now (a new connection, the confirm location)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    try:
        conn.request("GET", "/clf/vigil-upstream")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status
        return resp.headers["X-Vigil-Upstream"]
    finally:
        conn.close()


def gone(pid: int) -> bool:
    """Not running (a zombie waiting for whoever adopted the orphan to reap it is gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def latest(agent: RunningAgent) -> dict[str, Any]:
    """The model's newest deployment, whole."""
    code, body = call(agent, "GET", "/api/v1/deployments?model=clf&limit=1")
    assert code == 200, body
    return deployment(agent, body["deployments"][0]["id"])


def process(agent: RunningAgent) -> dict[str, Any]:
    code, body = agent.get("/api/v1/processes")
    assert code == 200, body
    return next(p for p in body["processes"] if p["name"] == "srv")


def kill_copies(tmp: Path) -> None:
    """Kill every copy of this test's model server (as a reboot would), and see them gone."""
    killed = []
    for proc in psutil.process_iter(["cmdline"]):
        with suppress(psutil.Error):
            line = " ".join(proc.info["cmdline"] or [])
            if "versioned_server" in line and str(tmp) in line:
                proc.kill()
                killed.append(proc.pid)
    wait_for(lambda: all(gone(pid) for pid in killed), 10, what="the copies killed")


@contextmanager
def reaper(tmp: Path) -> Iterator[None]:
    """Kill, at the end, any copy of the model server this test left (on_exit is keep)."""
    try:
        yield
    finally:
        kill_copies(tmp)


@contextmanager
def steady(nginx: RunningNginx) -> Iterator[SteadyClient]:
    client = SteadyClient(nginx.url, PATH, rate_per_s=100).start()
    try:
        wait_for(lambda: len(client.answers) >= 20, 30, what="the client under way")
        yield client
    finally:
        client.stop()


def no_failures(client: SteadyClient) -> None:
    """Zero failed requests; stale keep-alive retries (RFC 9112 §9.3.1) counted apart."""
    retried = sum(1 for a in client.answers if a.retried)
    print(f"requests={len(client.answers)} failed={len(client.failures())} retried={retried}")
    assert client.failures() == [], client.failures()[:5]
    assert len(client.answers) > 100


@pytest.fixture
def bg(tmp_path: Path) -> Iterator[tuple[Path, Path, tuple[int, int], RunningNginx]]:
    """(tmp, link, (blue, green) ports, nginx): v1 behind the link, nginx on the blue port."""
    v1 = version(tmp_path, "v1")
    link = tmp_path / "current"
    link.symlink_to(v1)
    ports = (free_port(), free_port())
    assert ports[0] != ports[1]
    with reaper(tmp_path), running_nginx(tmp_path, {"clf": f"127.0.0.1:{ports[0]}"}, site) as n:
        yield tmp_path.resolve(), link, ports, n


def test_promote_then_a_golden_mismatch_rolls_back_with_zero_failed_requests(
    bg: tuple[Path, Path, tuple[int, int], RunningNginx],
) -> None:
    tmp, link, (blue, green), nginx = bg
    v1 = link.resolve()
    v2 = version(tmp, "v2")  # same weights: same answers
    bad = version(tmp, "v3-other-weights", scale=2.0)
    cfg = config(tmp, link, (blue, green), nginx, bake="1500ms")
    with running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 60, what="clf up")
        old = process(agent)
        assert f"{v1}/model.onnx" in old["argv"] and str(blue) in old["argv"]
        assert upstream_seen(nginx) == f"127.0.0.1:{blue}"
        with steady(nginx) as client:
            # 1. Promoted: the new copy on green, gated there, traffic switched, old drained.
            out = vigil(cfg, "deploy", "clf", "--artifact", str(v2), "--wait")
            assert out.returncode == 0, out.stdout + out.stderr
            dep = latest(agent)
            assert dep["state"] == "promoted" and dep["strategy"] == "blue-green", dep
            assert include_address(nginx) == f"127.0.0.1:{green}"
            assert upstream_seen(nginx) == f"127.0.0.1:{green}"
            assert link.resolve() == v2
            new = process(agent)
            assert new["state"] == "running" and new["adopted"]
            assert new["pid"] == dep["checks"]["candidate"]["pid"] != old["pid"]
            assert f"{v2}/model.onnx" in new["argv"] and str(green) in new["argv"]
            assert gone(old["pid"]) and not listening(blue)
            assert dep["addresses"]["serving"] == f"127.0.0.1:{green}"
            assert dep["checks"]["finish"]["drain"]["drained"] is True
            assert dep["checks"]["switch"]["confirmed_by"]
            assert deploy_events(agent, dep["id"]) == [
                "deploy.requested",
                "deploy.switching",
                "deploy.starting",
                "deploy.baking",
                "deploy.promoting",
                "deploy.promoted",
            ]
            # The canaries of the bake went to the new copy, on its own port.
            gate = {c["check"]: c for c in dep["checks"]["verdict"]["checks"]}
            assert gate["golden"]["ok"] and gate["canaries"]["ok"]
            wait_for(lambda: model_up(agent), 15, what="clf up on green")
            status = next(m for m in agent.status()["models"] if m["name"] == "clf")
            assert status["url"] == f"http://127.0.0.1:{green}"

            # 2. Other weights answer differently: rolled back before any switch.
            out = vigil(cfg, "deploy", "clf", "--artifact", str(bad), "--wait")
            assert out.returncode == 1, out.stdout + out.stderr
            failed = latest(agent)
            assert failed["state"] == "rolled_back" and "golden" in failed["error"], failed
            assert "switch" not in failed["checks"]  # no traffic switch was made
            assert include_address(nginx) == f"127.0.0.1:{green}"
            assert upstream_seen(nginx) == f"127.0.0.1:{green}"
            assert process(agent)["pid"] == new["pid"]  # the serving copy was never touched
            assert not listening(blue)  # the new copy (on blue) was stopped
            assert link.resolve() == v2
            wait_for(lambda: model_up(agent), 15, what="clf up on green again")
        no_failures(client)
        # The copy the deploy started opened no process incident; the failed deploy did page.
        code, inc = agent.get("/api/v1/incidents")
        kinds = [i["kind"] for i in inc["incidents"]]
        assert "deploy_failed" in kinds
        assert not [k for k in kinds if k.startswith("process_") or k == "model_down"], kinds
    # After a reboot (nothing runs, the records name dead processes), the next agent starts
    # the copy the last deployment left serving: green, with v2, where nginx sends the traffic.
    kill_copies(tmp)
    with running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 60, what="clf up after the reboot")
        again = process(agent)
        assert not again["adopted"] and str(green) in again["argv"]
        assert f"{v2}/model.onnx" in again["argv"]
        assert upstream_seen(nginx) == f"127.0.0.1:{green}"


def test_nginx_t_failing_at_the_switch_keeps_the_old_copy_serving(
    bg: tuple[Path, Path, tuple[int, int], RunningNginx],
) -> None:
    tmp, link, (blue, green), nginx = bg
    v2 = version(tmp, "v2")
    cfg = config(tmp, link, (blue, green), nginx, bake="3s")
    with running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 60, what="clf up")
        pid = srv_pid(agent)
        with steady(nginx) as client:
            code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
            assert code == 202, body
            dep_id = body["deployment"]["id"]
            in_state(agent, dep_id, "baking")
            assert listening(green)
            # The operator breaks nginx's config while the new copy bakes.
            nginx.operator_conf.write_text("proxy_buffers_typo 8 16k;\n")
            done = ended(agent, dep_id)
        no_failures(client)
        assert done["state"] == "rolled_back", done
        assert 'unknown directive "proxy_buffers_typo"' in done["error"], done["error"]
        assert "traffic stays on the old copy" in done["error"]
        assert done["checks"]["switch_error"]["stage"] == "test"
        assert done["checks"]["switch_error"]["restored"] is True
        assert include_address(nginx) == f"127.0.0.1:{blue}"
        nginx.operator_conf.write_text("# fixed\n")
        assert upstream_seen(nginx) == f"127.0.0.1:{blue}"
        assert srv_pid(agent) == pid and not listening(green)
        assert link.resolve() == (tmp / "versions" / "v1")


def test_agent_killed_during_the_bake_resumes_and_promotes(
    bg: tuple[Path, Path, tuple[int, int], RunningNginx],
) -> None:
    """The documented rule: the new copy still runs and had answered, so the next agent
    adopts the old copy as the serving one, sends the canaries to the new copy again, resumes
    the bake from its stored start and promotes; the proxy never points at a stopped copy."""
    tmp, link, (blue, green), nginx = bg
    v2 = version(tmp, "v2")
    cfg = config(tmp, link, (blue, green), nginx, bake="6s")
    client = SteadyClient(nginx.url, PATH, rate_per_s=100)
    try:
        with running_agent(cfg) as agent:
            wait_for(lambda: model_up(agent), 60, what="clf up")
            client.start()
            code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
            assert code == 202, body
            dep_id = body["deployment"]["id"]
            baking = in_state(agent, dep_id, "baking")
            old_pid = srv_pid(agent)
            new_pid = baking["checks"]["candidate"]["pid"]
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(10)
            (agent.data_dir / "api.json").unlink()
        assert psutil.pid_exists(old_pid) and psutil.pid_exists(new_pid)
        assert include_address(nginx) == f"127.0.0.1:{blue}"
        with running_agent(cfg) as agent:
            done = ended(agent, dep_id)
            assert done["state"] == "promoted", done
            assert done["checks"]["bake_started_ms"] == baking["checks"]["bake_started_ms"]
            assert "deploy.resumed" in deploy_events(agent, dep_id)
            assert srv_pid(agent) == new_pid  # the new copy, adopted, never restarted
            assert include_address(nginx) == f"127.0.0.1:{green}"
            assert gone(old_pid) and not listening(blue)
            adopted = [e for e in events(agent, "process.adopted") if e["data"]["pid"] == old_pid]
            assert adopted  # the old copy was adopted as the serving one first
    finally:
        client.stop()
    no_failures(client)


def test_agent_killed_in_the_middle_of_the_switch_switches_again_and_promotes(
    bg: tuple[Path, Path, tuple[int, int], RunningNginx],
) -> None:
    """Killed after nginx's include was rewritten and before nginx was reloaded: the include
    names the new copy while nginx still sends the traffic to the old one. The next agent
    does not take the include's word (only a confirmed switch stored with the deploy counts):
    it switches again, and only then drains and stops the old copy."""
    tmp, link, (blue, green), nginx = bg
    v2 = version(tmp, "v2")
    held, entered = tmp / "hold-nginx-t", tmp / "nginx-t-entered"
    script = tmp / "nginx-t"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{held}" ]; then touch "{entered}"; '
        f'while [ -e "{held}" ]; do sleep 0.05; done; fi\n'
        f'exec "{NGINX}" -p "{nginx.prefix}" -c "{nginx.conf}" -e "{nginx.error_log}" -t\n'
    )
    script.chmod(0o755)
    cfg = config(
        tmp, link, (blue, green), nginx, bake="1500ms", nginx_extra=f'test_argv = ["{script}"]'
    )
    client = SteadyClient(nginx.url, PATH, rate_per_s=100)
    try:
        with running_agent(cfg) as agent:
            wait_for(lambda: model_up(agent), 60, what="clf up")
            client.start()
            code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
            assert code == 202, body
            dep_id = body["deployment"]["id"]
            in_state(agent, dep_id, "baking")
            held.touch()  # the switch's nginx -t waits from now on
            wait_for(entered.exists, 60, what="the switch's nginx -t")
            assert include_address(nginx) == f"127.0.0.1:{green}"  # written, not reloaded
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(10)
            (agent.data_dir / "api.json").unlink()
        assert upstream_seen(nginx) == f"127.0.0.1:{blue}"  # nginx still on the old copy
        held.unlink()
        with running_agent(cfg) as agent:
            done = ended(agent, dep_id)
            assert done["state"] == "promoted", done
            assert done["checks"]["switch"]["address"] == f"127.0.0.1:{green}"
            assert upstream_seen(nginx) == f"127.0.0.1:{green}"
            assert not listening(blue)
    finally:
        client.stop()
    no_failures(client)


def test_an_agent_stopped_with_on_exit_stop_stops_the_new_copy_too(
    bg: tuple[Path, Path, tuple[int, int], RunningNginx],
) -> None:
    """on_exit = "stop": the model's copies stop with the agent, the one a bake started too;
    the next agent finds the new copy gone and rolls the deploy back onto the first port."""
    tmp, link, (blue, green), nginx = bg
    v2 = version(tmp, "v2")
    cfg = config(tmp, link, (blue, green), nginx, bake="30s", on_exit="stop")
    with running_agent(cfg) as agent:
        wait_for(lambda: model_up(agent), 60, what="clf up")
        code, body = call(agent, "POST", "/api/v1/models/clf/deploy", {"artifact": str(v2)})
        assert code == 202, body
        dep_id = body["deployment"]["id"]
        baking = in_state(agent, dep_id, "baking")
        new_pid = baking["checks"]["candidate"]["pid"]
    assert gone(new_pid) and not listening(green) and not listening(blue)
    with running_agent(cfg) as agent:
        done = ended(agent, dep_id)
        assert done["state"] == "rolled_back", done
        wait_for(lambda: model_up(agent), 60, what="clf up on blue")
        assert str(blue) in process(agent)["argv"] and not listening(green)
        assert upstream_seen(nginx) == f"127.0.0.1:{blue}"
