"""The blue-green models of one agent: where their copies are, and what acts on the copies.

The engine holds one :class:`BlueGreenCopies`. It knows, per blue-green model, the slot that
serves and where the model's probes go now (:class:`~agent.deploy.slots.Routes`), fills the
config's templates from that for the supervisor and the model monitors (:meth:`resolve`),
builds each model's traffic switch (one per proxy: a reload covers every model's include, so
switches through one proxy are serialized by sharing it), and starts, finds and stops copies
other than the supervised one (a deploy's new copy, the old copy being retired).

**Which copy serves, after an agent restart** (:meth:`load`, before the config is applied):
the process the supervisor recorded, if it still runs and its command line is one of the
model's copies (the records are rewritten the moment supervision is handed to a new copy, so
they are the last word on which copy the supervisor runs); else the slot the model's last
blue-green deployment left serving (stored with it, written before the hand-over); else the
address the proxy sends the traffic to, if it is one of the two ports; else the first port,
with the version the ``current`` link names. A bake in flight whose new copy still runs keeps
its canaries on the new copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import psutil

from agent.config import Config, ModelConfig, ProcessConfig
from agent.config.switches import CommandSwitchSettings, NginxSettings
from agent.deploy.commandswitch import CommandSwitch
from agent.deploy.errors import DeployError
from agent.deploy.nginx import NginxSwitch
from agent.deploy.proxy import InvalidTarget, SwitchError, TrafficSwitch
from agent.deploy.restart import StartResult, process_identity, settled
from agent.deploy.slots import (
    Routes,
    Slot,
    address_port,
    blue_green_models,
    copy_address,
    copy_config,
    link_artifact,
    probe_url,
)
from agent.deploy.store import DeployStore
from agent.deploy.support import DeployHost
from agent.health.monitor import make_probe
from agent.supervise.adoption import ProcessRecord, read_records
from agent.supervise.proclogs import ProcessLog
from agent.supervise.targets import CommandTarget
from agent.supervise.tree import Handle, process_create_time
from probes.base import Probe, now_ms
from probes.httpclient import HttpClient
from storage import deployments as deps
from storage.deployments import Deployment
from storage.records import DeployState, DeployStrategy, Event, ProcessState

log = logging.getLogger("vigil.deploy")

__all__ = ["ANSWERED", "BlueGreenCopies", "alive", "identity_of"]

ANSWERED = frozenset({"ok", "slow", "wrong_output"})
"""A canary that ends in one of these got an answer: the server is up (judging the answer is
the bake's job), as the supervisor's startup gate counts it."""
READY_POLL_S = 0.25
S = DeployState


def identity_of(handle: Handle) -> dict[str, Any]:
    """A copy's identity as a deployment stores it: pid and start time."""
    return {"pid": handle.pid, "create_time": handle.create_time}


def alive(ident: Mapping[str, Any] | None) -> bool:
    """Whether the process ``ident`` names still runs (the same one: its start time matches)."""
    if not ident or not isinstance(ident.get("pid"), int):
        return False
    created = process_create_time(int(ident["pid"]))
    recorded = ident.get("create_time")
    return created is not None and (
        not isinstance(recorded, int | float) or abs(created - float(recorded)) < 0.05
    )


class BlueGreenCopies:
    """See the module docstring."""

    def __init__(self, host: DeployHost, store: DeployStore) -> None:
        self.host = host
        self.store = store
        self.routes = Routes()
        self._switches: dict[NginxSettings | CommandSwitchSettings, TrafficSwitch] = {}
        self._client: HttpClient | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # --- the config ------------------------------------------------------------------------

    def resolve(self, config: Config) -> Config:
        """``config`` as the supervisor and the monitors run it (see :class:`Routes`)."""
        self.routes.forget(config)
        return self.routes.resolve(config)

    def template(self, process: str) -> ProcessConfig:
        """The ``[[process]]`` as configured, with its placeholders."""
        for p in self.host.config.processes:
            if p.name == process:
                return p
        raise DeployError(f"no process named {process!r} in the config", 404)

    def switch_for(self, m: ModelConfig) -> TrafficSwitch:
        """The model's traffic switch (one per proxy, shared by the models behind it).

        Raises:
            DeployError: the switch's settings are refused.
        """
        d = m.deploy
        assert d is not None
        settings: NginxSettings | CommandSwitchSettings | None = d.nginx or d.switch_command
        if settings is None:
            raise DeployError(f"model {m.name!r} has no traffic switch configured")
        if isinstance(settings, CommandSwitchSettings) and not settings.state_dir:
            state = self.host.config.agent.data_dir / "switch"
            settings = dataclasses.replace(settings, state_dir=str(state))
        found = self._switches.get(settings)
        if found is None:
            try:
                found = (
                    NginxSwitch(settings)
                    if isinstance(settings, NginxSettings)
                    else CommandSwitch(settings)
                )
            except ValueError as exc:
                raise DeployError(str(exc)) from None
            self._switches[settings] = found
        return found

    async def current(self, m: ModelConfig) -> str | None:
        """Where the proxy sends the model's traffic now (None: unknown or never switched)."""
        try:
            return await self.switch_for(m).current(m.name)
        except (OSError, InvalidTarget, DeployError) as exc:
            log.warning("cannot read the proxy's address model=%s error=%s", m.name, exc)
            return None

    # --- after an agent restart ------------------------------------------------------------

    async def load(self) -> None:
        """Where each blue-green model's copies are (see the module docstring): before the
        config is first applied, so the supervisor adopts the copy that serves."""
        models = blue_green_models(self.host.config)
        if not models:
            return
        sup = self.host.supervisor
        records = await asyncio.to_thread(read_records, sup.records_path)
        names = [m.name for m in models]

        def read(conn: Any) -> dict[str, list[Deployment]]:
            return {name: deps.list_deployments(conn, model=name, limit=20) for name in names}

        try:
            history = await self.store.read(read)
        except Exception as exc:  # no database yet: nothing deployed yet
            log.info("no blue-green history read error=%r", str(exc))
            history = {}
        for m in models:
            past = [d for d in history.get(m.name, []) if d.strategy == DeployStrategy.BLUE_GREEN]
            slot = await self._serving_slot(m, records.get(m.deploy_process or ""), past)
            self.routes.serving[m.name] = slot
            log.info("blue-green copy serving model=%s port=%d artifact=%s", m.name, *slot_t(slot))
            flight = next((d for d in past if d.in_flight), None)
            candidate = Slot.from_json(flight.checks.get("candidate")) if flight else None
            if (
                flight is not None
                and candidate is not None
                and "probing" in flight.addresses
                and flight.state in (S.STARTING, S.BAKING)
                and alive(flight.checks.get("candidate"))
            ):
                # A bake in flight: its canaries keep going to the new copy.
                self.routes.probing[m.name] = candidate.port
                sup.probes_elsewhere.add(m.name)

    async def _serving_slot(
        self, m: ModelConfig, record: ProcessRecord | None, past: list[Deployment]
    ) -> Slot:
        assert m.deploy is not None
        proc = self.template(m.deploy_process or "")
        link = link_artifact(m)
        stored = next(
            (s for d in past if (s := Slot.from_json(d.checks.get("serving"))) is not None), None
        )
        if (
            record is not None
            and record.argv
            and alive({"pid": record.pid, "create_time": record.create_time})
        ):
            artifacts = {link} | ({stored.artifact} if stored else set())
            for d in past[:1]:
                for key in ("target", "previous_target"):
                    if isinstance(d.checks.get(key), str):
                        artifacts.add(str(d.checks[key]))
            for port in m.deploy.ports:
                for artifact in sorted(artifacts):
                    slot = Slot(port, artifact)
                    if copy_config(proc, slot).command == tuple(record.argv):
                        return slot
        if stored is not None:
            return stored
        current = await self.current(m)
        at = address_port(current) if current else None
        if at is not None and at in m.deploy.ports:
            return Slot(at, link)
        return Slot(m.deploy.ports[0], link)

    async def reconcile(self, busy: set[str]) -> None:
        """Never leave a proxy pointing at a copy that does not run: for each blue-green model
        with no deploy in flight (``busy``: those resume and end in a consistent place), a
        proxy left on the other of the two slots is switched back to the copy that serves."""
        for m in blue_green_models(self.host.config):
            if m.name in busy:
                continue
            try:
                await self._reconcile(m)
            except Exception:  # one model's proxy must not stop the others'
                log.exception("proxy reconcile failed model=%s", m.name)

    async def _reconcile(self, m: ModelConfig) -> None:
        assert m.deploy is not None
        serving = self.routes.slot(m)
        want = copy_address(m, serving.port)
        current = await self.current(m)
        others = {copy_address(m, p) for p in m.deploy.ports} - {want}
        if current is None or current not in others:
            return  # on the serving copy, or somewhere the operator chose: not Vigil's to move
        mp = await settled(self.host.supervisor, m.deploy_process or "", 30.0)
        if mp is None or mp.state != ProcessState.RUNNING:
            log.warning("proxy on a stopped copy and the serving one not running model=%s", m.name)
        try:
            result = await self.switch_for(m).switch(m.name, want)
        except (SwitchError, InvalidTarget) as exc:
            log.error("proxy reconcile switch failed model=%s error=%s", m.name, exc)
            return
        self.host.emit(
            Event(
                ts_ms=now_ms(),
                kind="deploy.reconciled",
                subject=f"model:{m.name}",
                message=(
                    f"the proxy sent {m.name}'s traffic to {current}, where no copy serves: "
                    f"switched to the serving copy at {want}"
                ),
                data={"from": current, "to": want, "total_ms": result.total_ms},
            )
        )

    # --- probes ------------------------------------------------------------------------------

    def retarget(self, m: ModelConfig, port: int | None) -> None:
        """Send the model's probes to the copy on ``port`` (None: the serving copy)."""
        sup = self.host.supervisor
        if port is None or port == self.routes.slot(m).port:
            self.routes.probing.pop(m.name, None)
            sup.probes_elsewhere.discard(m.name)
        else:
            self.routes.probing[m.name] = port
            sup.probes_elsewhere.add(m.name)
        mon = self.host.monitors.get(m.name)
        url = probe_url(m, self.routes.probe_port(m))
        if mon is None or mon.config.url == url:
            return
        old = mon.retarget(url)
        log.info("model probes retargeted model=%s url=%s", m.name, url)
        task = asyncio.create_task(self._close_later(old, mon.inflight), name="probe-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_later(self, probe: Probe, inflight: asyncio.Task[None] | None) -> None:
        if inflight is not None:
            await asyncio.wait([inflight])
        with contextlib.suppress(Exception):
            await probe.close()

    async def ready(
        self, m: ModelConfig, port: int, handle: Handle, timeout_s: float
    ) -> StartResult:
        """Wait until the copy on ``port`` answers the model's canary (not recorded: the copy
        loading is no fault of the model's), it exits, or ``timeout_s`` passes."""
        probe = make_probe(dataclasses.replace(m, url=probe_url(m, port)))
        if self._client is None:
            self._client = HttpClient(user_agent="vigil-deploy")
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        try:
            while True:
                if handle.exited.done():
                    why = handle.exited.result().description
                    return StartResult(False, now_ms(), f"the new copy exited starting: {why}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return StartResult(
                        False,
                        now_ms(),
                        f"the new copy did not answer within {timeout_s:g}s: {last}",
                    )
                t0 = time.monotonic()
                try:
                    run = await asyncio.wait_for(probe.run(self._client), m.timeout_s + 1.0)
                except TimeoutError:
                    last = f"no answer within {m.timeout_s:g}s"
                else:
                    if run.ok or run.category in ANSWERED:
                        return StartResult(
                            True,
                            now_ms(),
                            f"pid {handle.pid} answers on port {port}",
                            identity_of(handle),
                        )
                    last = f"{run.category}: {run.error or ''}".strip()
                pause = READY_POLL_S - (time.monotonic() - t0)
                if pause > 0:
                    await asyncio.wait([handle.exited], timeout=min(pause, max(left, 0.0)))
        finally:
            with contextlib.suppress(Exception):
                await probe.close()

    # --- copies the supervisor does not run ----------------------------------------------

    def plog(self, process: str) -> ProcessLog:
        """The process's log: both copies write into it (``O_APPEND``)."""
        cfg = self.template(process)
        return ProcessLog(self.host.supervisor.log_dir, cfg.name, cfg.log_max_bytes, cfg.log_keep)

    async def launch(self, cfg: ProcessConfig) -> Handle:
        """Start a copy as the supervisor starts its children (own session, the agent's
        environment less its secrets, the children's umask, output into the process's log).

        Raises:
            LaunchError: it could not be started.
        """
        return await CommandTarget(cfg, self.plog(cfg.name)).launch()

    async def find(self, cfg: ProcessConfig, ident: Mapping[str, Any] | None) -> Handle | None:
        """The running copy ``ident`` names (pid and start time), if it still runs."""
        if not ident or not isinstance(ident.get("pid"), int):
            return None
        created = ident.get("create_time")
        record = ProcessRecord(
            pid=int(ident["pid"]),
            create_time=float(created) if isinstance(created, int | float) else None,
            argv=cfg.command,
        )
        return await CommandTarget(cfg, self.plog(cfg.name)).find(record)

    def strays(self, cfg: ProcessConfig, keep: set[int]) -> list[int]:
        """Copies running ``cfg``'s command line, leading their own session, other than
        ``keep``: one started in the instant before its identity was stored."""
        want = list(cfg.command)
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                pid = int(proc.info["pid"])
                if pid not in keep and proc.info["cmdline"] == want and _leads(pid):
                    found.append(pid)
        return found

    async def stop(self, cfg: ProcessConfig, handle: Handle) -> dict[str, object]:
        """Stop a copy and its whole tree; returns what happened (once its port is free)."""
        return await CommandTarget(cfg, self.plog(cfg.name)).terminate(
            handle, self.host.supervisor.gpu_pids
        )

    def serving_identity(self, process: str) -> dict[str, Any] | None:
        """The identity of the copy the supervisor runs as ``process`` now."""
        mp = self.host.supervisor.processes.get(process)
        return None if mp is None else process_identity(mp)

    async def close(self) -> None:
        """Close the readiness probes' client."""
        if self._client is not None:
            await self._client.close()
            self._client = None


def _leads(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def slot_t(slot: Slot) -> tuple[int, str]:
    """A slot as the log line's values."""
    return slot.port, slot.artifact
