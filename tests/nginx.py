"""A real nginx on loopback for blue-green tests, the colour backends behind it, a steady client.

- :func:`running_nginx`: Debian's nginx started by the test in its own prefix (config, pid
  file, logs, temp paths all in the test's tmp dir, ``-e`` so even the start-up log goes
  there), listening on 127.0.0.1 only, in the foreground (``daemon off``) as the current user,
  and stopped after. It never touches a system nginx. Each model gets the upstream block and
  location docs/deploy.md tells operators to write, the block including the Vigil-owned file.
- :func:`color_backend`: ``tests/fakes/color_server.py``, a copy of a model answering its colour.
- :class:`SteadyClient`: requests at a steady rate through the proxy, over a keep-alive
  connection and over new ones, recording every answer.

nginx cannot listen on port 0 and report the port, so a free port is found by binding port 0
and closing the socket first (the small race :mod:`tests.sshd` accepts too).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.deploy.proxysettings import ConfirmSettings, NginxSettings
from tests.helpers import ROOT, wait_for

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
COLOR_SERVER = ROOT / "tests" / "fakes" / "color_server.py"


def nginx_missing() -> str | None:
    """Why a real nginx test cannot run here, or None."""
    if NGINX is None:
        return "nginx is not installed (Debian's nginx package; scripts/debian-deps.sh)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    """A running colour server."""

    color: str
    address: str
    proc: subprocess.Popen[str]


@contextmanager
def color_backend(color: str) -> Iterator[Backend]:
    """A colour server on a free loopback port, stopped after."""
    proc = subprocess.Popen(
        [sys.executable, "-S", str(COLOR_SERVER), "--color", color],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://"), f"color server said {line!r}"
        yield Backend(color, line.strip().removeprefix("listening on http://"), proc)
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class RunningNginx:
    """A running nginx in a tmp prefix and the paths a switch needs."""

    prefix: Path
    conf: Path
    pid_file: Path
    include_dir: Path
    error_log: Path
    operator_conf: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def confirm_url(self, model: str) -> str:
        return f"{self.url}/{model}/vigil-upstream"

    def settings(self, model: str = "m", **overrides: Any) -> NginxSettings:
        """Settings for a switch in front of this nginx: pid file and confirm URL both set."""
        assert NGINX is not None
        base = NginxSettings(
            include_dir=str(self.include_dir),
            nginx=NGINX,
            prefix=str(self.prefix),
            conf=str(self.conf),
            extra_args=("-e", str(self.error_log)),
            pid_file=str(self.pid_file),
            confirm=ConfirmSettings(url=self.confirm_url(model), timeout_s=10.0),
        )
        return replace(base, **overrides)

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""


def nginx_conf(prefix: Path, port: int, models: dict[str, str], site: str | None = None) -> str:
    """The test's nginx.conf in ``prefix``: docs/deploy.md's site, an upstream and a location
    per model (or ``site``, the ``upstream`` and ``server`` blocks given whole); the workers run
    as root when the test does (nginx would switch them to nobody, who cannot read the tmp
    dir)."""
    root = os.geteuid() == 0
    include_dir = prefix / "vigil"
    blocks = []
    for model in models:
        blocks.append(f"""
    upstream vigil_{model} {{
        include {include_dir}/{model}.upstream.conf;
        keepalive 16;
        keepalive_timeout 4s;
    }}""")
    locations = []
    for model in models:
        locations.append(f"""
        location /{model}/ {{
            proxy_pass http://vigil_{model}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /{model}/vigil-upstream {{
            proxy_pass http://vigil_{model}/health;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Vigil-Upstream $upstream_addr always;
        }}""")
    default_site = f"""{"".join(blocks)}
    server {{
        listen 127.0.0.1:{port};
{"".join(locations)}
    }}"""
    p = prefix
    return f"""
{"user root;" if root else ""}
worker_processes 2;
pid {p}/nginx.pid;
error_log {p}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    include {p}/operator.conf;
{site if site is not None else default_site}
}}
"""


@contextmanager
def running_nginx(
    tmp_path: Path, models: dict[str, str], site: Callable[[Path, int], str] | None = None
) -> Iterator[RunningNginx]:
    """nginx on a free loopback port, each model's include pointing at its given address.

    ``site(include_dir, port)``, when given, returns the ``http`` block's upstreams and
    servers instead of the built-in ones (docs/deploy.md's own example, say).
    """
    assert NGINX is not None
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    include_dir = prefix / "vigil"
    include_dir.mkdir()
    for model, address in models.items():
        (include_dir / f"{model}.upstream.conf").write_text(f"server {address};\n")
    operator_conf = prefix / "operator.conf"
    operator_conf.write_text("# the operator's own directives\n")
    conf = prefix / "nginx.conf"
    error_log = prefix / "error.log"
    argv = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(error_log)]
    port = free_port()
    conf.write_text(nginx_conf(prefix, port, models, site and site(include_dir, port)))
    subprocess.run([*argv, "-t", "-q"], check=True, capture_output=True)
    proc = subprocess.Popen([*argv, "-g", "daemon off;"])
    run = RunningNginx(
        prefix, conf, prefix / "nginx.pid", include_dir, error_log, operator_conf, port, proc
    )
    try:
        wait_for(
            lambda: run.proc.poll() is not None or _accepts(run.port),
            what=f"nginx listening on 127.0.0.1:{run.port}",
        )
        assert run.proc.poll() is None, f"nginx exited {run.proc.returncode}: {run.log()}"
        wait_for(run.pid_file.exists, what="nginx pid file")
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(15)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def get(url_base: str, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """One GET on a new connection."""
    host, port = url_base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


@dataclass(frozen=True)
class Answer:
    """One request of the steady client: when it started and ended, and what came back."""

    start: float
    end: float
    body: str | None
    error: str | None
    keepalive: bool
    retried: bool


# A reused keep-alive connection the server closed without answering (an old nginx worker
# closes its idle connections when it stops): RFC 9112 §9.3.1 lets a client retry the request
# on a new connection, and HTTP clients do (urllib3, aiohttp, Go, curl, browsers).
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass
class SteadyClient:
    """Requests ``path`` through the proxy at ``rate_per_s`` in a thread until stopped.

    Every ``new_every``-th request opens a new connection; the others reuse one keep-alive
    connection. A request that fails on a reused connection before any answer is retried once
    on a new one (``retried``); every other error, or a non-200, is a failure.
    """

    base_url: str
    path: str
    rate_per_s: float = 100.0
    new_every: int = 3
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SteadyClient:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.error is not None]

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self.base_url.removeprefix("http://").split(":")
        return http.client.HTTPConnection(host, int(port), timeout=10)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        interval = 1.0 / self.rate_per_s
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            n += 1
            fresh = conn is None or n % self.new_every == 0
            if fresh and conn is not None:
                conn.close()
                conn = None
            if conn is None:
                conn = self._connect()
            start = time.monotonic()
            retried = False
            try:
                try:
                    body = self._one(conn)
                except STALE:
                    if fresh:
                        raise
                    conn.close()
                    conn, retried = self._connect(), True
                    body = self._one(conn)
                self.answers.append(Answer(start, time.monotonic(), body, None, not fresh, retried))
            except Exception as exc:
                self.answers.append(
                    Answer(start, time.monotonic(), None, repr(exc), not fresh, retried)
                )
                conn.close()
                conn = None
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()

    def _one(self, conn: http.client.HTTPConnection) -> str:
        conn.request("GET", self.path)
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body[:200]}")
        return body
