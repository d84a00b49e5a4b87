"""What a config reload reads and records, apart from applying it (the daemon's job).

A reload re-reads the file; a bad file is refused with an event naming the field and line, and
the running config is kept. Also here: the stored runs that seed the drift windows at start.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from agent.config import Config, ConfigError, load_config
from agent.health.drift import ANSWERED
from agent.health.monitor import ModelMonitor
from probes.base import now_ms
from storage.db import connect
from storage.queries import recent_probe_runs
from storage.records import Event, ProbeRun

log = logging.getLogger("vigil.agent")

RESTART_ONLY = ("data_dir", "listen_host", "listen_port", "tls")
"""``[agent]`` fields a running agent cannot change: they take effect at its next start."""


def read_for_reload(path: Path) -> Config:
    """The new config, or ConfigError (an empty file included: see below)."""
    new = load_config(path)
    if path.stat().st_size == 0:
        # An empty file is a valid config (all defaults) at start-up, but on a reload it is far
        # more often a write caught halfway, and applying it would stop every model server.
        raise ConfigError(
            path,
            "the file is empty; refusing to reload to an empty "
            "config (write config files atomically: temp + mv)",
        )
    return new


def refused_event(path: Path, exc: ConfigError, trigger: str) -> Event:
    """``config.reload_refused``: the file, field, line and reason, and what asked."""
    return Event(
        ts_ms=now_ms(),
        kind="config.reload_refused",
        subject="agent",
        message=str(exc),
        data={
            "path": str(path),
            "field": exc.field,
            "line": exc.line,
            "reason": exc.reason,
            "trigger": trigger,
        },
    )


def restart_needed(old: Config, new: Config) -> list[str]:
    """The changed fields that only a restart applies."""
    return [k for k in RESTART_ONLY if getattr(new.agent, k) != getattr(old.agent, k)]


def reloaded_event(path: Path, new: Config, trigger: str, ignored: list[str]) -> Event:
    """``config.reloaded``, with the model list reports read the configured models from."""
    return Event(
        ts_ms=now_ms(),
        kind="config.reloaded",
        subject="agent",
        message=f"config reloaded ({trigger})",
        data={
            "path": str(path),
            "trigger": trigger,
            "restart_needed_for": ignored,
            "models": [m.name for m in new.models],
        },
    )


def stored_runs(db: Path, monitors: Iterable[ModelMonitor]) -> dict[str, list[ProbeRun]]:
    """Each model's last answered runs, newest first, enough to fill its drift windows;
    without storage the windows simply start empty."""
    out: dict[str, list[ProbeRun]] = {}
    try:
        conn = connect(db, readonly=True)
    except (sqlite3.Error, OSError) as exc:
        log.warning("drift baselines not restored error=%s", exc)
        return out
    try:
        for mon in monitors:
            d = mon.config.drift
            out[mon.config.name] = recent_probe_runs(
                conn, mon.config.name, limit=d.window + d.baseline, categories=ANSWERED
            )
    except sqlite3.Error as exc:
        log.warning("drift baselines not restored error=%s", exc)
    finally:
        conn.close()
    return out
