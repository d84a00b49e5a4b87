"""The agent: composition root wiring collectors, probes, supervisor, writer and API together.

One asyncio loop. Collectors run in a worker thread (psutil and NVML block); probes run on the
loop; the writer is its own thread. SIGTERM/SIGINT stop gracefully (the writer is flushed);
SIGHUP, or a change to the config file, reloads the config: a bad new file is refused, the
running config kept, and the refusal recorded as an event.

Longer than the house's ~500 lines on purpose: it is the one place where the order of start,
reload and stop across every room is written down (writer before state, copies before the
config, deploys after it, checkpoints after the last event), and splitting that order over
modules would hide it. What each room does lives in that room; this module only calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import random
import signal
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.config import Config, ConfigError
from agent.health.incidents import IncidentBook
from agent.health.monitor import ModelMonitor, samples_for
from agent.runtime import apiserver
from agent.runtime.alerting_job import AlertingJob, PlannedIncidents
from agent.runtime.checkpoints import Checkpoints
from agent.runtime.deploying import LazyDeploys, left_in_flight
from agent.runtime.environment import EnvironmentJob
from agent.runtime.housekeeping import Retention
from agent.runtime.reloading import (
    read_for_reload,
    refused_event,
    reloaded_event,
    restart_needed,
    stored_runs,
)
from agent.runtime.schedule import Scheduler
from agent.runtime.sdnotify import Notifier
from agent.runtime.watch import ConfigWatcher
from agent.serve.api import build_app
from agent.serve.files import API_FILE
from agent.serve.httpserver import HttpServer
from agent.serve.identity import annotate
from agent.serve.metrics import ProbeMetrics
from agent.serve.tokens import CHECK_EVERY_S, TokenRegistry, load_or_create
from agent.supervise.supervisor import PlannedWindow, Supervisor
from probes.base import Collector, now_ms
from probes.gpu import GpuCollector
from probes.host import HostCollector
from probes.httpclient import HttpClient
from probes.process import ProcessCollector
from storage.db import DB_FILENAME, connect
from storage.records import AgentStatus, Event, Labels, ResourceValue, Sample
from storage.writer import Writer

if TYPE_CHECKING:
    from agent.deploy.engine import DeployEngine
    from agent.forward import RemoteWrite

log = logging.getLogger("vigil.agent")


RETENTION_EVERY_S = 300.0


class Agent:
    """A running agent. ``await Agent(config).run()`` until stopped."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = config.agent.data_dir
        self.started_ms = now_ms()
        self.writer = Writer(self.data_dir / DB_FILENAME, on_state_change=self._storage_changed)
        # Incidents opened inside a maintenance window are marked planned (alerting knows).
        self.incidents: IncidentBook = PlannedIncidents(
            self.writer,
            self.emit,
            lambda subject, at: self.alerting.planned_reason(subject, at),  # noqa: PLW0108
        )
        self.gpu = GpuCollector()
        self.supervisor = Supervisor(
            self.data_dir,
            self.emit,
            self.incidents,
            gpu_pids=self._gpu_pids,
            probe_now=self.probe_models,
            on_planned=self._planned,
        )
        self.monitors: dict[str, ModelMonitor] = {}
        self.latest: dict[tuple[str, Labels], ResourceValue] = {}
        self.collectors: list[Collector] = [
            HostCollector(),
            ProcessCollector(self.supervisor.pids),
            self.gpu,
        ]
        self.tokens: TokenRegistry | None = None
        self.url: str | None = None
        self.first_collection = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._reload_triggers: set[str] = set()
        self._session: HttpClient | None = None
        self._scheduler: Scheduler | None = None
        self._api_server: HttpServer | None = None
        self._watcher: ConfigWatcher | None = None
        self.notifier = Notifier(unset=True)
        self.probe_metrics = ProbeMetrics()
        self._watchdog: asyncio.Task[None] | None = None
        self.housekeeping = Retention(self.writer)
        self.checkpoints = Checkpoints(self.data_dir, lambda: self.config.agent)
        self.remote_write: RemoteWrite | None = None
        """The forwarder, made when a config has ``[remote_write]`` (the API and /metrics then
        show it): an agent that does not forward never loads agent.forward (issue 14)."""
        self.alerting = AlertingJob(
            config.alerting,
            writer=self.writer,
            emit=self.emit,
            db_path=self.data_dir / DB_FILENAME,
            status=self.status,
            incidents=self.incidents,
            links=lambda: {m.name: m.process for m in self.config.models if m.process},
        )
        self._deploys = LazyDeploys(self, self.writer, self.data_dir / DB_FILENAME)
        self.environment = EnvironmentJob(
            self,
            version=__version__,
            db_path=self.data_dir / DB_FILENAME,
            session=lambda: self._session,
            pids=self.supervisor.pids,
        )

    records_deploys = True
    """Deploys are stored in this agent's database (``/metrics`` reads their families)."""

    @property
    def deploys(self) -> DeployEngine:
        """The deploy engine, made on first need (:mod:`agent.runtime.deploying`)."""
        return self._deploys.engine

    def config_state(self) -> dict[str, Any]:
        """``GET /api/v1/config``: the config deploys' view; without an engine, the file is
        what runs."""
        if self._deploys.running is not None:
            return self._deploys.running.configs.state()
        path = self.config.path
        return {
            "path": None if path is None else str(path),
            "file_differs": False,
            "rolled_back": [],
            "held": [],
        }

    # --- events and state --------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Record an audit event (through the writer; never blocks); one an API request
        causes names the token that authorised it."""
        self.writer.submit_one(annotate(event))

    def _storage_changed(self, healthy: bool, error: str) -> None:
        # Called on the writer thread. The event is queued behind the failing batch, so it
        # lands when storage works again, which is when an operator can read it anyway.
        kind = "storage.recovered" if healthy else "storage.failing"
        self.writer.submit_one(
            Event(
                ts_ms=now_ms(),
                kind=kind,
                subject="agent",
                message=error or "writes resumed",
                data={"error": error},
            )
        )

    def _gpu_pids(self) -> set[int]:
        # Blocking NVML calls: the supervisor calls this in a thread.
        return set(self.gpu.processes_using_gpu()) if self.gpu.available else set()

    def status(self) -> AgentStatus:
        """Live snapshot for the API and ``vigil status``."""
        return AgentStatus(
            host=self.config.agent.host,
            version=__version__,
            started_ms=self.started_ms,
            now_ms=now_ms(),
            models=tuple(m.status() for m in self.monitors.values()),
            processes=tuple(self.supervisor.statuses()),
            resources=tuple(sorted(self.latest.values(), key=lambda r: (r.name, r.labels))),
            gpu_available=self.gpu.available,
            storage_ok=self.writer.healthy,
            labels=self.config.agent.labels,
        )

    def model_info(self) -> dict[str, dict[str, Any]]:
        """What each model's probe learned about it (metadata, hashes), for the API."""
        return {name: dict(mon.probe.info) for name, mon in self.monitors.items()}

    # --- jobs --------------------------------------------------------------------------

    def _collect_sync(self) -> list[Sample]:
        ts = now_ms()
        out: list[Sample] = []
        for c in self.collectors:
            try:
                out.extend(c.collect(ts))
            except Exception:  # one broken collector must not starve the others
                log.exception("collector failed collector=%s", c.name)
        return out

    async def collect(self) -> None:
        """Collect resources (in a thread), store them, keep the latest values."""
        samples = await asyncio.to_thread(self._collect_sync)
        self.writer.submit(samples)
        latest = {}
        for s in samples:
            latest[(s.name, s.labels)] = ResourceValue(s.name, s.labels, s.ts_ms, s.value)
        # Replace wholesale: a disk unmounted or a process gone disappears from status too.
        self.latest = latest
        self.first_collection.set()

    async def probe(self, name: str) -> None:
        """Probe one model now and record the result.

        One run per model is out at a time, whoever asks (the schedule, a start-up gate,
        ``probe now``): a request made while one runs waits for that run instead of sending a
        second request beside it (some servers cut off a stream when another arrives). The
        run is shielded: a caller that stops waiting does not cancel it half-way.
        """
        mon = self.monitors.get(name)
        if mon is None or self._session is None:
            return
        task = mon.inflight
        if task is None or task.done():
            task = mon.inflight = asyncio.create_task(self._probe(mon), name=f"probe:{name}")
        await asyncio.shield(task)

    async def _probe(self, mon: ModelMonitor) -> None:
        assert self._session is not None
        name = mon.config.name
        run = await mon.run_once(self._session)
        if self.monitors.get(name) is not mon:
            return  # the model was removed or replaced by a reload while this run was out
        run = mon.record(
            run, self.emit, self.incidents, functools.partial(self.supervisor.root_for_model, name)
        )
        self.supervisor.on_probe(name, run)
        if self._deploys.running is not None:
            self._deploys.running.observe(name, run, mon.probe.last_output)
        self.probe_metrics.observe(run)
        self.writer.submit_one(run)
        self.writer.submit(samples_for(run))
        self.writer.submit(mon.probe.drain_samples())

    def _planned(self, models: list[str], window: PlannedWindow) -> None:
        """The supervisor began or ended a planned start/stop of these models' server."""
        for name in models:
            mon = self.monitors.get(name)
            if mon is None:
                continue
            if window.what in ("start", "stop"):
                mon.begin_planned(window.reason, window.what == "stop", window.at_ms, self.emit)
            else:
                mon.end_planned(
                    window.at_ms,
                    self.emit,
                    failed=window.reason if window.what == "failed" else None,
                    book=self.incidents,
                    root_id=functools.partial(self.supervisor.root_for_model, name),
                )

    async def probe_models(self, names: list[str]) -> None:
        """Probe these models now, concurrently (the supervisor's startup gate asks)."""
        await asyncio.gather(*(self.probe(n) for n in names))

    async def retention(self) -> None:
        """Queue a retention pass on the writer thread, in small steps between its batches."""
        self.housekeeping.run(self.config.agent)

    # --- config ------------------------------------------------------------------------

    def _schedule(self, config: Config) -> None:
        assert self._scheduler is not None
        sched = self._scheduler
        sched.every("collect", config.agent.sample_interval_s, self.collect)
        sched.every("retention", RETENTION_EVERY_S, self.retention, first_in_s=30.0)
        if self.tokens is not None:  # token changes audited even when no request comes
            sched.every("tokens", CHECK_EVERY_S, self.tokens.check_job)
        self.checkpoints.schedule(sched, config.agent)
        self.environment.schedule(sched.every, config.agent.fingerprint_interval_s)
        every = config.alerting.evaluate_interval_s
        sched.every("alerting", every, self.alerting.evaluate, first_in_s=min(1.0, every))
        wanted = {f"probe:{m.name}" for m in config.models}
        origin = datetime.now(UTC)
        for job in sched.job_ids():
            if job.startswith("probe:") and job not in wanted:
                sched.remove(job)
        for m in config.models:
            # Jitter spreads probes sharing an interval; the first run comes soon after start
            # so status is known within seconds, not a whole interval.
            jitter = m.jitter_s if m.jitter_s is not None else min(1.0, m.interval_s * 0.1)
            first = random.uniform(0, jitter)  # noqa: S311 - spreading load, not secrecy
            sched.every(
                f"probe:{m.name}",
                m.interval_s,
                functools.partial(self.probe, m.name),
                jitter_s=jitter,
                first_in_s=first,
                origin=origin,
            )

    async def apply(
        self, config: Config, *, seed_drift: bool = False, reason: str = "config change"
    ) -> None:
        """Make ``config`` the running one: models, processes and schedules.

        ``seed_drift`` (at start only: after a reload a changed model's stored runs measured
        the old config, and are no baseline for the new one) rebuilds the drift windows from
        stored runs before anything can probe.
        """
        old = {m.name: m for m in self.config.models}
        self.config = config
        # A blue-green model's process and URL are templates: filled in for the copy that
        # serves (its probes: the copy they go to now).
        running = self.deploys.copies.resolve(config) if self._deploys.needed(config) else config
        monitors: dict[str, ModelMonitor] = {}
        for m, filled in zip(config.models, running.models, strict=True):
            current = self.monitors.get(m.name)
            # Keep a model's state and history when its config did not change.
            monitors[m.name] = current if current and old.get(m.name) == m else ModelMonitor(filled)
        for name, mon in self.monitors.items():
            if monitors.get(name) is not mon:
                if mon.inflight is not None:
                    mon.inflight.cancel()
                await mon.probe.close()
                for event in mon.drift.ended_by_config(now_ms()):
                    self.emit(event)
            if name not in monitors:
                self.probe_metrics.forget(name)
        self.monitors = monitors
        if seed_drift:
            # Read in a thread, replayed here on the loop: the windows are the loop's alone.
            stored = await asyncio.to_thread(
                stored_runs, self.data_dir / DB_FILENAME, list(monitors.values())
            )
            for name, runs in stored.items():
                monitors[name].drift.seed(reversed(runs))
        links: dict[str, list[str]] = {}
        for m in config.models:
            if m.process is not None:
                links.setdefault(m.process, []).append(m.name)
        await self.supervisor.apply(running.processes, links, reason=reason)
        await self.alerting.apply(config.alerting)
        if config.remote_write is not None and self.remote_write is None:
            from agent.forward import RemoteWrite

            self.remote_write = RemoteWrite(
                self.writer, self.data_dir / DB_FILENAME, self.emit, started_ms=self.started_ms
            )
        if self.remote_write is not None:
            await self.remote_write.apply(
                config.remote_write, config.agent.host, config.agent.labels
            )
        self._schedule(config)

    async def reload(self, reason: str) -> bool:
        """Re-read the config file; refuse a bad one and keep the running config."""
        path = self.config.path
        if path is None:
            return False
        try:
            new = read_for_reload(path)
        except ConfigError as exc:
            log.error("config reload refused reason=%s error=%r", reason, str(exc))
            self.emit(refused_event(path, exc, reason))
            return False
        if new == self.config:
            # Said, not recorded: a file watcher firing on a touch is no event worth keeping.
            log.info("config unchanged reason=%s", reason)
            if self._deploys.running is not None:  # a change rolled back or held is gone
                self._deploys.running.configs.agreed()
            return True
        ignored = restart_needed(self.config, new)
        if ignored:
            log.warning("config change needs a restart to take effect fields=%s", ",".join(ignored))
        # Changed tables of deployable models are config deploys, applied (and gated) by the
        # deploy engine after the rest; a model with a deploy in flight has its change held.
        engine = (
            self.deploys if self._deploys.needed(self.config) or self._deploys.needed(new) else None
        )
        plan = engine.configs.plan(self.config, new, reason) if engine is not None else None
        if plan is not None and plan.config == self.config and not plan.changes:
            log.info("config unchanged but for changes held or rolled back reason=%s", reason)
            return True
        await self.apply(plan.config if plan is not None else new)
        log.info(
            "config reloaded reason=%s models=%d processes=%d",
            reason,
            len(new.models),
            len(new.processes),
        )
        self.emit(reloaded_event(path, new, reason, ignored))
        if engine is not None and plan is not None:
            await engine.configs.start(plan, reason)
        return True

    def _load_state(self) -> None:
        conn = connect(self.data_dir / DB_FILENAME, readonly=True)
        try:
            self.incidents.load(conn)
            self.alerting.load(conn)
            self._deploys.in_flight_at_start = left_in_flight(conn)
        finally:
            conn.close()

    def request_reload(self, trigger: str = "signal") -> None:
        """Ask the main loop to reload: SIGHUP (``signal``) or the file watcher
        (``file change``); the reload's log line and event say which."""
        self._reload_triggers.add(trigger)
        self._reload_requested.set()

    def request_stop(self) -> None:
        """Ask the agent to stop gracefully."""
        self._stop.set()

    # --- lifecycle ---------------------------------------------------------------------

    async def _start_api(self) -> None:
        assert self.tokens is not None
        host, port = self.config.agent.listen_host, self.config.agent.listen_port
        self._api_server, self.url = await apiserver.bind(
            build_app(self, self.tokens), host, port, self.config.agent.tls, self.emit
        )

    def _publish_api(self) -> None:
        """Write api.json, where local clients find the agent: only once the config is
        applied, so nobody finds an agent that does not list its processes yet."""
        apiserver.publish(self.data_dir, self.url, self.started_ms, self.config.agent.tls)

    async def run(self) -> int:
        """Run until stopped; return the process exit code."""
        loop = asyncio.get_running_loop()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = load_or_create(self.data_dir, self.emit)
        await asyncio.to_thread(self.writer.start)
        await asyncio.to_thread(self._load_state)
        self.alerting.start()  # the outbox's sender: sends what a previous run left unsent
        # The client's pool has no limit (aiohttp's had 100 connections): a probe's TTFT clock
        # starts before the request takes a connection, so with more models than a limit
        # probing at once, the later ones would count the wait for another model's stream as
        # TTFT. Each model has at most one run out, so the number of connections is bounded.
        self._session = HttpClient()
        self._scheduler = Scheduler(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self._start_api()
            self.emit(
                Event(
                    ts_ms=now_ms(),
                    kind="agent.started",
                    subject="agent",
                    message=f"agent {__version__} started on {self.url}",
                    data={
                        "pid": os.getpid(),
                        "url": self.url,
                        "config": str(self.config.path),
                        # Reports read the host name and the configured models from here.
                        "host": self.config.agent.host,
                        "models": [m.name for m in self.config.models],
                    },
                )
            )
            log.info(
                "agent started host=%s url=%s pid=%d models=%d processes=%d",
                self.config.agent.host,
                self.url,
                os.getpid(),
                len(self.config.models),
                len(self.config.processes),
            )
            if self._deploys.needed(self.config):
                await self.deploys.copies.load()  # which blue-green copy serves: before applying
            await self.apply(self.config, seed_drift=True, reason="agent start")
            if self._deploys.needed(self.config):
                await self.deploys.start()  # resumes or rolls back what a killed agent left
            self._publish_api()
            # What exists now (modules, config, monitors, the API) lives as long as the agent:
            # keep it out of the cyclic collector's way. Otherwise every full collection walks
            # all of it with the loop stopped (67 ms with 200 models on a small VM), and as
            # collections are set off by allocations, they land in probe rounds, where they
            # delay probe starts and every timing in flight.
            gc.collect()
            gc.freeze()
            self._scheduler.start()
            if self.config.path is not None:
                self._watcher = ConfigWatcher(
                    self.config.path, loop, functools.partial(self.request_reload, "file change")
                )
                self._watcher.start()
            ready = asyncio.create_task(self._notify_ready())
            self._watchdog = asyncio.create_task(self.notifier.watchdog_loop(self.summary))
            await self._main_loop()
            ready.cancel()
        finally:
            await self._shutdown()
        return 0

    async def _notify_ready(self) -> None:
        """READY=1 for systemd once the API is bound and the first collection is stored."""
        await self.first_collection.wait()
        await asyncio.to_thread(self.writer.flush)
        self.notifier.ready(self.summary())

    def summary(self) -> str:
        """One line for ``systemctl status``: models up, processes running, storage."""
        models = [str(m.state) for m in self.monitors.values()]
        procs = [str(p.state) for p in self.supervisor.processes.values()]
        return (
            f"models {models.count('up')}/{len(models)} up, "
            f"processes {procs.count('running')}/{len(procs)} running, "
            f"storage {'ok' if self.writer.healthy else 'FAILING'}"
        )

    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.create_task(self._stop.wait())
            reload = asyncio.create_task(self._reload_requested.wait())
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            for t in (stop, reload):
                t.cancel()
            if self._reload_requested.is_set() and not self._stop.is_set():
                self._reload_requested.clear()
                triggers, self._reload_triggers = self._reload_triggers, set()
                await self.reload(" and ".join(sorted(triggers)) or "signal")

    async def _stop_forwarding(self) -> None:
        if self.remote_write is not None:
            await self.remote_write.stop(final=True)  # the last samples, within a grace

    async def _shutdown(self) -> None:
        log.info("agent stopping")
        self.notifier.stopping()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._watcher is not None:
            self._watcher.stop()
        if self._scheduler is not None:
            self._scheduler.shutdown()
        if self._api_server is not None:
            await self._api_server.close()
        await self.alerting.stop()
        # Before the writer closes (its cursors go through it), after the collectors stopped.
        await self._stop_forwarding()
        if self._deploys.running is not None:
            await self._deploys.running.stop()  # its state is stored: the next agent resumes it
        for mon in self.monitors.values():
            if mon.inflight is not None:
                mon.inflight.cancel()
        if self.config.agent.on_exit == "stop":
            await self.supervisor.stop_all()
        else:
            await self.supervisor.detach_all()
        for mon in self.monitors.values():
            with contextlib.suppress(Exception):
                await mon.probe.close()
        if self._session is not None:
            await self._session.close()
        for c in self.collectors:
            with contextlib.suppress(Exception):
                c.close()
        self.emit(
            Event(
                ts_ms=now_ms(),
                kind="agent.stopped",
                subject="agent",
                message="agent stopped",
                data={"pid": os.getpid()},
            )
        )
        t0 = time.monotonic()
        await asyncio.to_thread(self.writer.close)
        # The head after agent.stopped, signed and sent off the host: the last word of a run.
        await self.checkpoints.run(self.config.agent, final=True)
        await self.checkpoints.close()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / API_FILE).unlink()
        log.info(
            "agent stopped flush_s=%.3f samples=%d events=%d",
            time.monotonic() - t0,
            self.writer.stats.committed_samples,
            self.writer.stats.committed_events,
        )
