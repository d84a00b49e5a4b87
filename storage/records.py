"""The record types every part of Vigil speaks.

Records are frozen dataclasses with units in their field names. They are produced by probes and
the agent, persisted by the writer, served as JSON by the API and rebuilt from that JSON by the
TUI's client, so each API-facing record knows how to turn itself into and out of plain JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from storage.labels import read_labels

Labels = tuple[tuple[str, str], ...]
"""Series labels as sorted (key, value) pairs: hashable and order-independent."""


def make_labels(mapping: Mapping[str, object] | None = None, **kwargs: object) -> Labels:
    """Build canonical labels from a mapping and/or keywords (values are stringified)."""
    merged: dict[str, str] = {}
    if mapping:
        merged.update({str(k): str(v) for k, v in mapping.items()})
    merged.update({k: str(v) for k, v in kwargs.items()})
    return tuple(sorted(merged.items()))


def labels_json(labels: Labels) -> str:
    """Canonical JSON text of labels, as stored in the ``series.labels`` column."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def series_key(name: str, labels: Labels) -> str:
    """Human-readable identity of a series, Prometheus style: ``name{k="v"}``."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{inner}}}"


class ModelState(StrEnum):
    """What a model is, as its probes and its server's supervisor tell.

    ``starting`` and ``stopped`` are planned: the model's server is in a start (or stop) that
    the agent or an operator asked for, so failed runs in them open no incident and count
    against no availability. ``degraded`` answers badly or lost a run; ``down`` does not
    answer; ``unknown`` has not been probed yet.
    """

    UNKNOWN = "unknown"
    STARTING = "starting"
    STOPPED = "stopped"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


PLANNED_MODEL_STATES = frozenset({ModelState.STARTING, ModelState.STOPPED})


class ProcessState(StrEnum):
    """Where a supervised process is in its supervisor's state machine.

    ``blocked`` waits for a dependency; ``starting`` waits for the startup gate (a linked
    model's answer, the port, or nothing); ``backoff`` waits out the delay before a restart;
    ``stopping`` is a stop or restart in progress. ``quarantined`` (a crash loop), ``stopped``
    (asked for), ``exited`` (a clean exit not restarted) and ``failed`` wait for an operator.
    """

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    BLOCKED = "blocked"
    STOPPING = "stopping"
    QUARANTINED = "quarantined"
    STOPPED = "stopped"
    EXITED = "exited"
    FAILED = "failed"


FAILING_PROCESS_STATES = frozenset(
    {ProcessState.FAILED, ProcessState.BACKOFF, ProcessState.QUARANTINED}
)
"""Process states that are a failure on the host: ``vigil status`` exits 1, a fleet row fails
(quarantined too: a crash loop given up on until an operator acts)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series at one instant (UTC epoch milliseconds)."""

    name: str
    labels: Labels
    ts_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class ProbeRun:
    """One canary request against one model.

    ``category`` is one of ``ok``, ``slow``, ``wrong_output``, ``http_error``, ``timeout``,
    ``refused``, ``protocol_error``. Latencies are None where the protocol has no such phase.

    ``ts_ms`` is when the request was sent; ``end_ms`` when its outcome was observed (the
    answer's end arrived, the connection was refused, the timeout expired), stamped by the
    agent as the run returns; None in records from before it was kept. State changes and
    incidents take ``end_ms``: that is when the agent knew. ``planned`` marks a run made while
    the model's server was in a start (or stop) that the agent or an operator asked for: it
    is recorded but opens no incident and does not count against availability.
    """

    model: str
    ts_ms: int
    ok: bool
    category: str
    e2e_ms: float | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    output_tokens: int | None = None
    tokens_per_s: float | None = None
    status: int | None = None
    error: str | None = None
    phases_ms: Mapping[str, float] = field(default_factory=dict)
    end_ms: int | None = None
    planned: bool = False

    @property
    def observed_ms(self) -> int:
        """When the outcome was known: ``end_ms``, or ``ts_ms`` for records without it."""
        return self.end_ms if self.end_ms is not None else self.ts_ms

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form, as served by the API."""
        data = asdict(self)
        data["phases_ms"] = dict(self.phases_ms)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeRun:
        """Rebuild from :meth:`to_json` output; unknown keys are ignored for forward compat."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["phases_ms"] = dict(kwargs.get("phases_ms") or {})
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the audit trail: something happened to a subject.

    ``kind`` is dotted (``agent.started``, ``config.reload_refused``, ``process.exited``);
    ``subject`` names what it happened to (``agent``, ``model:demo``, ``process:demo-server``).
    ``data`` is the evidence, JSON-serialisable. ``seq`` and the hashes are set by storage.
    """

    ts_ms: int
    kind: str
    subject: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form, as served by the API."""
        out = asdict(self)
        out["data"] = dict(self.data)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """Rebuild from :meth:`to_json` output."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One point of a range query: the bucket's start and its avg/min/max (equal when raw)."""

    ts_ms: int
    avg: float
    min: float
    max: float
    count: int = 1


@dataclass(frozen=True, slots=True)
class ResourceValue:
    """The latest value of one resource series, as the status endpoint reports it."""

    name: str
    labels: Labels
    ts_ms: int
    value: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "ts_ms": self.ts_ms,
            "value": self.value,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResourceValue:
        """Rebuild from :meth:`to_json` output."""
        return cls(
            name=str(data["name"]),
            labels=make_labels(data.get("labels") or {}),
            ts_ms=int(data["ts_ms"]),
            value=float(data["value"]),
        )


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """A probed model's live state (a :class:`ModelState`), since when."""

    name: str
    protocol: str
    url: str
    state: str
    since_ms: int
    last_run: ProbeRun | None = None
    drift: Mapping[str, int] = field(default_factory=dict)
    """Drift detected and not yet cleared: group (``latency``, ``throughput``) -> since (ms)."""
    planned: str | None = None
    """Why the model is ``starting`` or ``stopped`` (``agent start``, ``restart by alice``)."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "name": self.name,
            "protocol": self.protocol,
            "url": self.url,
            "state": self.state,
            "since_ms": self.since_ms,
            "last_run": self.last_run.to_json() if self.last_run else None,
            "drift": dict(self.drift),
            "planned": self.planned,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelStatus:
        """Rebuild from :meth:`to_json` output."""
        last = data.get("last_run")
        return cls(
            name=str(data["name"]),
            protocol=str(data["protocol"]),
            url=str(data["url"]),
            state=str(data["state"]),
            since_ms=int(data["since_ms"]),
            last_run=ProbeRun.from_json(last) if last else None,
            # Older agents send no drift: nothing detected, as far as we can tell.
            drift={str(k): int(v) for k, v in (data.get("drift") or {}).items()},
            planned=str(data["planned"]) if data.get("planned") else None,
        )


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """A supervised process's live state (a :class:`ProcessState`), its pid, restarts and last
    exit."""

    name: str
    state: str
    """A :class:`ProcessState`; a plain string from JSON (a newer agent may know more states)."""
    since_ms: int
    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    argv: tuple[str, ...] = ()
    kind: str = "command"
    """``command``, ``systemd``, ``pidfile`` or ``match``."""
    target: str = ""
    """What is supervised, readable: the command line, the unit, the pidfile."""
    detail: str | None = None
    """Why it is in its state: "restart in 2.00s: exit 1", "waiting for db"."""
    last_reason: str | None = None
    """Why it was last restarted."""
    adopted: bool = False
    depends_on: tuple[str, ...] = ()
    incident: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        out = asdict(self)
        out["argv"] = list(self.argv)
        out["depends_on"] = list(self.depends_on)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessStatus:
        """Rebuild from :meth:`to_json` output."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["argv"] = tuple(kwargs.get("argv") or ())
        kwargs["depends_on"] = tuple(kwargs.get("depends_on") or ())
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """Everything ``GET /api/v1/status`` answers: who the agent is and what it sees now."""

    host: str
    version: str
    started_ms: int
    now_ms: int
    models: tuple[ModelStatus, ...] = ()
    processes: tuple[ProcessStatus, ...] = ()
    resources: tuple[ResourceValue, ...] = ()
    gpu_available: bool = False
    storage_ok: bool = True
    labels: tuple[tuple[str, str], ...] = ()
    """``[agent] labels`` (name, value), sorted by name: region, team, env, GPU type."""

    @property
    def uptime_s(self) -> float:
        """Seconds since the agent started."""
        return max(0.0, (self.now_ms - self.started_ms) / 1000.0)

    def resource(self, name: str, **labels: object) -> float | None:
        """The latest value of one resource series, or None when the agent has not seen it."""
        wanted = make_labels(labels)
        for res in self.resources:
            if res.name == name and res.labels == wanted:
                return res.value
        return None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "host": self.host,
            "version": self.version,
            "started_ms": self.started_ms,
            "now_ms": self.now_ms,
            "uptime_s": self.uptime_s,
            "gpu_available": self.gpu_available,
            "storage_ok": self.storage_ok,
            "labels": dict(self.labels),
            "models": [m.to_json() for m in self.models],
            "processes": [p.to_json() for p in self.processes],
            "resources": [r.to_json() for r in self.resources],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentStatus:
        """Rebuild from :meth:`to_json` output."""
        return cls(
            host=str(data["host"]),
            version=str(data["version"]),
            started_ms=int(data["started_ms"]),
            now_ms=int(data["now_ms"]),
            gpu_available=bool(data.get("gpu_available", False)),
            storage_ok=bool(data.get("storage_ok", True)),
            models=tuple(ModelStatus.from_json(m) for m in data.get("models", ())),
            processes=tuple(ProcessStatus.from_json(p) for p in data.get("processes", ())),
            resources=tuple(ResourceValue.from_json(r) for r in data.get("resources", ())),
            labels=tuple(sorted(read_labels(data.get("labels")).items())),
        )


@dataclass(frozen=True, slots=True)
class Incident:
    """Something an operator should know about, from detection to recovery.

    ``state`` is ``open``, ``acknowledged`` or ``resolved``. ``began_ms`` is when the fault was
    first there to be seen (the start of the first failed probe request of the streak, a
    process's exit, a start's deadline); ``opened_ms`` when the agent decided it was an
    incident; ``resolved_ms`` when recovery was observed. ``ttr_ms`` (time to recover) is
    ``resolved_ms - began_ms`` (``- opened_ms`` where ``began_ms`` is unknown); the time to
    detect is ``opened_ms - began_ms``. ``root_id`` points at the incident this one follows
    from (a model down because its server's dependency is down).
    """

    id: int
    subject: str
    kind: str
    severity: str
    cause: str
    state: str
    opened_ms: int
    acknowledged_ms: int | None = None
    acknowledged_by: str | None = None
    resolved_ms: int | None = None
    resolved_by: str | None = None
    ttr_ms: int | None = None
    root_id: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    began_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        out = asdict(self)
        out["evidence"] = dict(self.evidence)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Incident:
        """Rebuild from :meth:`to_json` output."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["evidence"] = dict(kwargs.get("evidence") or {})
        return cls(**kwargs)


class ArtifactKind(StrEnum):
    """What a versioned artifact is on disk: one file, or a directory of files."""

    FILE = "file"
    DIR = "dir"


class DeployKind(StrEnum):
    """What a deployment changes: the model's artifact, or its process's configuration
    (command, environment, canary), which is gated the same way."""

    ARTIFACT = "artifact"
    CONFIG = "config"


class DeployStrategy(StrEnum):
    """How a deployment reaches traffic.

    ``in-place`` switches the artifact and restarts the one process; ``blue-green`` starts the
    new version beside the old one and moves traffic through the front proxy; ``record`` only
    records a deployment another tool made.
    """

    IN_PLACE = "in-place"
    BLUE_GREEN = "blue-green"
    RECORD = "record"


class DeployState(StrEnum):
    """Where a deployment is in its (persisted, resumable) state machine.

    ``requested`` is stored but not started; ``awaiting_approval`` waits for an operator;
    ``switching`` changes the artifact link, the config or the proxy; ``starting`` waits for
    the new copy's startup gate; ``baking`` runs the canary gate for the bake window;
    ``promoting`` makes the version known-good (and, blue-green, drains the old copy);
    ``rolling_back`` returns to the last known-good version. The last four are final:
    ``promoted``, ``rolled_back``, ``failed`` (could not even roll back, or nothing to roll back
    to) and ``cancelled`` (refused or withdrawn before it changed anything).
    """

    REQUESTED = "requested"
    AWAITING_APPROVAL = "awaiting_approval"
    SWITCHING = "switching"
    STARTING = "starting"
    BAKING = "baking"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True once the deployment is over (nothing left to resume)."""
        return self in FINAL_DEPLOY_STATES


FINAL_DEPLOY_STATES = frozenset(
    {DeployState.PROMOTED, DeployState.ROLLED_BACK, DeployState.FAILED, DeployState.CANCELLED}
)
"""The states a deployment ends in; any other state is in flight (one per model at a time)."""
