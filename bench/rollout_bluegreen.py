"""``bench/rollout.py --only bluegreen``: whole blue-green deploys through nginx, under load.

A real agent (``vigil agent run``) supervises the demo model server (``agent.demo.server``, the
bundled iris ONNX model) as a blue-green model: its ``[[process]]`` command names ``{port}`` and
``{artifact}``, its two ports alternate, and a real nginx (Debian's package, started in a
temporary prefix on loopback with docs/deploy.md's site: ``keepalive 16``, ``keepalive_timeout
4s``, 2 workers) fronts it through the include Vigil owns, switched by pid file and confirm URL.
The versions are copies of the ONNX file (``versions/a.onnx``, ``versions/b.onnx``), deployed
in turn through the agent's API, ``--bluegreen-count`` times: each deploy starts the new copy on
the spare port, bakes it there (``--bluegreen-bake``, canaries every 250 ms, 3 good in a row),
switches nginx, drains and stops the old copy.

A steady client (``tests.nginx.SteadyClient``, one thread) sends ``--bluegreen-rate`` GETs a
second through nginx (the model's metadata, which every copy serves), every third on a new
connection and the others on one keep-alive connection; a request that fails on a reused
connection before any answer is retried once on a new one, as HTTP clients do (RFC 9112
§9.3.1), and counted apart as a *stale keep-alive retry*.

Reported: failed requests (target 0) and stale keep-alive retries over all deploys; per
deploy, the switch time as Vigil stored it (write + ``nginx -t`` + reload + confirmed) and its
steps, the drain of the old copy, the promotion (gate passed to old copy stopped), and the
whole deploy (request to promoted).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from benchlib import BenchError, percentiles, wait_for

from agent.demo import MODEL_PATH
from tests.helpers import RunningAgent, running_agent, write_config
from tests.nginx import NGINX, RunningNginx, SteadyClient, free_port, nginx_missing, running_nginx

MODEL = "iris"
CANARY = '{ name = "input", shape = [1, 4], datatype = "FP32", data = [5.1, 3.5, 1.4, 0.2] }'


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("bluegreen")
    group.add_argument("--bluegreen-count", type=int, default=20, help="deploys (default 20)")
    group.add_argument(
        "--bluegreen-rate", type=float, default=200.0, help="client requests/s (default 200)"
    )
    group.add_argument("--bluegreen-bake", default="1s", help="each deploy's bake (default 1s)")


def site(include_dir: Path, port: int) -> str:
    """docs/deploy.md's site for the demo model, confirmed on its health route."""
    return f"""
    upstream vigil_{MODEL} {{
        include {include_dir}/{MODEL}.upstream.conf;
        keepalive 16;
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /{MODEL}/ {{
            proxy_pass http://vigil_{MODEL}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /{MODEL}/vigil-upstream {{
            proxy_pass http://vigil_{MODEL}/v2/health/ready;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Vigil-Upstream $upstream_addr always;
        }}
    }}"""


def agent_config(
    tmp: Path, link: Path, ports: tuple[int, int], nginx: RunningNginx, bake: str
) -> Path:
    argv = [sys.executable, "-m", "agent.demo.server", "--model", "{artifact}", "--name", MODEL]
    argv += ["--host", "127.0.0.1", "--port", "{port}"]
    return write_config(
        tmp,
        f"""
[[process]]
name = "demo-model-server"
command = {json.dumps(argv)}
stop_timeout = "10s"
startup_timeout = "60s"

[[model]]
name = "{MODEL}"
protocol = "kserve_v2"
url = "http://127.0.0.1:{{port}}"
interval = "250ms"
jitter = "0s"
timeout = "2s"
process = "demo-model-server"

[model.canary]
inputs = [{CANARY}]

[model.deploy]
strategy = "blue-green"
link = "{link}"
ports = [{ports[0]}, {ports[1]}]
bake = "{bake}"
min_good_canaries = 3
latency_min_delta = "100ms"
drain_timeout = "30s"

[model.deploy.nginx]
include_dir = "{nginx.include_dir}"
nginx = "{NGINX}"
prefix = "{nginx.prefix}"
conf = "{nginx.conf}"
extra_args = ["-e", "{nginx.error_log}"]
pid_file = "{nginx.pid_file}"
confirm_url = "{nginx.url}/{MODEL}/vigil-upstream"
""",
        sample_interval="1s",
    )


def call(agent: RunningAgent, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {agent.token}", "X-Vigil-Operator": "bench"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif method == "POST":
        data = b""
    req = urllib.request.Request(agent.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from None


def model_up(agent: RunningAgent) -> bool:
    models = call(agent, "GET", "/api/v1/status")["models"]
    return any(m["name"] == MODEL and m["state"] == "up" for m in models)


def deploy(agent: RunningAgent, artifact: Path) -> dict[str, Any]:
    body = {"artifact": str(artifact), "actor": "bench"}
    dep = call(agent, "POST", f"/api/v1/models/{MODEL}/deploy", body)["deployment"]

    def ended() -> dict[str, Any]:
        d: dict[str, Any] = call(agent, "GET", f"/api/v1/deployments/{dep['id']}")["deployment"]
        return {} if d["in_flight"] else d

    done: dict[str, Any] = wait_for(ended, 180, f"deployment {dep['id']} to end", 0.05)
    return done


def run(args: argparse.Namespace) -> dict[str, Any]:
    why = nginx_missing()
    if why is not None:
        raise BenchError(why)
    nginx_version = subprocess.run(
        [str(NGINX), "-v"], capture_output=True, text=True, check=False
    ).stderr.strip()
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-bluegreen-"))
    try:
        return _run(args, tmp) | {"nginx": nginx_version}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    versions = tmp / "versions"
    versions.mkdir()
    copies = [versions / "a.onnx", versions / "b.onnx"]
    for path in copies:
        shutil.copyfile(MODEL_PATH, path)
    link = tmp / "current"
    link.symlink_to(copies[0])
    ports = (free_port(), free_port())
    deps: list[dict[str, Any]] = []
    with running_nginx(tmp, {MODEL: f"127.0.0.1:{ports[0]}"}, site) as nginx:
        cfg = agent_config(tmp, link, ports, nginx, args.bluegreen_bake)
        with running_agent(cfg, startup_timeout=60) as agent:
            wait_for(lambda: model_up(agent), 90, "the model up", 0.1)
            path = f"/{MODEL}/v2/models/{MODEL}"
            client = SteadyClient(nginx.url, path, rate_per_s=args.bluegreen_rate).start()
            try:
                wait_for(lambda: len(client.answers) >= 50, 30, "the client under way")
                for i in range(args.bluegreen_count):
                    deps.append(deploy(agent, copies[(i + 1) % 2]))
                    wait_for(lambda: model_up(agent), 30, "the model up after the deploy", 0.05)
                time.sleep(0.5)
            finally:
                client.stop()
            limit = 10 * args.bluegreen_count + 10
            events = call(agent, "GET", f"/api/v1/events?kind=deploy.promoting&limit={limit}")
            promoting = {e["data"]["deployment"]: e["ts_ms"] for e in events["events"]}
    return _record(args, deps, client, promoting)


def _record(
    args: argparse.Namespace,
    deps: list[dict[str, Any]],
    client: SteadyClient,
    promoting: dict[int, int],
) -> dict[str, Any]:
    promoted = [d for d in deps if d["state"] == "promoted"]
    switches = [d["checks"]["switch"] for d in promoted if "switch" in d["checks"]]
    finish = [d["checks"].get("finish") or {} for d in promoted]

    def ms(values: list[float]) -> dict[str, float]:
        return percentiles(values, (50, 95), 1)

    answers = client.answers
    span_s = answers[-1].end - answers[0].start if answers else 0.0
    record: dict[str, Any] = {
        "settings": {
            "deploys": args.bluegreen_count,
            "rate_per_s": args.bluegreen_rate,
            "bake": args.bluegreen_bake,
            "nginx_workers": 2,
            "client": "one thread, http.client; every 3rd request on a new connection",
            "confirm": "worker generation (pid file) + URL answering from the new address x3",
        },
        "states": {s: sum(1 for d in deps if d["state"] == s) for s in {d["state"] for d in deps}},
        "errors": [d["error"] for d in deps if d["state"] != "promoted"][:5],
        "switch_ms": {
            "total": ms([s["total_ms"] for s in switches]),
            "write": ms([s["write_ms"] for s in switches]),
            "nginx_t": ms([s["check_ms"] for s in switches]),
            "reload": ms([s["reload_ms"] for s in switches]),
            "confirm": ms([s["confirm_ms"] for s in switches]),
        },
        "drain_ms": ms([f["drain"]["waited_ms"] for f in finish if "drain" in f]),
        "drained": sum(1 for f in finish if f.get("drain", {}).get("drained")),
        "promote_ms": ms(
            [d["finished_ms"] - promoting[d["id"]] for d in promoted if d["id"] in promoting]
        ),
        "deploy_s": percentiles(
            [(d["finished_ms"] - d["requested_ms"]) / 1000 for d in promoted], (50, 95), 2
        ),
        "requests": len(answers),
        "achieved_rate_per_s": round(len(answers) / span_s, 1) if span_s else 0.0,
        "failed": len(client.failures()),
        "failures": [a.error for a in client.failures()][:5],
        "stale_keepalive_retries": sum(a.retried for a in answers),
        "client_latency_ms": percentiles([(a.end - a.start) * 1000 for a in answers], (50, 99), 2),
    }
    record["targets_met"] = {
        "no failed request": record["failed"] == 0,
        "every deploy promoted": len(promoted) == args.bluegreen_count,
        "every old copy drained": record["drained"] == len(promoted),
    }
    return record


def render(r: dict[str, Any]) -> str:
    s = r["settings"]
    sw = r["switch_ms"]
    lines = [
        f"{r['nginx']}; {s['deploys']} blue-green deploys (bake {s['bake']}), client at "
        f"{s['rate_per_s']:g} req/s (achieved {r['achieved_rate_per_s']:g}); states {r['states']}",
        "",
        "| per deploy (ms) | p50 | p95 | max |",
        "|---|---:|---:|---:|",
    ]
    for key, label in [
        ("total", "**switch** (write + test + reload + confirmed)"),
        ("write", "write the include"),
        ("nginx_t", "`nginx -t`"),
        ("reload", "reload (SIGHUP)"),
        ("confirm", "confirm (worker generation; URL x3)"),
    ]:
        p = sw[key]
        if p.get("n"):
            lines.append(f"| {label} | {p['p50']} | {p['p95']} | {p['max']} |")
    for key, label in [("drain_ms", "old copy drained"), ("promote_ms", "gate passed to promoted")]:
        p = r[key]
        if p.get("n"):
            lines.append(f"| {label} | {p['p50']} | {p['p95']} | {p['max']} |")
    d = r["deploy_s"]
    if d.get("n"):
        lines.append(
            f"| whole deploy, request to promoted (s) | {d['p50']} | {d['p95']} | {d['max']} |"
        )
    lat = r["client_latency_ms"]
    lines += [
        "",
        f"requests {r['requests']}, **failed {r['failed']}**, stale keep-alive retries "
        f"{r['stale_keepalive_retries']}, drained {r['drained']}; client latency p50 "
        f"{lat.get('p50')} ms, p99 {lat.get('p99')} ms, max {lat.get('max')} ms",
        "targets: "
        + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["targets_met"].items()),
    ]
    if r["errors"]:
        lines.append("errors: " + "; ".join(r["errors"]))
    return "\n".join(lines)
