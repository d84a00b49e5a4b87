"""Dependency-aware suppression: which alerts follow from another alert's outage.

An alert is *folded* under a root alert when its subject's trouble follows from the root's
subject: the subject has an open incident whose root incident is about the root's subject (a
model down because its server crashed), or one of the subject's dependencies (its process, that
process's ``depends_on``) has an open incident and a firing alert. The router then sends the
folded alert inside the root's notification instead of alone. Folding changes notifications
only: the folded alert is evaluated, recorded and resolved as any other.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.alerting.engine import FIRING
from agent.alerting.snapshot import Snapshot
from storage.alerts import AlertRow
from storage.records import Incident

_SEVERITY_RANK = {"critical": 0, "warning": 1}


def _root_incident(inc: Incident, by_id: dict[int, Incident]) -> Incident:
    seen = {inc.id}
    while inc.root_id is not None and inc.root_id in by_id and inc.root_id not in seen:
        inc = by_id[inc.root_id]
        seen.add(inc.id)
    return inc


def root_subjects(subject: str, snap: Snapshot) -> list[str]:
    """The subjects whose outage ``subject``'s trouble follows from, nearest root first."""
    by_id = {i.id: i for i in snap.incidents}
    out: list[str] = []
    for inc in snap.incidents:
        if inc.subject == subject and inc.root_id is not None:
            root = _root_incident(inc, by_id)
            if root.subject != subject and root.subject not in out:
                out.append(root.subject)
    troubled = {i.subject for i in snap.incidents}
    for dep in snap.dependencies(subject):
        if dep in troubled and dep not in out:
            out.append(dep)
    return out


def fold_roots(alerts: Iterable[AlertRow], snap: Snapshot) -> dict[str, str]:
    """Alert fingerprint -> the fingerprint of the root alert it is folded under."""
    firing = [a for a in alerts if a.state == FIRING]
    by_subject: dict[str, list[AlertRow]] = {}
    for a in firing:
        by_subject.setdefault(a.subject, []).append(a)
    folds: dict[str, str] = {}
    for a in firing:
        for root_subject in root_subjects(a.subject, snap):
            roots = sorted(
                by_subject.get(root_subject, ()),
                key=lambda r: (_SEVERITY_RANK.get(r.severity, 2), r.id),
            )
            if roots:
                folds[a.fingerprint] = roots[0].fingerprint
                break
    # A root folded under its own root (a process down because its database is): fold to the top.
    for fp in list(folds):
        seen = {fp}
        top = folds[fp]
        while top in folds and top not in seen:
            seen.add(top)
            top = folds[top]
        folds[fp] = top
    return {fp: root for fp, root in folds.items() if root != fp}
