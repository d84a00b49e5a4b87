"""The fleet report's numbers: each host's report JSON (``GET /api/v1/report``) and serving
environment (``GET /api/v1/environment``) aggregated per group and for the fleet.

Pure: no I/O, no clock. ``vigil report --fleet`` (agent/cli/fleet_report.py) fetches what each
member serves and hands it here as :class:`Member` records; the unit tests hand in fake report
JSON with known numbers and check the fleet's figures. docs/kpi.md ("Fleet figures") defines
them for users; in short, across hosts (pooled, never an average of averages):

- **Availability**: ok runs / runs, summed over every model of every answering host (each
  host's report already counts unplanned runs only).
- **Outage** and **planned downtime**: summed over models and hosts.
- **Incidents**: unplanned incidents summed; **MTTR** the mean time to recover of every
  unplanned incident resolved in the window, over all hosts (from each host's incident rows).
- **Change-failure rate**: failed changes / finished changes, both summed over hosts (the
  DORA keys of Vigil's own deploys); deployment frequency: promoted changes / window days.
- **Artifact changes** seen by probes and **drift detections** summed.
- **Environment differences**: per group, :func:`storage.fleetdrift.group_drift` over the
  fingerprints of the hosts that served one; each (host, item) whose value is not the group's
  majority is listed with the host's value and the majority.

A host that did not answer is kept as *unreachable* with the reason, counts in the coverage
(hosts answered / hosts in the file) and in no figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.fleetdrift import group_drift
from storage.report_model import to_plain

__all__ = [
    "FLEET_SCHEMA_VERSION",
    "NO_LABEL",
    "EnvDifference",
    "FleetReport",
    "Kpis",
    "Member",
    "build_fleet_report",
    "group_of",
]

FLEET_SCHEMA_VERSION = 1
DAY_MS = 86_400_000
ALL = "all"
"""The one group's name without ``--group-by``."""
NO_LABEL = "(none)"
"""The group of hosts without the ``--group-by`` label."""


@dataclass(frozen=True, slots=True)
class Member:
    """What one fleet member gave: its report JSON and environment sections, or why not.

    Attributes:
        name: The fleet file's name for it.
        url: Its address (``http(s)://``; an ``ssh://`` member is refused with ``error``).
        labels: The agent's served labels with the fleet file's over them.
        report: The host report's JSON document; None: it did not answer (``error`` says why).
        environment: ``sections`` of its ``/api/v1/environment``; None when not served.
        error: Why the report could not be had (None: it was).
        environment_error: Why the environment could not be had, when the report could.
        environment_hash: The environment's compact hash (``sha256:`` and 16 hex digits).
    """

    name: str
    url: str
    labels: Mapping[str, str] = field(default_factory=dict)
    report: Mapping[str, Any] | None = None
    environment: Mapping[str, Mapping[str, str]] | None = None
    error: str | None = None
    environment_error: str | None = None
    environment_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Kpis:
    """The pooled figures of a host, a group or the fleet (see the module's rules)."""

    hosts: int
    answered: int
    models: int
    runs: int
    ok_runs: int
    availability: float | None
    outage_ms: int
    planned_downtime_ms: int
    incidents: int
    """Unplanned incidents in the window."""
    incidents_open: int
    resolved: int
    """Unplanned incidents resolved in the window (MTTR's count)."""
    mttr_ms: float | None
    changes: int
    promoted: int
    failed_changes: int
    change_failure_rate: float | None
    deploys_per_day: float
    rollbacks: int
    artifact_changes: int
    drift_detections: int
    env_differences: int
    """(host, item) pairs differing from their group's majority."""
    audit_broken: int
    """Hosts whose audit chain does not verify."""


@dataclass(frozen=True, slots=True)
class HostRow:
    """One member: reachable or not, its labels and group, and its own figures."""

    name: str
    url: str
    group: str
    labels: Mapping[str, str]
    reachable: bool
    error: str | None
    reported_host: str | None
    environment_hash: str | None
    kpis: Kpis


@dataclass(frozen=True, slots=True)
class GroupRow:
    """One group: its hosts (reachable or not) and its pooled figures."""

    group: str
    hosts: tuple[str, ...]
    unreachable: tuple[str, ...]
    kpis: Kpis


@dataclass(frozen=True, slots=True)
class EnvDifference:
    """One host's item that differs from its group's majority (``tied``: no majority)."""

    group: str
    host: str
    section: str
    item: str
    value: str | None
    majority: str | None
    tied: bool


@dataclass(frozen=True, slots=True)
class FleetReport:
    """The fleet report (its JSON is :meth:`to_json`)."""

    schema_version: int
    fleet: str
    generated_ms: int
    since_ms: int
    until_ms: int
    group_by: str | None
    coverage: Mapping[str, int]
    """``answered`` and ``hosts`` (in the file)."""
    fleet_kpis: Kpis
    groups: tuple[GroupRow, ...]
    hosts: tuple[HostRow, ...]
    env_differences: tuple[EnvDifference, ...]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (NaN and infinities as null)."""
        out: dict[str, Any] = to_plain(self)
        out["fleet"] = out.pop("fleet_kpis")
        out["fleet"]["file"] = self.fleet
        return out


def group_of(labels: Mapping[str, str], group_by: str | None) -> str:
    """The group a host with ``labels`` falls in (``all`` without ``group_by``)."""
    if group_by is None:
        return ALL
    return labels.get(group_by) or NO_LABEL


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _int(value: Any) -> int:
    return int(_num(value))


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass
class _Sums:
    """Running sums over host reports; :meth:`kpis` gives the pooled figures."""

    hosts: int = 0
    answered: int = 0
    models: int = 0
    runs: int = 0
    ok_runs: int = 0
    outage_ms: int = 0
    planned_ms: int = 0
    incidents: int = 0
    open: int = 0
    ttrs: list[float] = field(default_factory=list)
    changes: int = 0
    promoted: int = 0
    failed: int = 0
    rollbacks: int = 0
    artifact_changes: int = 0
    drift: int = 0
    env_differences: int = 0
    audit_broken: int = 0

    def add(self, report: Mapping[str, Any] | None) -> None:
        self.hosts += 1
        if report is None:
            return
        self.answered += 1
        for model in _list(report.get("models")):
            m = _dict(model)
            self.models += 1
            self.runs += _int(m.get("runs"))
            self.ok_runs += _int(m.get("ok_runs"))
            self.outage_ms += _int(m.get("outage_ms"))
            self.planned_ms += _int(m.get("planned_downtime_ms"))
        for raw in _list(_dict(report.get("incidents")).get("rows")):
            row = _dict(raw)
            if row.get("maintenance") is not None:
                continue
            self.incidents += 1
            if row.get("resolved_ms") is None:
                self.open += 1
            ttr = row.get("ttr_ms")
            if isinstance(ttr, int | float) and not isinstance(ttr, bool):
                self.ttrs.append(float(ttr))
        keys = _dict(_dict(report.get("deploys")).get("host"))
        self.changes += _int(keys.get("changes"))
        self.promoted += _int(keys.get("promoted"))
        self.failed += _int(keys.get("failed_changes"))
        self.rollbacks += _int(keys.get("rollbacks"))
        self.artifact_changes += _int(_dict(report.get("deployments")).get("count"))
        self.drift += _int(_dict(report.get("drift")).get("count"))
        if _dict(report.get("audit")).get("ok") is False:
            self.audit_broken += 1

    def merge(self, other: _Sums) -> None:
        for name in self.__dataclass_fields__:
            if name == "ttrs":
                self.ttrs.extend(other.ttrs)
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def kpis(self, span_ms: int) -> Kpis:
        days = span_ms / DAY_MS if span_ms > 0 else 0.0
        return Kpis(
            hosts=self.hosts,
            answered=self.answered,
            models=self.models,
            runs=self.runs,
            ok_runs=self.ok_runs,
            availability=self.ok_runs / self.runs if self.runs else None,
            outage_ms=self.outage_ms,
            planned_downtime_ms=self.planned_ms,
            incidents=self.incidents,
            incidents_open=self.open,
            resolved=len(self.ttrs),
            mttr_ms=sum(self.ttrs) / len(self.ttrs) if self.ttrs else None,
            changes=self.changes,
            promoted=self.promoted,
            failed_changes=self.failed,
            change_failure_rate=self.failed / self.changes if self.changes else None,
            deploys_per_day=self.promoted / days if days else 0.0,
            rollbacks=self.rollbacks,
            artifact_changes=self.artifact_changes,
            drift_detections=self.drift,
            env_differences=self.env_differences,
            audit_broken=self.audit_broken,
        )


def _differences(group: str, members: Iterable[Member]) -> list[EnvDifference]:
    prints = {m.name: m.environment for m in members if m.environment is not None}
    if len(prints) < 2:
        return []
    drift = group_drift(prints)
    out = [
        EnvDifference(group, host, d.section, d.item, d.values.get(host), d.majority, d.tied)
        for d in drift.items
        for host in d.differing
    ]
    out.sort(key=lambda e: (e.host, e.section, e.item))
    return out


def build_fleet_report(
    members: Sequence[Member],
    *,
    fleet: str,
    since_ms: int,
    until_ms: int,
    generated_ms: int,
    group_by: str | None = None,
) -> FleetReport:
    """Aggregate the members' reports (see the module's rules).

    Args:
        members: Every member of the fleet file, in its order, answered or not.
        fleet: The fleet file's name, for the title.
        since_ms: The window's start (as asked of every host).
        until_ms: The window's end.
        generated_ms: When the report was made.
        group_by: The label the groups are made by (None: one group, ``all``).
    """
    span = until_ms - since_ms
    by_group: dict[str, list[Member]] = {}
    for m in members:
        by_group.setdefault(group_of(m.labels, group_by), []).append(m)
    differences: list[EnvDifference] = []
    host_rows: dict[str, HostRow] = {}
    group_rows: list[GroupRow] = []
    fleet_sums = _Sums()
    for group in sorted(by_group):
        group_members = by_group[group]
        diffs = _differences(group, group_members)
        differences += diffs
        per_host = {h: sum(1 for d in diffs if d.host == h) for h in {d.host for d in diffs}}
        group_sums = _Sums()
        for m in group_members:
            sums = _Sums(env_differences=per_host.get(m.name, 0))
            sums.add(m.report)
            group_sums.merge(sums)
            report = m.report or {}
            host_rows[m.name] = HostRow(
                name=m.name,
                url=m.url,
                group=group,
                labels=dict(sorted(m.labels.items())),
                reachable=m.report is not None,
                error=m.error,
                reported_host=report.get("host") if isinstance(report.get("host"), str) else None,
                environment_hash=m.environment_hash,
                kpis=sums.kpis(span),
            )
        fleet_sums.merge(group_sums)
        group_rows.append(
            GroupRow(
                group=group,
                hosts=tuple(m.name for m in group_members),
                unreachable=tuple(m.name for m in group_members if m.report is None),
                kpis=group_sums.kpis(span),
            )
        )
    notes: list[str] = []
    for m in members:
        if m.report is not None and m.environment_error is not None:
            notes.append(f"{m.name}: environment not known ({m.environment_error})")
    if group_by is not None and all(not m.labels.get(group_by) for m in members):
        notes.append(
            f"no host has the label {group_by!r}: every host is in the group {NO_LABEL} "
            "(labels come from [agent] labels and the fleet file's labels)"
        )
    return FleetReport(
        schema_version=FLEET_SCHEMA_VERSION,
        fleet=fleet,
        generated_ms=generated_ms,
        since_ms=since_ms,
        until_ms=until_ms,
        group_by=group_by,
        coverage={"answered": fleet_sums.answered, "hosts": fleet_sums.hosts},
        fleet_kpis=fleet_sums.kpis(span),
        groups=tuple(group_rows),
        hosts=tuple(host_rows[m.name] for m in members),
        env_differences=tuple(differences),
        notes=tuple(notes),
    )
