"""What the ``inplace`` and ``rollback`` sections of ``bench/rollout.py`` share: the demo agent
(``vigil demo``'s own config, model server and versions), deploys through its API, and an
independent client that asks the model server for an answer every 10 ms.

The client is the ground truth the sections compare Vigil's records with: it knows nothing of
the agent, only which answers came back when. Times are wall-clock epoch milliseconds (the
agent's records use the same clock, on the same host).
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchlib import BenchError, wait_for

from agent.cli.demo import MODEL_NAME, start_demo_agent, stop_agent

CANARY = {
    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}
"""The demo's canary input: the client asks what the probes ask."""


@dataclass(frozen=True, slots=True)
class Poll:
    """One request of the client: sent and answered (epoch ms), and the answer (None: failed)."""

    sent_ms: float
    done_ms: float
    answer: tuple[float, ...] | None


@dataclass
class Poller:
    """A thread asking the model server every ``interval_s`` over one keep-alive connection
    (a new one after a failure), keeping every answer."""

    url: str
    interval_s: float = 0.010
    polls: list[Poll] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        parts = urlsplit(self.url)
        body = json.dumps(CANARY).encode()
        path = f"/v2/models/{MODEL_NAME}/infer"
        conn: http.client.HTTPConnection | None = None
        tick = time.monotonic()
        while not self._stop.is_set():
            sent = time.time() * 1000
            answer: tuple[float, ...] | None = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 200:
                    answer = tuple(json.loads(data)["outputs"][0]["data"])
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                if conn is not None:
                    conn.close()
                conn = None
            self.polls.append(Poll(sent, time.time() * 1000, answer))
            tick += self.interval_s
            self._stop.wait(max(0.0, tick - time.monotonic()))
        if conn is not None:
            conn.close()

    def answered(self, answer: tuple[float, ...], after_ms: float) -> bool:
        """True once a poll sent after ``after_ms`` got ``answer``."""
        return any(p.answer == answer for p in self.between(after_ms, float("inf")))

    def between(self, start_ms: float, end_ms: float) -> list[Poll]:
        """The polls sent in ``[start_ms, end_ms]`` (a copy: the thread keeps appending)."""
        return [p for p in list(self.polls) if start_ms <= p.sent_ms <= end_ms]


@dataclass
class DemoSite:
    """The running demo agent: its API, its model server's URL, its versions."""

    workdir: Path
    url: str
    token: str
    model_url: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "X-Vigil-Operator": "bench"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise BenchError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from None

    def version(self, name: str) -> Path:
        return self.workdir / "versions" / name

    def ok_runs_since(self, since_ms: int) -> int:
        runs = self.call("GET", f"/api/v1/probe_runs?model={MODEL_NAME}&limit=50")["probe_runs"]
        return sum(1 for r in runs if r["category"] == "ok" and r["ts_ms"] > since_ms)

    def settle(self, since_ms: int, runs: int = 3) -> None:
        """Wait for ``runs`` ok probe runs after ``since_ms``: the next deploy's baseline (two
        equal answers make its golden answer)."""
        wait_for(lambda: self.ok_runs_since(since_ms) >= runs, 60, f"{runs} ok probe runs")

    def deploy(self, version: str, bake: str) -> dict[str, Any]:
        """Deploy a version through the API and wait for its end; the deployment as stored."""
        body = {"artifact": str(self.version(version)), "bake": bake, "actor": "bench"}
        dep = self.call("POST", f"/api/v1/models/{MODEL_NAME}/deploy", body)["deployment"]

        def ended() -> dict[str, Any]:
            d: dict[str, Any] = self.call("GET", f"/api/v1/deployments/{dep['id']}")["deployment"]
            return {} if d["in_flight"] else d

        done: dict[str, Any] = wait_for(ended, 120, f"deployment {dep['id']} to end", 0.1)
        return done

    def state_changes(self, since_ms: int) -> list[dict[str, Any]]:
        """The model's state changes since ``since_ms``, oldest first."""
        events = self.call(
            "GET",
            f"/api/v1/events?kind=model.state_changed&subject=model:{MODEL_NAME}"
            f"&since={since_ms}&limit=1000",
        )["events"]
        return sorted(events, key=lambda e: (e["ts_ms"], e["seq"]))


@contextmanager
def demo_site() -> Iterator[DemoSite]:
    """The demo agent in a temporary directory, stopped (with its model server) at the end."""
    with tempfile.TemporaryDirectory(prefix="vigil-bench-demo-") as tmp:
        workdir = Path(tmp)
        try:
            proc, url, token = start_demo_agent(workdir)
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        try:
            config = tomllib.loads((workdir / "vigil.toml").read_text(encoding="utf-8"))
            site = DemoSite(workdir, url, token, str(config["model"][0]["url"]))
            site.settle(0)
            yield site
        finally:
            stop_agent(proc)


def longest_gap(polls: list[Poll]) -> tuple[float, int]:
    """The longest time between two consecutive answered polls (answer arrival to answer
    arrival, ms) and the failed polls inside it."""
    best, failed_in, failed = 0.0, 0, 0
    last: Poll | None = None
    for p in polls:
        if p.answer is None:
            failed += 1
            continue
        if last is not None and p.done_ms - last.done_ms > best:
            best, failed_in = p.done_ms - last.done_ms, failed
        last, failed = p, 0
    return best, failed_in
