"""Which parts of a config reload are deployments, and the config applied at once meanwhile.

A changed ``[[process]]`` (its command, environment, or any field: each restarts it) or a
changed ``[model.canary]`` of a model with a ``[model.deploy]`` table is a **config deploy** of
that model, gated like an artifact deploy. :func:`plan` sorts a reload into:

- **changes** (:class:`ConfigChange`): each is applied by its own deploy, after the rest; the
  config applied at once keeps the running table in its place;
- **held**: the model has a deploy in flight (one deploy per model at a time): the running
  table stays, and the change is deployed when that deploy ends (the engine asks for a reload);
- **still rejected**: the file still holds a table a config deploy rolled back, unchanged since:
  the running (previous) table stays, and ``GET /api/v1/config`` keeps saying the file differs.

Everything else (models without ``[model.deploy]``, blue-green models, new and removed
processes and models, the other fields of a deployable model, alerting) is applied at once, as
before. Where several deployable models share a process, its change is one deploy, of the
first of them in the file.
Pure: the caller says which models are busy and which tables were rejected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config import Config, ModelConfig, ProcessConfig
from agent.deploy.configdiff import canary_toml, diff_tables, process_toml, table_hash

IN_PLACE = "in-place"
"""The strategy whose models' config changes are deployed here (a blue-green model's process
is a template of its copies: its config changes apply as before)."""

__all__ = ["ConfigChange", "ConfigPlan", "Held", "canary_key", "plan", "process_key"]


def process_key(name: str) -> str:
    """The key a rejected ``[[process]]`` table is remembered by."""
    return f"process:{name}"


def canary_key(model: str) -> str:
    """The key a rejected ``[model.canary]`` is remembered by."""
    return f"canary:{model}"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One model's config deploy: the tables before and after (kept in memory only: a
    process's environment may hold secrets the database must not)."""

    model: str
    process: str | None
    """The changed ``[[process]]``; None when only the canary changed."""
    old_process: ProcessConfig | None = None
    new_process: ProcessConfig | None = None
    old_canary: Mapping[str, Any] | None = None
    """The running canary, when it changed (None: unchanged)."""
    new_canary: Mapping[str, Any] | None = None
    diff: str = ""
    old_hash: str = ""
    new_hash: str = ""

    @property
    def process_changed(self) -> bool:
        """Whether the process's table changed (its server restarts)."""
        return self.new_process is not None

    @property
    def canary_changed(self) -> bool:
        """Whether the canary changed (the previous version's answers and latencies measured
        another request: the gate judges the new canary on its own)."""
        return self.new_canary is not None

    @property
    def what(self) -> str:
        """``process srv``, ``the canary of model clf``, or both, in words."""
        parts = []
        if self.process_changed:
            parts.append(f"process {self.process}")
        if self.canary_changed:
            parts.append(f"the canary of model {self.model}")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True)
class Held:
    """A change of a model that has a deploy in flight, deployed when that one ends."""

    model: str
    deployment_id: int
    what: str


@dataclass(frozen=True, slots=True)
class ConfigPlan:
    """What a reload applies at once (``config``), and what it deploys or holds."""

    config: Config
    changes: tuple[ConfigChange, ...] = ()
    held: tuple[Held, ...] = ()
    still_rejected: tuple[str, ...] = ()
    """Keys (:func:`process_key`, :func:`canary_key`) of tables still as rolled back."""
    agreed: tuple[str, ...] = field(default=())
    """Keys of rejected tables the file no longer holds: forgotten."""


def tables_hash(process: ProcessConfig | None, model: str, canary: Mapping[str, Any] | None) -> str:
    """The hash of a deploy's tables as they run (see :mod:`agent.deploy.configdiff`)."""
    text = process_toml(process) if process is not None else ""
    if canary is not None:
        text += canary_toml(model, canary)
    return table_hash(text)


def _change(
    m: ModelConfig,
    old_m: ModelConfig,
    old_p: ProcessConfig | None,
    new_p: ProcessConfig | None,
    canary: bool,
    where: str,
) -> ConfigChange:
    """The change of ``m``: its process from ``old_p`` to ``new_p`` (None: unchanged), and
    its canary when ``canary``."""
    old_c, new_c = (old_m.canary, m.canary) if canary else (None, None)
    diff = ""
    if new_p is not None and old_p is not None:
        diff += diff_tables(
            process_toml(old_p), process_toml(new_p, old_p), f"process {new_p.name}", where
        )
    if new_c is not None and old_c is not None:
        diff += diff_tables(
            canary_toml(m.name, old_c),
            canary_toml(m.name, new_c, old_c),
            f"model {m.name} canary",
            where,
        )
    return ConfigChange(
        model=m.name,
        process=m.deploy_process if new_p is not None else None,
        old_process=old_p if new_p is not None else None,
        new_process=new_p,
        old_canary=old_c,
        new_canary=new_c,
        diff=diff,
        old_hash=tables_hash(old_p if new_p is not None else None, m.name, old_c),
        new_hash=tables_hash(new_p, m.name, new_c),
    )


def _still_new(
    key: str,
    changed: bool,
    now: object,
    rejected: Mapping[str, Any],
    verdicts: dict[str, list[str]],
) -> bool:
    """Whether a changed table is to be deployed, given the tables rolled back before: not
    when the file still holds the one rolled back (``still``); a rejected table the file no
    longer changes is forgotten (``agreed``)."""
    if key not in rejected:
        return changed
    if not changed:
        verdicts["agreed"].append(key)
        return False
    if rejected[key] == now:
        verdicts["still"].append(key)
        return False
    return True


def plan(
    running: Config,
    new: Config,
    busy: Callable[[str], int | None],
    rejected: Mapping[str, Any],
) -> ConfigPlan:
    """Sort a reload from ``running`` to ``new`` (see the module docstring).

    Args:
        busy: the id of the deploy in flight of a model, or None.
        rejected: tables rolled back by a config deploy, by :func:`process_key` or
            :func:`canary_key`: a ``ProcessConfig`` or a canary mapping.
    """
    old_models = {m.name: m for m in running.models}
    old_procs = {p.name: p for p in running.processes}
    new_procs = {p.name: p for p in new.processes}
    keep_procs: dict[str, ProcessConfig] = {}
    keep_canary: dict[str, Mapping[str, Any]] = {}
    changes: list[ConfigChange] = []
    held: list[Held] = []
    verdicts: dict[str, list[str]] = {"still": [], "agreed": []}
    claimed: set[str] = set()
    where = str(new.path) if new.path is not None else "the new config"
    for m in new.models:
        old_m = old_models.get(m.name)
        if m.deploy is None or m.deploy.strategy != IN_PLACE or old_m is None:
            continue
        name = m.deploy_process
        old_p, new_p = old_procs.get(name or ""), new_procs.get(name or "")
        proc_changed = (
            name is not None
            and name not in claimed
            and old_p is not None
            and new_p is not None
            and old_p != new_p
        )
        canary_changed = old_m.canary != m.canary
        # A table the file still holds as it was rolled back is not deployed again; one the
        # file gave up (it says what runs again) is forgotten.
        if name not in claimed:
            proc_changed = _still_new(
                process_key(name or ""), proc_changed, new_p, rejected, verdicts
            )
        canary_changed = _still_new(
            canary_key(m.name), canary_changed, m.canary, rejected, verdicts
        )
        if process_key(name or "") in verdicts["still"] and old_p is not None:
            keep_procs[name or ""] = old_p
        if canary_key(m.name) in verdicts["still"]:
            keep_canary[m.name] = old_m.canary
        if not (proc_changed or canary_changed):
            continue
        if proc_changed and old_p is not None:
            keep_procs[name or ""] = old_p
            claimed.add(name or "")
        if canary_changed:
            keep_canary[m.name] = old_m.canary
        change = _change(m, old_m, old_p, new_p if proc_changed else None, canary_changed, where)
        in_flight = busy(m.name)
        if in_flight is not None:
            held.append(Held(m.name, in_flight, change.what))
        else:
            changes.append(change)
    procs = tuple(keep_procs.get(p.name, p) for p in new.processes)
    models = tuple(
        dataclasses.replace(m, canary=keep_canary[m.name]) if m.name in keep_canary else m
        for m in new.models
    )
    return ConfigPlan(
        config=dataclasses.replace(new, processes=procs, models=models),
        changes=tuple(changes),
        held=tuple(held),
        still_rejected=tuple(dict.fromkeys(verdicts["still"])),
        agreed=tuple(dict.fromkeys(verdicts["agreed"])),
    )
