"""The serving-environment fingerprint as a job of the agent (see :mod:`storage.environment`).

At start (a few seconds in), every ``[agent] fingerprint_interval`` (10 minutes by default)
and soon after each config reload, the agent reads what it serves models with:

- ``host``: OS, kernel, architecture, CPU model and count, C library, Vigil's own version
  (:mod:`probes.hostenv`);
- ``gpu``: NVIDIA driver, the CUDA version it supports, NVML, each GPU's model, through the
  agent's own NVML (:meth:`probes.gpu.GpuCollector.inventory`); absent without NVML;
- ``process:<name>`` per ``[[process]]``: its interpreter, Python version and installed
  packages, read from its own environment's package metadata without running anything
  (:mod:`probes.pyenv`); for a server that is no Python program, its executable;
- ``model:<name>`` per ``[[model]]``: the server's own version where it says
  (:mod:`probes.serverversion`), what the probe learnt it serves (``served``), and, for a
  model with a ``[model.deploy] link``, the content hash of the artifact the link points at
  (``agent.deploy.artifacts`` with the agent's hash cache, imported when first needed).

File reads and hashing run in threads; the server questions on the loop with the agent's
HTTP client. The fingerprint is compared with the last one (loaded from the database at
start, so a driver upgraded while the agent was down is seen too); the changed items are
stored as rows by the writer and recorded as one audited ``environment.changed`` event listing
them (item, old -> new). The first fingerprint ever is recorded as ``environment.recorded``.
Nothing here can stop the agent: a failed read is logged and leaves those items unknown.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from probes.base import now_ms
from probes.hostenv import clean, host_items
from probes.pyenv import python_env
from probes.serverversion import server_items
from storage import environment as envstore
from storage.db import connect
from storage.environment import Collected, EnvChange, fingerprint_hash
from storage.records import Event

if TYPE_CHECKING:
    from agent.config import Config, ModelConfig, ProcessConfig
    from agent.health.monitor import ModelMonitor
    from probes.gpu import GpuCollector
    from probes.httpclient import HttpClient
    from storage.writer import Writer

log = logging.getLogger("vigil.agent")

__all__ = ["DEFAULT_INTERVAL_S", "JOB_ID", "EnvironmentHost", "EnvironmentJob"]

JOB_ID = "environment"
DEFAULT_INTERVAL_S = 600.0
FIRST_IN_S = 5.0
"""The first collection after start or a reload: once processes are started."""
MAX_CHANGES_IN_EVENT = 500
"""Changes listed in one event (a rebuilt venv can change hundreds of packages); the rows in
the ``environment`` table hold them all."""


class EnvironmentHost(Protocol):
    """What the job reads of the agent (:class:`agent.runtime.daemon.Agent`)."""

    config: Config
    monitors: dict[str, ModelMonitor]
    gpu: GpuCollector
    writer: Writer

    def emit(self, event: Event) -> None:
        """Record an audit event."""


class EnvironmentJob:
    """Collects, compares, stores and audits one agent's fingerprint."""

    def __init__(
        self,
        host: EnvironmentHost,
        *,
        version: str,
        db_path: Path,
        session: Callable[[], HttpClient | None],
        pids: Callable[[], Mapping[str, int]],
    ) -> None:
        self._host = host
        self._version = version
        self._db_path = db_path
        self._session = session
        self._pids = pids
        self._lock = asyncio.Lock()
        self.fingerprint: dict[str, dict[str, str]] | None = None
        """The current fingerprint; None until loaded or first collected."""
        self.hash: str | None = None
        self.collected_ms: int | None = None
        self.last_change: dict[str, Any] | None = None
        """The newest ``environment.changed``: ``{ts_ms, message, changes}``."""

    def schedule(self, every: Callable[..., None], interval_s: float) -> None:
        """Add the job to the agent's schedule (``Scheduler.every``)."""
        every(JOB_ID, interval_s, self.run, first_in_s=min(FIRST_IN_S, interval_s))

    def state(self) -> dict[str, Any]:
        """``GET /api/v1/environment``'s answer."""
        return {
            "hash": self.hash,
            "collected_ms": self.collected_ms,
            "sections": self.fingerprint or {},
            "last_change": self.last_change,
        }

    async def run(self) -> None:
        """One collection (the scheduled job); one at a time, a second call waits for it."""
        async with self._lock:
            try:
                await self._run()
            except Exception:  # the next turn tries again
                log.exception("environment collection failed")

    async def _run(self) -> None:
        if self.fingerprint is None:
            stored, last = await asyncio.to_thread(self._load)
            self.fingerprint, self.last_change = stored, last
            self.hash = fingerprint_hash(stored) if stored else None
        previous = self.fingerprint
        collected = await self.collect()
        new = envstore.merge(previous, collected)
        ts = now_ms()
        changes = envstore.diff(previous, new)
        self.fingerprint, self.hash, self.collected_ms = new, fingerprint_hash(new), ts
        if not changes:
            return
        self._host.writer.run_task(lambda conn: envstore.store(conn, ts, changes))
        if not previous:
            log.info("environment recorded hash=%s sections=%d", self.hash, len(new))
            self._host.emit(self._recorded(ts, new))
            return
        event = self._changed(ts, changes, fingerprint_hash(previous))
        self.last_change = {"ts_ms": ts, "message": event.message, "changes": event.data["changes"]}
        log.info("environment changed changes=%d %s", len(changes), envstore.summary(changes))
        self._host.emit(event)

    def _load(self) -> tuple[dict[str, dict[str, str]], dict[str, Any] | None]:
        conn = connect(self._db_path, readonly=True)
        try:
            return envstore.current(conn), envstore.last_change(conn)
        finally:
            conn.close()

    def _recorded(self, ts: int, fp: dict[str, dict[str, str]]) -> Event:
        items = sum(len(v) for v in fp.values())
        return Event(
            ts_ms=ts,
            kind="environment.recorded",
            subject="agent",
            message=f"serving environment recorded: {items} items in {len(fp)} sections",
            data={"hash": fingerprint_hash(fp), "sections": sorted(fp), "items": items},
        )

    def _changed(self, ts: int, changes: list[EnvChange], old_hash: str) -> Event:
        listed = [c.to_json() for c in changes[:MAX_CHANGES_IN_EVENT]]
        sections = sorted({c.section for c in changes})
        return Event(
            ts_ms=ts,
            kind="environment.changed",
            subject=sections[0] if len(sections) == 1 else "agent",
            message=f"serving environment changed: {envstore.summary(changes)}",
            data={
                "changes": listed,
                "count": len(changes),
                "truncated": len(changes) > len(listed),
                "hash": self.hash,
                "previous_hash": old_hash,
            },
        )

    # --- reading -----------------------------------------------------------------------

    async def collect(self) -> Collected:
        """Read the fingerprint now (file reads in a thread, server questions on the loop)."""
        config = self._host.config
        monitors = dict(self._host.monitors)
        pids = dict(self._pids())
        sections, unknown = await asyncio.to_thread(self._read_files, config, pids)
        models = [mon.config for mon in monitors.values()]
        answers = await asyncio.gather(*(self._server(m) for m in models))
        for m, answer in zip(models, answers, strict=True):
            items = sections.setdefault(f"model:{m.name}", {})
            if answer is None:
                unknown.add((f"model:{m.name}", "server"))
            else:
                items.update(answer)
            served = monitors[m.name].probe.info.get("artifact")
            if isinstance(served, str) and served:
                items["served"] = clean(served)
            else:  # not learnt yet (no answer since start): keep what was known
                unknown.add((f"model:{m.name}", "served"))
            if m.deploy is not None and m.deploy.link is not None:
                try:
                    items.update(await self._artifact(m.deploy.link))
                except Exception as exc:  # unreadable now; known again later
                    log.warning("environment artifact unreadable model=%s error=%s", m.name, exc)
                    unknown.add((f"model:{m.name}", "artifact"))
        return Collected(sections, frozenset(unknown))

    def _read_files(
        self, config: Config, pids: Mapping[str, int]
    ) -> tuple[dict[str, dict[str, str]], set[tuple[str, str]]]:
        sections: dict[str, dict[str, str]] = {}
        unknown: set[tuple[str, str]] = set()
        sections["host"] = {**host_items(), "vigil": self._version}
        gpu = self._host.gpu.inventory()
        if gpu:
            sections["gpu"] = gpu
        for proc in config.processes:
            key = f"process:{proc.name}"
            try:
                items = _process_items(proc, pids.get(proc.name))
            except Exception as exc:  # one odd process must not stop the rest
                log.warning("environment process unreadable process=%s error=%s", proc.name, exc)
                items = None
            if items is None:
                unknown.add((key, ""))
            else:
                sections[key] = items
        return sections, unknown

    async def _server(self, m: ModelConfig) -> dict[str, str] | None:
        session = self._session()
        if session is None:
            return None
        headers = {"Authorization": f"Bearer {m.api_key}"} if m.api_key else {}
        try:
            return await server_items(
                session, m.protocol, m.url, headers=headers, timeout_s=m.timeout_s
            )
        except Exception as exc:  # a bad URL or answer: unknown this time
            log.debug("environment server version failed model=%s error=%s", m.name, exc)
            return None

    async def _artifact(self, link: Path) -> dict[str, str]:
        # Imported here: the deploy room's hashing is loaded by hosts that deploy, when first
        # needed, never by the daemon at start.
        from agent.deploy.artifacts import digest_artifact
        from agent.deploy.hashcache import WriterHashCache
        from agent.deploy.link import read_link

        target = read_link(link)
        if target is None:
            return {}
        digest = await digest_artifact(target, cache=WriterHashCache(self._host.writer))
        return {"artifact": digest.hash, "artifact.path": clean(digest.path)}


def _process_items(proc: ProcessConfig, pid: int | None) -> dict[str, str] | None:
    """A process's section; None when nothing can be known now (not running, and its command,
    if it has one, names no Python to read)."""
    path_env = proc.env.get("PATH") or os.environ.get("PATH")
    cwd = str(proc.cwd) if proc.cwd is not None else None
    env, executable = python_env(pid, proc.command, path_env=path_env, cwd=cwd)
    if env is not None:
        items = env.items()
    elif pid is not None and executable:
        items = {}
    else:
        return None
    if executable:
        items["executable"] = clean(executable.removesuffix(" (deleted)"))
    return items
