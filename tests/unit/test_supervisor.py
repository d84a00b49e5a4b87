"""The supervisor in-process, on real child processes (agent.supervise: supervisor, targets).

Each test runs a real :class:`Supervisor` on a temporary data dir, with a list for its audit
events and a real :class:`IncidentBook` over a real writer. The supervised processes are real:
``tests/fakes/managed_server.py`` crashes, hangs, ignores SIGTERM, forks workers that outlive
it, holds ports or crashes only at start-up, on demand. Linked models are probed with the real
tcp/http probes; only where a real probe would be awkward (a stalled generation) is a
:class:`ProbeRun` fed in by hand. Waits are on events and states, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from agent.config import ConfigError, ProcessConfig, parse_config
from agent.health.incidents import IncidentBook
from agent.supervise import supervisor
from agent.supervise.proclogs import ProcessLog
from agent.supervise.supervisor import RECORDS_FILE, ActionError, ManagedProcess, Supervisor
from probes.base import Probe, ProbeTarget, now_ms
from probes.httpclient import HttpClient
from probes.registry import PROBES
from storage.records import Event, ProbeRun
from storage.writer import Writer
from tests.fakes import systemctl

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "managed_server.py"
T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on (bind to 0, read it, release it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server(*args: object) -> tuple[str, ...]:
    """The argv of the stand-in model server with these options."""
    return (sys.executable, "-S", str(FAKE), *(str(a) for a in args))


def proc(name: str, command: tuple[str, ...] = (), **kw: Any) -> ProcessConfig:
    """A process config with test-sized durations (no jitter, so delays are exact)."""
    defaults: dict[str, Any] = {
        "stop_timeout_s": 0.5,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 1.0,
        "backoff_jitter": 0.0,
        "startup_timeout_s": 10.0,
    }
    return ProcessConfig(name=name, command=command, **{**defaults, **kw})


def alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it only waits to be reaped)."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


class Rig:
    """A supervisor with everything it talks to, recorded."""

    def __init__(self, tmp: Path, writer: Writer, session: HttpClient) -> None:
        self.tmp = tmp
        self.events: list[Event] = []
        self.book = IncidentBook(writer, self.events.append)
        self.session = session
        self.probes: dict[str, Probe] = {}
        self.runs: list[ProbeRun] = []
        self.sup = Supervisor(tmp / "data", self.events.append, self.book, probe_now=self.probe_now)
        self._probers: list[asyncio.Task[None]] = []

    # --- probes ------------------------------------------------------------------------

    def model(self, name: str, protocol: str, url: str, timeout_s: float = 1.0) -> None:
        """A model probed for real (tcp or http)."""
        self.probes[name] = PROBES[protocol](ProbeTarget(name=name, url=url, timeout_s=timeout_s))

    async def probe_now(self, models: list[str]) -> None:
        """What the agent does when the startup gate asks: probe, route the result."""
        for m in models:
            await self.probe(m)

    async def probe(self, model: str) -> ProbeRun:
        run = await self.probes[model].run(self.session)
        self.runs.append(run)
        self.sup.on_probe(model, run)
        return run

    def keep_probing(self, model: str, every_s: float = 0.05) -> None:
        """The agent's schedule: probe ``model`` every ``every_s`` until the test ends."""

        async def loop() -> None:
            while True:
                await self.probe(model)
                await asyncio.sleep(every_s)

        self._probers.append(asyncio.create_task(loop()))

    # --- looking at what happened ------------------------------------------------------

    def of(self, kind: str, name: str | None = None) -> list[Event]:
        """Events of ``kind`` (about process ``name``), oldest first."""
        subject = f"process:{name}" if name else None
        return [e for e in self.events if e.kind == kind and subject in (None, e.subject)]

    def kinds(self, name: str) -> list[str]:
        return [e.kind for e in self.events if e.subject == f"process:{name}"]

    def incidents(self, kind: str, event: str = "incident.opened") -> list[Event]:
        return [e for e in self.events if e.kind == event and e.data["kind"] == kind]

    def mp(self, name: str) -> ManagedProcess:
        return self.sup.processes[name]

    async def until(
        self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition"
    ) -> T:
        """Await ``predicate`` turning truthy (checked between the supervisor's steps)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                states = {n: (m.state, m.detail) for n, m in self.sup.processes.items()}
                recent = [(e.kind, e.subject, e.message) for e in self.events[-8:]]
                raise AssertionError(f"timed out waiting for {what}: {states} {recent}")
            await asyncio.sleep(0.01)

    async def event(self, kind: str, name: str, n: int = 1, timeout: float = 10.0) -> Event:
        """The ``n``-th event of ``kind`` about ``name``, once it has happened."""
        found = await self.until(
            lambda: len(self.of(kind, name)) >= n, timeout, f"{n} x {kind} of {name}"
        )
        assert found
        return self.of(kind, name)[n - 1]

    async def state(self, name: str, state: str, timeout: float = 10.0) -> ManagedProcess:
        mp = self.mp(name)
        await self.until(lambda: mp.state == state, timeout, f"{name} {state}")
        return mp

    async def close(self) -> None:
        for t in self._probers:
            t.cancel()
        for t in self._probers:
            with pytest.raises(asyncio.CancelledError):
                await t
        await self.sup.stop_all()
        for p in self.probes.values():
            await p.close()


def _kill_strays(tmp: Path) -> None:
    """Whatever a test's fakes left behind (the test fails on its own assertions): our
    children, and processes whose pid a fake wrote into a ``*.pid`` file (forked workers and
    spawned servers are not our children). Only fakes: other fixtures' children are theirs."""
    procs = psutil.Process().children(recursive=True)
    for pid in filter(None, map(read_pid, tmp.rglob("*.pid"))):
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if str(FAKE) in " ".join(p.cmdline()):
                p.kill()


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[[], Rig]]:
    """Rigs sharing one data dir (a second one plays the restarted agent); all stopped after."""
    writer = Writer(tmp_path / "vigil.db")
    writer.start()
    session = HttpClient()
    rigs: list[Rig] = []

    def make() -> Rig:
        rigs.append(Rig(tmp_path, writer, session))
        return rigs[-1]

    try:
        yield make
    finally:
        try:
            for r in reversed(rigs):  # a later rig may have adopted an earlier one's child
                await r.close()
        finally:
            await session.close()
            await asyncio.to_thread(writer.close)
            _kill_strays(tmp_path)


@pytest.fixture
def rig(make_rig: Callable[[], Rig]) -> Rig:
    return make_rig()


def delays(rig: Rig, name: str) -> list[float]:
    return [e.data["delay_s"] for e in rig.of("process.restarting", name)]


# --- exits, backoff, restart policies, quarantine ---------------------------------------------


async def test_crash_loop_backs_off_growing_then_quarantines_until_released(
    rig: Rig, tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    port = free_port()
    await rig.sup.apply(
        (
            proc(
                "crashy",
                server("--counter", counter, "--crash-first", 1000, "--port", port),
                port=port,
                backoff_initial_s=0.05,
                backoff_factor=2.0,
                backoff_max_s=0.15,
                quarantine_after=4,
                quarantine_window_s=60.0,
            ),
        )
    )
    mp = await rig.state("crashy", "quarantined")
    # The first restart is immediate, then 50 ms doubling per restart, capped at 150 ms; the
    # exit after the 4th restart (within the window) quarantines instead of a 5th.
    assert delays(rig, "crashy") == [0.0, 0.05, 0.1, 0.15]
    assert counter.read_text() == "5"
    assert mp.restarts == 4 and mp.pid is None and mp.last_exit == "exit 1"

    exits = rig.of("process.exited", "crashy")
    assert [e.data["returncode"] for e in exits] == [1] * 5
    # Evidence: the tail of the process's own output, from the run that just died.
    assert "fatal: start-up failed on run 5" in exits[-1].data["log_tail"][-1]
    assert all(e.data["uptime_s"] >= 0 for e in exits)
    quarantined = rig.of("process.quarantined", "crashy")[0]
    assert "4 restarts within 60s" in quarantined.message
    assert "fatal: start-up failed on run 5" in "\n".join(quarantined.data["log_tail"])
    # One incident for the crash loop (it never came up in between), one for the quarantine.
    assert [e.data["kind"] for e in rig.of("incident.opened")] == [
        "process_exited",
        "process_quarantined",
    ]
    assert mp.status().incident == rig.of("incident.opened")[0].data["incident"]

    # Quarantined means no more restarts until an operator releases it; released (here by a
    # start), it starts again at once, and this time its run comes up.
    counter.write_text("1000")
    assert rig.sup.act("crashy", "start", "ops@host").state == "quarantined"
    await rig.event("process.released", "crashy")
    await rig.state("crashy", "running")
    assert counter.read_text() == "1001"
    assert rig.of("process.released", "crashy")[0].data["by"] == "ops@host"
    resolved = await rig.until(lambda: len(rig.of("incident.resolved")) == 2, what="resolved")
    assert {e.data["kind"] for e in rig.of("incident.resolved")} == {
        "process_exited",
        "process_quarantined",
    }
    assert all(e.data["ttr_ms"] >= 0 for e in rig.of("incident.resolved")) and resolved
    assert mp.status().incident is None


async def test_first_restart_after_a_healthy_run_is_immediate(rig: Rig, tmp_path: Path) -> None:
    # Runs 1 and 2 crash at start-up; run 3 stays up 1.2 s, longer than backoff_reset, so its
    # crash counts as the first after a healthy period.
    await rig.sup.apply(
        (
            proc(
                "flaky",
                server(
                    "--counter", tmp_path / "n", "--crash-first", 2, "--exit", 1, "--run-for", 1.2
                ),
                backoff_reset_s=1.0,
                quarantine_after=0,
            ),
        )
    )
    await rig.event("process.restarting", "flaky", n=3)
    assert delays(rig, "flaky")[:3] == [0.0, 0.05, 0.0]


def test_backoff_jitter_stretches_each_delay_within_its_bound(tmp_path: Path) -> None:
    cfg = proc(
        "p",
        ("true",),
        backoff_initial_s=1.0,
        backoff_factor=3.0,
        backoff_max_s=20.0,
        backoff_jitter=0.5,
    )
    mp = ManagedProcess(cfg, Supervisor(tmp_path, lambda e: None))
    got = [mp.history.next_delay() for _ in range(6)]
    assert got[0] == 0.0
    for delay, base in zip(got[1:], [1.0, 3.0, 9.0, 20.0, 20.0], strict=True):
        assert base <= delay <= base * 1.5


@pytest.mark.parametrize(
    ("policy", "code", "restarts", "final", "incident"),
    [
        ("always", 0, True, None, None),
        ("always", 3, True, None, None),
        ("on-failure", 3, True, None, None),
        ("on-failure", 0, False, "exited", None),
        ("never", 3, False, "failed", "process_exited"),
        ("never", 0, False, "exited", None),
    ],
)
async def test_restart_policy(
    rig: Rig, policy: str, code: int, restarts: bool, final: str | None, incident: str | None
) -> None:
    await rig.sup.apply((proc("p", server("--exit", code), restart=policy, quarantine_after=1),))
    first = await rig.event("process.exited", "p")
    assert first.data["returncode"] == code
    assert f"exit {code} after" in first.message
    if restarts:
        await rig.event("process.started", "p", n=2)
        # quarantine_after = 1 ends the loop at the second exit.
        await rig.state("p", "quarantined")
        assert rig.kinds("p").count("process.restarting") == 1
        return
    mp = await rig.state("p", final or "")
    assert mp.last_exit == f"exit {code}" and mp.detail == f"exit {code}"
    assert rig.kinds("p").count("process.started") == 1
    assert "process.restarting" not in rig.kinds("p")
    assert [e.data["kind"] for e in rig.of("incident.opened")] == ([incident] if incident else [])
    # An operator may start it again.
    rig.sup.act("p", "start", "ops")
    await rig.event("process.started", "p", n=2)


# --- the startup gate ---------------------------------------------------------------------------


async def test_starting_until_the_linked_model_answers(rig: Rig, tmp_path: Path) -> None:
    port, loaded = free_port(), tmp_path / "loaded"
    rig.model("llm", "tcp", f"tcp://127.0.0.1:{port}")
    await rig.sup.apply(
        (proc("srv", server("--port", port, "--wait-file", loaded)),), {"srv": ["llm"]}
    )
    mp = rig.mp("srv")
    # Up, loading its weights, not listening: probes (asked for by the gate itself, not on a
    # schedule) are refused, and the process stays `starting`.
    await rig.until(lambda: "loading weights" in rig.sup.logs("srv", 5), what="loading")
    await rig.until(lambda: len(rig.runs) >= 3, what="three probes from the gate")
    assert {r.category for r in rig.runs} == {"refused"}
    assert mp.state == "starting" and mp.pid is not None
    assert "process.ready" not in rig.kinds("srv")

    loaded.touch()
    t_loaded = now_ms()
    await rig.state("srv", "running")
    ready = rig.of("process.ready", "srv")[0]
    assert ready.ts_ms >= t_loaded and ready.data["pid"] == mp.pid
    assert rig.runs[-1].ok and rig.runs[-1].ts_ms >= t_loaded - 100


async def test_starting_until_the_port_listens_without_a_model(rig: Rig, tmp_path: Path) -> None:
    port, loaded = free_port(), tmp_path / "loaded"
    await rig.sup.apply((proc("srv", server("--port", port, "--wait-file", loaded), port=port),))
    await rig.until(lambda: "loading weights" in rig.sup.logs("srv", 5), what="loading")
    assert rig.mp("srv").state == "starting"
    loaded.touch()
    await rig.state("srv", "running")
    assert "listening on" in rig.sup.logs("srv", 1)[0]


async def test_startup_timeout_stops_it_and_opens_restart_failed(rig: Rig, tmp_path: Path) -> None:
    port, worker = free_port(), tmp_path / "worker.pid"
    rig.model("llm", "http", f"http://127.0.0.1:{port}/")
    await rig.sup.apply(
        (
            # Never finishes loading; its worker ignores SIGTERM.
            proc(
                "srv",
                server("--wait-file", tmp_path / "never", "--fork-child", worker),
                startup_timeout_s=1.0,
                stop_timeout_s=0.2,
            ),
        ),
        {"srv": ["llm"]},
    )
    ev = await rig.event("process.start_timeout", "srv")
    assert ev.message == "not ready within 1s"
    worker_pid = read_pid(worker)
    assert worker_pid is not None and worker_pid in ev.data["tree"]
    assert ev.data["killed"] is True  # the worker needed SIGKILL
    assert not any(alive(p) for p in ev.data["tree"])
    assert "loading weights" in ev.data["log_tail"]
    assert {r.category for r in rig.runs} == {"refused"}  # what the gate saw meanwhile
    opened = rig.incidents("process_restart_failed")
    assert len(opened) == 1 and opened[0].message.endswith("not ready within 1s")
    assert rig.mp("srv").status().incident == opened[0].data["incident"]
    # A failed start is retried like an exit (the first retry at once).
    assert (await rig.event("process.restarting", "srv")).data["delay_s"] == 0.0
    await rig.event("process.started", "srv", n=2)


async def test_crash_at_start_up_is_retried_until_it_comes_up(rig: Rig, tmp_path: Path) -> None:
    port = free_port()
    rig.model("llm", "http", f"http://127.0.0.1:{port}/")
    await rig.sup.apply(
        (proc("srv", server("--port", port, "--counter", tmp_path / "n", "--crash-first", 2)),),
        {"srv": ["llm"]},
    )
    mp = await rig.state("srv", "running")
    assert mp.restarts == 2
    tails = [e.data["log_tail"][-1] for e in rig.of("process.exited", "srv")]
    assert tails == ["fatal: start-up failed on run 1", "fatal: start-up failed on run 2"]
    # The exits happened while starting: one incident, resolved once it answered.
    resolved = await rig.until(lambda: rig.incidents("process_exited", "incident.resolved"))
    assert resolved[0].data["ttr_ms"] > 0
    assert len(rig.incidents("process_exited")) == 1


async def test_leftover_workers_of_a_crashed_process_are_stopped_before_restart(
    rig: Rig, tmp_path: Path
) -> None:
    # The server binds its port, forks a worker that ignores SIGTERM (and so holds the port),
    # and crashes. Left alone, the worker would hold the port forever: every restart would
    # fail with "address in use", and the port gate would even pass on the old socket.
    port = free_port()
    await rig.sup.apply(
        (
            proc(
                "srv",
                server("--port", port, "--fork-child", tmp_path / "w.pid", "--exit", 1),
                port=port,
                quarantine_after=1,
            ),
        )
    )
    await rig.state("srv", "quarantined")
    exits = rig.of("process.exited", "srv")
    assert len(exits) == 2
    for ev in exits:
        (worker,) = ev.data["leftovers"]
        assert not alive(worker)
        assert ev.data["cleanup"]["killed"] is True
        assert ev.data["cleanup"]["port_released"] is True
    log = "\n".join(rig.sup.logs("srv", 100))
    assert log.count(f"listening on 127.0.0.1:{port}") == 2
    assert "Address already in use" not in log


# --- hangs ----------------------------------------------------------------------------------------


async def test_a_hung_server_is_killed_whole_tree_and_restarted(rig: Rig, tmp_path: Path) -> None:
    port, hang, worker = free_port(), tmp_path / "hang", tmp_path / "worker.pid"
    rig.model("llm", "http", f"http://127.0.0.1:{port}/", timeout_s=0.3)
    await rig.sup.apply(
        (
            proc(
                "srv",
                server("--port", port, "--hang-file", hang, "--fork-child", worker),
                port=port,
                hang_after_failures=2,
            ),
        ),
        {"srv": ["llm"]},
    )
    mp = await rig.state("srv", "running")
    first_pid, worker_pid = mp.pid, await rig.until(lambda: read_pid(worker), what="worker")
    assert first_pid is not None
    rig.keep_probing("llm")
    hang.touch()  # the next request hangs the server: accepted, never answered

    hung = await rig.event("process.hung", "srv")
    assert hung.message.startswith("hung: 2 failed probes in a row (llm:")
    assert [r["category"] for r in hung.data["last_runs"]][-2:] == ["timeout", "timeout"]
    assert f"listening on 127.0.0.1:{port}" in hung.data["log_tail"]
    # The whole tree: the server and its worker, which ignored SIGTERM and needed SIGKILL;
    # the restart waited for the port the worker held.
    assert set(hung.data["tree"]) == {first_pid, worker_pid}
    assert hung.data["killed"] is True and hung.data["port_released"] is True
    assert not alive(first_pid) and not alive(worker_pid)
    opened = rig.incidents("process_hung")
    assert len(opened) == 1 and opened[0].data["evidence"]["last_runs"]
    # Stamped when the hang was decided (the second timeout came back), not when the stop,
    # which needed SIGKILL after stop_timeout, was over; the fault began with the first
    # request that got no answer.
    first, deciding = hung.data["last_runs"][-2:]
    observed = deciding["end_ms"] or deciding["ts_ms"]  # this rig probes without end_ms
    assert hung.ts_ms == hung.data["decided_ms"] == observed == opened[0].ts_ms
    assert rig.of("process.restarting", "srv")[0].ts_ms > hung.ts_ms
    assert opened[0].data["began_ms"] == first["ts_ms"] == hung.data["began_ms"]

    await rig.event("process.ready", "srv", n=2)
    assert mp.state == "running" and mp.pid not in (None, first_pid)
    assert mp.last_reason is not None and mp.last_reason.startswith("hung:")
    assert rig.of("process.restarting", "srv")[0].data["delay_s"] == 0.0
    resolved = await rig.until(lambda: rig.incidents("process_hung", "incident.resolved"))
    assert resolved[0].data["incident"] == opened[0].data["incident"]
    assert resolved[0].data["ttr_ms"] > 0


def run(category: str, ok: bool = False) -> ProbeRun:
    return ProbeRun(model="llm", ts_ms=now_ms(), ok=ok, category=category, error=category)


async def test_one_stalled_generation_is_a_hang_soft_failures_are_not(rig: Rig) -> None:
    # A stalled token stream needs an LLM server; the supervisor's side only sees the run.
    rig.probes["llm"] = _Canned(run("ok", ok=True))
    await rig.sup.apply((proc("srv", server(), hang_after_failures=3),), {"srv": ["llm"]})
    mp = await rig.state("srv", "running")

    def feed(*categories: str) -> int:
        for category in categories:
            rig.sup.on_probe("llm", run(category, ok=category == "ok"))
        return mp.hard_failures

    # Slow or wrong answers are the model monitor's business: the server answered.
    assert feed("slow", "wrong_output", "slow") == 0
    assert feed("timeout", "refused") == 2  # below hang_after_failures
    assert feed("slow") == 0  # an answer between failures: not in a row
    assert feed("timeout", "timeout", "ok") == 0
    assert "process.hung" not in rig.kinds("srv") and mp.state == "running"
    rig.sup.on_probe("llm", run("stalled"))
    hung = await rig.event("process.hung", "srv")
    assert hung.message == "hung: generation stalled (llm: stalled)"
    await rig.event("process.ready", "srv", n=2)


class _Canned(Probe):
    """A probe answering with a fixed run (for the startup gate of hand-fed tests)."""

    protocol = "canned"

    def __init__(self, answer: ProbeRun) -> None:
        super().__init__(ProbeTarget(name=answer.model, url="canned:", timeout_s=1.0))
        self.answer = answer

    async def run(self, session: HttpClient) -> ProbeRun:
        return dataclasses.replace(self.answer, ts_ms=now_ms())


# --- operator actions -------------------------------------------------------------------------


async def test_stop_ends_the_whole_tree_even_when_it_ignores_sigterm(
    rig: Rig, tmp_path: Path
) -> None:
    worker = tmp_path / "worker.pid"
    await rig.sup.apply((proc("srv", server("--ignore-term", "--fork-child", worker)),))
    mp = await rig.state("srv", "running")
    pid, worker_pid = mp.pid, await rig.until(lambda: read_pid(worker), what="worker")
    assert pid is not None

    status = rig.sup.act("srv", "stop", "alice@laptop")
    assert status.name == "srv" and status.state == "running"  # accepted; it happens next
    await rig.state("srv", "stopped")
    stopped = rig.of("process.stopped", "srv")[0]
    assert stopped.data["by"] == "alice@laptop" and stopped.data["killed"] is True
    assert set(stopped.data["tree"]) == {pid, worker_pid}
    assert not alive(pid) and not alive(worker_pid)
    action = rig.of("process.action", "srv")[0]
    assert action.data == {"action": "stop", "by": "alice@laptop", "state": "running"}
    # Stopped stays stopped: no restart, whatever the policy.
    assert mp.pid is None and rig.kinds("srv").count("process.started") == 1
    with pytest.raises(ActionError) as info:
        rig.sup.act("srv", "release", "alice@laptop")
    assert info.value.status == 409 and "not quarantined" in str(info.value)

    rig.sup.act("srv", "start", "alice@laptop")
    await rig.event("process.ready", "srv", n=2)
    assert mp.pid not in (None, pid)


async def test_restart_action_is_immediate_and_not_a_crash(rig: Rig) -> None:
    await rig.sup.apply((proc("srv", server(), quarantine_after=1),))
    mp = await rig.state("srv", "running")
    pids = []
    for n in (1, 2, 3):  # more than quarantine_after: operator restarts are not a crash loop
        pids.append(mp.pid)
        rig.sup.act("srv", "restart", "ops")
        await rig.event("process.ready", "srv", n=n + 1)
    assert len({*pids, mp.pid}) == 4 and mp.restarts == 3
    restarting = rig.of("process.restarting", "srv")
    assert [e.data["by"] for e in restarting] == ["ops"] * 3
    assert mp.last_reason == "restarted by ops" and mp.state == "running"
    assert "process.exited" not in rig.kinds("srv") and not rig.of("incident.opened")


async def test_actions_that_do_not_apply_are_refused(rig: Rig) -> None:
    await rig.sup.apply((proc("srv", server()),))
    await rig.state("srv", "running")
    for name, action, status, text in [
        ("nope", "stop", 404, "no process named 'nope'; known: srv"),
        ("srv", "start", 409, "srv is running: already started"),
        ("srv", "release", 409, "srv is running, not quarantined"),
        ("srv", "explode", 400, "expected start, stop, restart or release"),
    ]:
        with pytest.raises(ActionError) as info:
            rig.sup.act(name, action, "ops")
        assert info.value.status == status and text in str(info.value)
    with pytest.raises(ActionError) as info:
        rig.sup.logs("nope", 10)
    assert info.value.status == 404
    assert "process.action" not in rig.kinds("srv")


# --- dependencies -----------------------------------------------------------------------------


async def test_dependents_start_after_their_dependency_is_running(rig: Rig, tmp_path: Path) -> None:
    port, loaded = free_port(), tmp_path / "loaded"
    await rig.sup.apply(
        (
            proc("app", server(), depends_on=("db",)),
            proc("db", server("--port", port, "--wait-file", loaded), port=port),
        )
    )
    app = await rig.state("app", "blocked")
    assert app.detail == "waiting for db" and app.pid is None
    await rig.until(lambda: "loading weights" in rig.sup.logs("db", 5), what="db loading")
    assert app.state == "blocked"
    loaded.touch()
    await rig.state("app", "running")
    order = [
        (e.kind, e.subject) for e in rig.events if e.kind in ("process.ready", "process.started")
    ]
    assert order.index(("process.ready", "process:db")) < order.index(
        ("process.started", "process:app")
    )
    # No incident for an ordinary start-up wait.
    assert not rig.of("incident.opened")


async def test_a_dependent_waits_blocked_while_its_dependency_is_down(
    rig: Rig, tmp_path: Path
) -> None:
    counter, port = tmp_path / "db-runs", free_port()
    await rig.sup.apply(
        (
            proc(
                "db",
                server("--port", port, "--counter", counter, "--crash-first", 1000),
                port=port,
                quarantine_after=2,
            ),
            proc("app", server(), depends_on=("db",)),
        )
    )
    await rig.state("db", "quarantined")
    app = await rig.state("app", "blocked")
    assert "app" not in {e.subject.split(":")[1] for e in rig.of("process.started")}
    # The dependent's incident names the dependency's as its root cause.
    db_incident = rig.incidents("process_exited")[0].data["incident"]
    blocked = await rig.until(lambda: rig.incidents("process_blocked"), what="blocked incident")
    assert blocked[0].subject == "process:app" and blocked[0].data["root_id"] == db_incident
    assert app.status().incident == blocked[0].data["incident"]

    counter.write_text("1000")  # the next run of db comes up
    rig.sup.act("db", "release", "ops")
    await rig.state("app", "running")
    resolved = await rig.until(lambda: rig.incidents("process_blocked", "incident.resolved"))
    assert resolved[0].subject == "process:app"

    # The dependency stops; the dependent keeps running, but when it dies it is not started
    # again until the dependency is back.
    rig.sup.act("db", "stop", "ops")
    await rig.state("db", "stopped")
    assert app.state == "running"
    app_pid = app.pid
    assert app_pid is not None
    os.kill(app_pid, signal.SIGKILL)
    await rig.state("app", "blocked")
    exited = rig.of("process.exited", "app")[0]
    assert exited.data["returncode"] == -signal.SIGKILL and exited.message.startswith(
        "signal SIGKILL"
    )
    assert rig.kinds("app").count("process.started") == 1
    rig.sup.act("db", "start", "ops")
    await rig.event("process.started", "app", n=2)
    await rig.state("app", "running")


async def test_hard_probe_failures_of_a_blocked_process_do_not_restart_it(rig: Rig) -> None:
    rig.probes["llm"] = _Canned(run("ok", ok=True))
    await rig.sup.apply(
        (
            proc("db", server()),
            proc("app", server(), depends_on=("db",), hang_after_failures=1),
        ),
        {"app": ["llm"]},
    )
    app = await rig.state("app", "running")
    rig.sup.act("db", "stop", "ops")
    await rig.state("db", "stopped")
    rig.sup.on_probe("llm", run("refused"))
    # Its dependency is down: that explains the failure; restarting app would not help.
    assert app._request is None and app.state == "running"
    assert "process.hung" not in rig.kinds("app")


# --- captured output ------------------------------------------------------------------------------


async def test_output_is_captured_and_rotated_keeping_log_keep_files(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each run prints ~5 kB and crashes; every start rotates a log over log_max_bytes (and
    # only that here: the periodic rotation is off).
    monkeypatch.setattr(supervisor, "ROTATE_EVERY_S", 3600.0)
    await rig.sup.apply(
        (
            proc(
                "chatty",
                server("--spam", 5000, "--exit", 2),
                log_max_bytes=4096,
                log_keep=2,
                quarantine_after=4,
            ),
        )
    )
    await rig.state("chatty", "quarantined")
    logs = rig.sup.log_dir
    assert sorted(p.name for p in logs.iterdir()) == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    pids = [e.data["pid"] for e in rig.of("process.started", "chatty")]
    assert len(pids) == 5
    # Newest in the live file, the two runs before it in .1 and .2; older runs are gone.
    for path, pid in zip(("chatty.log", "chatty.log.1", "chatty.log.2"), pids[::-1], strict=False):
        text = (logs / path).read_text()
        assert text.startswith(f"server pid={pid} start\n") and text.endswith("exiting 2\n")
        assert 5000 <= len(text) < 5200
    assert rig.sup.logs("chatty", 2) == ["x" * 99, "exiting 2"]
    # A tail longer than the live file reaches into the rotated one.
    tail = rig.sup.logs("chatty", 60)
    assert (
        len(tail) == 60
        and tail[-1] == "exiting 2"
        and tail.count(f"server pid={pids[-1]} start") == 1
    )
    assert rig.sup.logs("chatty", 0) == []


def test_process_log_rotation_and_tail(tmp_path: Path) -> None:
    plog = ProcessLog(tmp_path, "p", max_bytes=10, keep=3)
    assert plog.tail(5) == [] and plog.rotate_if_needed() is False
    for n in range(5):
        plog.append(f"run {n} line a\nrun {n} line b")
        assert plog.rotate_if_needed() is True
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["p.log", "p.log.1", "p.log.2", "p.log.3"]
    assert (tmp_path / "p.log").read_text() == ""  # truncated in place (copytruncate)
    assert (tmp_path / "p.log.3").read_text() == "run 2 line a\nrun 2 line b\n"
    plog.append("live")
    assert plog.tail(3) == ["run 4 line a", "run 4 line b", "live"]
    assert plog.rotate_if_needed() is False  # under max_bytes

    none_kept = ProcessLog(tmp_path / "k0", "q", max_bytes=10, keep=0)
    none_kept.append("a long enough line")
    assert none_kept.rotate_if_needed() is True
    assert sorted(p.name for p in (tmp_path / "k0").iterdir()) == ["q.log"]


async def test_the_log_is_rotated_while_the_child_writes_into_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child holds an O_APPEND descriptor, not a pipe to the agent: after a copytruncate
    # its next write lands at the start of the emptied file, not past a hole of NULs.
    monkeypatch.setattr(supervisor, "ROTATE_EVERY_S", 0.05)
    await rig.sup.apply((proc("srv", server("--spam", 5000), log_max_bytes=4096),))
    mp = await rig.state("srv", "running")
    rotated = mp.plog.path.parent / "srv.log.1"
    await rig.until(rotated.exists, what="the periodic rotation")
    assert rotated.read_text().startswith(f"server pid={mp.pid} start\n")
    assert mp.plog.path.stat().st_size == 0
    assert mp.pid is not None
    os.kill(mp.pid, signal.SIGUSR1)
    await rig.until(lambda: mp.plog.path.read_text() == "got SIGUSR1\n", what="the new line")
    assert rig.sup.logs("srv", 2) == ["x" * 99, "got SIGUSR1"]  # the tail spans both files


# --- adoption across agent restarts -----------------------------------------------------------


async def test_a_restarted_agent_adopts_its_children_and_watches_them(
    make_rig: Callable[[], Rig], tmp_path: Path
) -> None:
    worker = tmp_path / "worker.pid"
    cfg = proc("srv", server("--fork-child", worker))
    first = make_rig()
    await first.sup.apply((cfg,))
    mp = await first.state("srv", "running")
    first.sup.act("srv", "restart", "ops")  # a restart count, to see it carried over
    await first.event("process.ready", "srv", n=2)
    pid, worker_pid = mp.pid, await first.until(lambda: read_pid(worker), what="worker")
    assert pid is not None
    await first.sup.detach_all()  # on_exit = "keep"
    assert alive(pid) and alive(worker_pid)
    records = json.loads((tmp_path / "data" / RECORDS_FILE).read_text())
    assert records["srv"]["pid"] == pid and records["srv"]["restarts"] == 1

    second = make_rig()  # the next agent, same data dir
    await second.sup.apply((cfg,))
    adopted = await second.event("process.adopted", "srv")
    assert adopted.data["pid"] == pid
    mp2 = await second.state("srv", "running")
    status = mp2.status()
    assert (status.pid, status.adopted, status.restarts) == (pid, True, 1)
    assert second.of("process.ready", "srv")[0].data["adopted"] is True
    assert "process.started" not in second.kinds("srv")

    # An adopted process is not our child; its exit still wakes us at once (pidfd), and the
    # workers it leaves behind are stopped before the restart.
    os.kill(pid, signal.SIGKILL)
    exited = await second.event("process.exited", "srv")
    assert exited.data["returncode"] is None and exited.data["leftovers"] == [worker_pid]
    assert "status not visible" in exited.message
    await second.event("process.ready", "srv", n=2)
    assert mp2.pid not in (None, pid) and mp2.adopted is False
    assert not alive(worker_pid)


async def test_a_child_started_under_another_command_is_stopped_not_adopted(
    make_rig: Callable[[], Rig],
) -> None:
    first = make_rig()
    await first.sup.apply((proc("srv", server("v1")),))
    old_pid = (await first.state("srv", "running")).pid
    assert old_pid is not None
    await first.sup.detach_all()

    second = make_rig()  # the config changed while no agent ran
    await second.sup.apply((proc("srv", server("v2")),))
    stale = await second.event("process.stale_stopped", "srv")
    assert stale.data["pid"] == old_pid
    mp = await second.state("srv", "running")
    assert mp.adopted is False and mp.pid != old_pid
    await second.until(lambda: not alive(old_pid), what="the old child gone")
    assert "process.adopted" not in second.kinds("srv")


async def test_a_recorded_pid_now_belonging_to_another_process_is_left_alone(
    make_rig: Callable[[], Rig], tmp_path: Path
) -> None:
    # After a reboot the recorded pid may be some other process: its start time tells.
    other = subprocess.Popen(server("unrelated"))
    try:
        cfg = proc("srv", server())
        (tmp_path / "data").mkdir()
        record = {
            "pid": other.pid,
            "create_time": psutil.Process(other.pid).create_time() - 50,
            "argv": list(cfg.command),
            "restarts": 7,
        }
        (tmp_path / "data" / RECORDS_FILE).write_text(json.dumps({"srv": record}))
        rig = make_rig()
        await rig.sup.apply((cfg,))
        mp = await rig.state("srv", "running")
        assert mp.pid != other.pid and mp.restarts == 0 and not mp.adopted
        assert other.poll() is None
        assert not {"process.adopted", "process.stale_stopped"} & set(rig.kinds("srv"))
    finally:
        other.kill()
        other.wait()


# --- processes the agent does not start: pidfile, match, systemd ------------------------------


@pytest.mark.parametrize("kind", ["pidfile", "match"])
async def test_a_found_process_is_adopted_and_brought_back_by_remediation(
    rig: Rig, tmp_path: Path, kind: str
) -> None:
    pidfile, tag = tmp_path / "srv.pid", f"vigil-test-{tmp_path.name}"
    cmd = server("--pidfile", pidfile, tag)
    external = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)  # started by someone else
    try:
        await rig.until(lambda: read_pid(pidfile) == external.pid, what="the pidfile")
        where: dict[str, Any] = (
            {"pidfile": pidfile} if kind == "pidfile" else {"match": f"managed_server.py .*{tag}"}
        )
        await rig.sup.apply(
            (proc("ext", remediation=(*cmd[:-1], "--spawn", tag), restart="always", **where),)
        )
        adopted = await rig.event("process.adopted", "ext")
        assert adopted.data["pid"] == external.pid
        mp = await rig.state("ext", "running")
        assert mp.adopted and mp.status().kind == kind
        assert mp.status().target == (
            f"pidfile {pidfile}" if kind == "pidfile" else f"match 'managed_server.py .*{tag}'"
        )

        external.kill()
        exited = await rig.event("process.exited", "ext")
        assert exited.data["returncode"] is None
        await rig.event("process.ready", "ext", n=2)
        new_pid = mp.pid
        assert new_pid not in (None, external.pid)
        await rig.until(lambda: read_pid(pidfile) == new_pid, what="the new pid in the pidfile")
        started = rig.of("process.started", "ext")[0]
        assert started.data["pid"] == new_pid
        log = rig.sup.logs("ext", 10)
        assert log[0].startswith("[vigil] running: ") and "--spawn" in log[0]
        assert log[1].startswith("spawned ")
    finally:
        external.kill()
        external.wait()


async def test_a_found_process_with_a_failing_remediation_is_a_failed_start(
    rig: Rig, tmp_path: Path
) -> None:
    await rig.sup.apply(
        (
            proc(
                "ext",
                pidfile=tmp_path / "missing.pid",
                remediation=(sys.executable, "-c", "import sys; print('no GPU'); sys.exit(4)"),
                quarantine_after=1,
            ),
        )
    )
    failed = await rig.event("process.spawn_failed", "ext")
    assert "failed (exit 4): no GPU" in failed.message
    assert "no GPU" in failed.data["log_tail"]
    assert rig.incidents("process_restart_failed")
    await rig.state("ext", "quarantined")


async def test_a_watch_only_process_that_is_not_running_fails_without_retries(
    rig: Rig, tmp_path: Path
) -> None:
    # restart = "never" without a remediation is a valid config: watch only. Not running, it
    # is `failed` at once (an incident, no retry loop into quarantine) ...
    pidfile = tmp_path / "srv.pid"
    await rig.sup.apply((proc("ext", pidfile=pidfile, restart="never"),))
    mp = await rig.state("ext", "failed")
    assert (
        mp.detail == f"start failed: not running (pidfile {pidfile}) and no remediation configured"
    )
    assert rig.kinds("ext").count("process.spawn_failed") == 1
    assert "process.restarting" not in rig.kinds("ext")
    assert len(rig.incidents("process_restart_failed")) == 1

    # ... and once someone has started it by hand, an operator's start picks it up.
    external = subprocess.Popen(server("--pidfile", pidfile), stdout=subprocess.DEVNULL)
    try:
        await rig.until(lambda: read_pid(pidfile) == external.pid, what="the pidfile")
        rig.sup.act("ext", "start", "ops")
        await rig.state("ext", "running")
        assert mp.pid == external.pid
        await rig.until(lambda: rig.incidents("process_restart_failed", "incident.resolved"))
    finally:
        external.kill()
        external.wait()


async def test_a_systemd_unit_is_watched_and_restarted_with_systemctl(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = systemctl.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.bin_dir}{os.pathsep}{os.environ['PATH']}")
    await rig.sup.apply(
        (proc("llama", systemd_unit="llama.service", poll_interval_s=0.05, startup_timeout_s=5),)
    )
    adopted = await rig.event("process.adopted", "llama")
    assert adopted.data["pid"] == systemctl.FIRST_PID
    mp = await rig.state("llama", "running")
    assert mp.status().kind == "systemd" and mp.status().target == "systemd unit llama.service"
    assert fake.calls()[0].startswith("show llama.service --property=")

    # The unit fails: seen at the next poll, restarted with systemctl restart.
    fake.set("failed", "failed", 0, status=3)
    exited = await rig.event("process.exited", "llama")
    assert exited.data["returncode"] == 3 and exited.message.startswith("unit failed/failed")
    await rig.event("process.ready", "llama", n=2)
    assert mp.pid == systemctl.FIRST_PID + 1
    assert fake.actions() == ["restart llama.service"]

    # systemd restarting it by itself (Restart=, a new MainPID) is an exit, and the new
    # incarnation is watched: not restarted again on top, nor left unwatched.
    fake.set("active", "running", 4_000_000)
    exited = await rig.event("process.exited", "llama", n=2)
    assert exited.message.startswith(
        f"main pid changed {systemctl.FIRST_PID + 1} -> 4000000 (restarted by systemd)"
    )
    assert (await rig.event("process.adopted", "llama", n=2)).data["pid"] == 4_000_000
    await rig.event("process.ready", "llama", n=3)
    assert mp.state == "running" and mp.pid == 4_000_000
    assert fake.actions() == ["restart llama.service"]

    rig.sup.act("llama", "stop", "ops")
    await rig.state("llama", "stopped")
    assert fake.actions()[-1] == "stop llama.service"


# --- config validation of [[process]] -----------------------------------------------------------

CFG = Path("/etc/vigil/vigil.toml")


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, CFG)
    return info.value


def check(err: ConfigError, field: str, line: int, expected: str) -> None:
    """The error names the file and line, the field, and what was expected."""
    msg = str(err)
    assert (err.path, err.field, err.line) == (CFG, field, line), msg
    assert msg.startswith(f"{CFG}:{line}: {field}: "), msg
    assert expected in msg, msg


def test_process_fields_parse_into_typed_values(tmp_path: Path) -> None:
    config = parse_config(
        f"""
[agent]
on_exit = "stop"

[[process]]
name = "db"
command = ["db-server"]
port = 5432

[[process]]
name = "llm"
command = ["llama-server", "--port", "8080"]
user = "root"
restart = "always"
stop_signal = "SIGINT"
stop_timeout = "30s"
backoff_initial = "500ms"
backoff_factor = 1.5
backoff_max = "1m"
backoff_jitter = 0.25
backoff_reset = "10m"
quarantine_after = 3
quarantine_window = "5m"
startup_timeout = "2m"
hang_after_failures = 0
depends_on = ["db"]
port = 8080
log_max_bytes = 65536
log_keep = 0

[[process]]
name = "unit"
systemd_unit = "vllm.service"
poll_interval = "500ms"

[[process]]
name = "found"
pidfile = "{tmp_path}/x.pid"
remediation = ["systemctl", "restart", "x"]

[[process]]
name = "watched"
match = "ollama serve"
restart = "never"
""",
        CFG,
    )
    assert config.agent.on_exit == "stop"
    db, llm, unit, found, watched = config.processes
    assert (db.kind, db.port, db.restart, db.depends_on) == ("command", 5432, "on-failure", ())
    assert llm == ProcessConfig(
        name="llm",
        command=("llama-server", "--port", "8080"),
        user="root",
        restart="always",
        stop_signal="SIGINT",
        stop_timeout_s=30.0,
        backoff_initial_s=0.5,
        backoff_factor=1.5,
        backoff_max_s=60.0,
        backoff_jitter=0.25,
        backoff_reset_s=600.0,
        quarantine_after=3,
        quarantine_window_s=300.0,
        startup_timeout_s=120.0,
        hang_after_failures=0,
        depends_on=("db",),
        port=8080,
        log_max_bytes=65536,
        log_keep=0,
    )
    assert (unit.kind, unit.systemd_unit, unit.poll_interval_s) == ("systemd", "vllm.service", 0.5)
    assert (found.kind, found.pidfile, found.remediation) == (
        "pidfile",
        tmp_path / "x.pid",
        ("systemctl", "restart", "x"),
    )
    assert (watched.kind, watched.match, watched.remediation) == ("match", "ollama serve", ())


P = '[[process]]\nname = "p"\ncommand = ["x"]\n'


@pytest.mark.parametrize(
    ("extra", "field", "expected"),
    [
        ('user = "no-such-user-vigil"', "user", "expected a user that exists on this host"),
        ("user = 0", "user", "expected a string, got an integer"),
        ('restart = "on-crash"', "restart", "expected one of 'always', 'on-failure', 'never'"),
        ('stop_timeout = "0s"', "stop_timeout", "expected a positive duration, got '0s'"),
        ('backoff_initial = "-1s"', "backoff_initial", "expected a duration of 0s or more"),
        ('backoff_reset = "-5m"', "backoff_reset", "expected a duration of 0s or more, got '-5m'"),
        ("backoff_factor = 0.5", "backoff_factor", "expected a number of at least 1, got 0.5"),
        ('backoff_factor = "2"', "backoff_factor", "expected a number, got a string"),
        ("backoff_jitter = 1.5", "backoff_jitter", "expected a number between 0 and 1, got 1.5"),
        ('backoff_max = "fast"', "backoff_max", "expected a duration"),
        ("quarantine_after = -1", "quarantine_after", "expected a whole number of 0 or more"),
        ("quarantine_after = 2.5", "quarantine_after", "expected a whole number of 0 or more"),
        ('quarantine_window = "0s"', "quarantine_window", "expected a positive duration"),
        ('startup_timeout = "soon"', "startup_timeout", "expected a duration"),
        ("hang_after_failures = true", "hang_after_failures", "got a boolean"),
        ('depends_on = "db"', "depends_on", "expected a list of strings, got a string"),
        ("port = 0", "port", "expected a port number 1-65535, got 0"),
        ("port = 70000", "port", "expected a port number 1-65535, got 70000"),
        ('port = "8080"', "port", "expected a port number 1-65535, got a string"),
        ('poll_interval = "0ms"', "poll_interval", "expected a positive duration"),
        ("log_max_bytes = 100", "log_max_bytes", "expected a whole number of 4096 or more"),
        ("log_keep = -1", "log_keep", "expected a whole number of 0 or more"),
        ('remediation = "restart it"', "remediation", "expected a list of strings"),
        ('systemd_unit = "x.service"', "systemd_unit", "expected exactly one of command"),
    ],
)
def test_bad_process_field(extra: str, field: str, expected: str) -> None:
    check(refused(P + extra + "\n"), f"process[0].{field}", 4, expected)


def test_backoff_initial_longer_than_backoff_max() -> None:
    err = refused(P + 'backoff_max = "1s"\nbackoff_initial = "2s"\n')
    check(err, "process[0].backoff_initial", 5, "expected a delay no longer than backoff_max")


@pytest.mark.parametrize("key", ["pidfile", "match"])
def test_a_found_process_needs_a_remediation_unless_restart_is_never(key: str) -> None:
    value = "/run/x.pid" if key == "pidfile" else "x"
    text = f'[[process]]\nname = "p"\n{key} = "{value}"\n'
    check(
        refused(text),
        "process[0].remediation",
        1,
        f"a process found by {key} is not ours to start: expected a remediation command",
    )
    assert parse_config(text + 'restart = "never"\n', CFG).processes[0].kind == key


@pytest.mark.parametrize(
    ("body", "field", "line", "expected"),
    [
        ('pidfile = "run/x.pid"\nrestart = "never"', "pidfile", 3, "expected an absolute path"),
        ('match = "(unclosed"\nrestart = "never"', "match", 3, "expected a regular expression"),
        ('command = ["x"]\ndepends_on = ["p"]', "depends_on", 4, "cannot depend on itself"),
    ],
)
def test_bad_target_fields(body: str, field: str, line: int, expected: str) -> None:
    check(refused(f'[[process]]\nname = "p"\n{body}\n'), f"process[0].{field}", line, expected)


def test_depends_on_an_unknown_process() -> None:
    text = P + '\n[[process]]\nname = "q"\ncommand = ["y"]\ndepends_on = ["p", "dbb"]\n'
    err = refused(text)
    check(err, "process[1].depends_on", 8, "names process 'dbb', but no [[process]] has that name")
    assert "expected one of: p, q" in str(err)


def test_a_dependency_cycle_is_refused() -> None:
    text = (
        '[[process]]\nname = "a"\ncommand = ["x"]\ndepends_on = ["c"]\n'
        '[[process]]\nname = "b"\ncommand = ["x"]\ndepends_on = ["a"]\n'
        '[[process]]\nname = "c"\ncommand = ["x"]\ndepends_on = ["b"]\n'
    )
    check(refused(text), "process[0].depends_on", 4, "dependency cycle a -> c -> b -> a")


def test_bad_on_exit() -> None:
    check(
        refused('[agent]\non_exit = "kill"\n'),
        "agent.on_exit",
        2,
        "expected one of 'keep', 'stop', got 'kill'",
    )


# --- the audit trail ----------------------------------------------------------------------------

STATE_EVENTS = {
    "starting": {"process.started", "process.spawn_failed"},
    "running": {"process.ready"},
    "backoff": {"process.exited", "process.start_timeout", "process.hung"},
    "blocked": {"process.blocked"},
    "stopping": {"process.action"},
    "stopped": {"process.stopped"},
    "quarantined": {"process.quarantined"},
    "exited": {"process.exited"},
    "failed": {"process.exited", "process.spawn_failed"},
}


async def test_every_state_change_is_an_event(rig: Rig, tmp_path: Path) -> None:
    changes: list[tuple[str, str, int]] = []
    notify = rig.sup.state_changed

    def record(mp: ManagedProcess) -> None:
        changes.append((mp.config.name, mp.state, len(rig.events)))
        notify(mp)

    rig.sup.state_changed = record  # type: ignore[method-assign]
    port, counter = free_port(), tmp_path / "db-runs"
    await rig.sup.apply(
        (
            proc(
                "db",
                server("--port", port, "--counter", counter, "--crash-first", 1000),
                port=port,
                quarantine_after=1,
            ),
            proc("app", server(), depends_on=("db",), restart="never"),
        )
    )
    await rig.state("db", "quarantined")
    await rig.state("app", "blocked")
    counter.write_text("1000")
    rig.sup.act("db", "release", "ops")
    app = await rig.state("app", "running")
    rig.sup.act("app", "stop", "ops")
    await rig.state("app", "stopped")
    rig.sup.act("app", "start", "ops")
    await rig.event("process.ready", "app", n=2)
    assert app.pid is not None
    os.kill(app.pid, signal.SIGKILL)  # restart = "never": failed
    await rig.state("app", "failed")

    seen = {state for _, state, _ in changes}
    assert seen >= {"blocked", "starting", "running", "backoff", "quarantined", "stopping"}
    assert seen >= {"stopped", "failed"}
    for i, (name, state, at) in enumerate(changes):
        later = [n for other, _, n in changes[i + 1 :] if other == name]
        window = rig.events[max(0, at - 3) : later[0] if later else None]
        kinds = {e.kind for e in window if e.subject == f"process:{name}"}
        assert kinds & STATE_EVENTS[state], (name, state, kinds)

    blocked = rig.of("process.blocked", "app")
    assert blocked[0].message == "waiting for db" and blocked[0].data["waiting_for"] == ["db"]
    failed = rig.of("process.exited", "app")[-1]
    assert failed.data["returncode"] == -signal.SIGKILL and "log_tail" in failed.data
