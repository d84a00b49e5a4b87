"""The alert engine: rules evaluated against live state, each alert's lifecycle kept and recorded.

Every evaluation turns each rule's observations into alert instances (rule x labels, named by
a stable ``fingerprint``) and moves them ``pending -> firing -> resolved``: pending while the
condition holds for less than the rule's ``for``; firing after; resolved once the value stops
passing the clear threshold for ``clear_for``. An instance with no reading yet (a model not
probed since the agent started) keeps whatever state it has. An alert that fires and resolves
``flap_transitions`` times within ``flap_window`` is marked flapping until it keeps one state
for a whole window. Every move is stored (``alerts`` row via the writer), audited
(``alert.pending``, ``alert.firing``, ``alert.resolved``, ``alert.flapping``) at the time it
was decided, and returned as a :class:`Transition` for the notifier. The engine never sends
anything, and nothing here depends on storage working: the records degrade, not the decisions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.alerting.signals import Observation, RestartHistory, observe
from agent.alerting.snapshot import Snapshot
from agent.config.alerting.rules import Rule
from agent.config.alerting.templates import render
from storage.alerts import AlertRow, list_alerts, max_alert_id, save_alert
from storage.records import Event, make_labels
from storage.writer import Writer

log = logging.getLogger("vigil.alerts")

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    """The stable identity of one alert instance: a hash of its rule and labels."""
    text = json.dumps([rule, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Transition:
    """One alert's move, as decided at ``at_ms``.

    ``kind`` is ``pending``, ``firing``, ``resolved``, ``flapping`` (it started to flap) or
    ``settled`` (it stopped); ``was`` is the state before (``""`` for a new alert). ``alert``
    is the alert after the move.
    """

    kind: str
    at_ms: int
    alert: AlertRow
    was: str = ""


@dataclass
class _Live:
    row: AlertRow
    clear_since_ms: int | None = None


@dataclass
class _Flaps:
    flips: deque[int] = field(default_factory=deque)
    flapping: bool = False


TICK_TOLERANCE_MS = 50
"""How early an evaluation may come and still count a ``for``/``clear_for`` as held: the
periodic job reads the clock as it wakes, a few ms either side of its tick, and without this a
tick that woke early made the alert wait a whole interval more (bench/alert_noise.py: a
quarter of alerts fired one evaluation late)."""


FINGERPRINT_CACHE = 10_000
"""Instances remembered at most per rule (one per subject on a real host)."""


@dataclass(frozen=True, slots=True)
class _Instance:
    """One alert instance's identity: its fingerprint and full labels."""

    fingerprint: str
    labels: dict[str, str]


class AlertEngine:
    """Evaluates rules; keeps, stores and audits every alert's lifecycle."""

    def __init__(
        self,
        rules: Iterable[Rule],
        writer: Writer | None,
        emit: Callable[[Event], None],
        *,
        flap_window_s: float = 600.0,
        flap_transitions: int = 4,
    ) -> None:
        self.rules = [r for r in rules if r.enabled]
        self.writer = writer
        self.emit = emit
        self.flap_window_ms = int(flap_window_s * 1000)
        self.flap_transitions = flap_transitions
        self.restarts = RestartHistory()
        self._live: dict[str, _Live] = {}
        self._flaps: dict[str, _Flaps] = {}
        self._rows: dict[str, AlertRow] = {}
        """Each fingerprint's latest row, resolved ones too while they may still flap."""
        self._next_id = 1
        self._known: dict[str, tuple[Rule, dict[tuple[tuple[str, str], ...], _Instance]]] = {}
        """Rule name -> (the rule, its instances by observed labels): the same instances every
        evaluation, each one a labels dict, a JSON dump and a SHA-256 otherwise."""

    def load(self, conn: sqlite3.Connection) -> None:
        """Pick up the pending and firing alerts and the id counter (at start)."""
        self._next_id = max_alert_id(conn) + 1
        for row in list_alerts(conn, states=(PENDING, FIRING), limit=100_000):
            self._live.setdefault(row.fingerprint, _Live(row))

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Take a new rule set (config reload); alerts of removed rules resolve next time."""
        self.rules = [r for r in rules if r.enabled]
        self._known = {}

    def active(self) -> list[AlertRow]:
        """The pending and firing alerts, oldest first."""
        return sorted((lv.row for lv in self._live.values()), key=lambda r: r.id)

    def is_flapping(self, fp: str) -> bool:
        """Whether the alert with this fingerprint is flapping now."""
        flaps = self._flaps.get(fp)
        return bool(flaps and flaps.flapping)

    def flapping(self) -> frozenset[str]:
        """The fingerprints of the alerts flapping now."""
        return frozenset(fp for fp, f in self._flaps.items() if f.flapping)

    def evaluate(self, now_ms: int, snap: Snapshot) -> list[Transition]:
        """One evaluation of every rule at ``now_ms``; the transitions it decided."""
        self.restarts.note(snap, now_ms)
        out: list[Transition] = []
        seen: set[str] = set()
        for rule in self.rules:
            try:
                observations = observe(rule, snap, now_ms, self.restarts)
            except Exception:  # one rule's bug or a read failing must not stop the others
                log.exception("alert rule failed rule=%s", rule.name)
                seen |= {fp for fp, lv in self._live.items() if lv.row.rule == rule.name}
                continue
            known = self._instances(rule)
            for obs in observations:
                key = tuple(obs.labels.items())
                instance = known.get(key) or self._instance(rule, known, key)
                fp = instance.fingerprint
                seen.add(fp)
                if fp not in self._live and (
                    obs.unknown or obs.value is None or not rule.passes(obs.value, rule.threshold)
                ):
                    continue  # quiet, as most are: nothing to start (what _step would decide)
                out += self._step(rule, fp, dict(instance.labels), obs, now_ms)
        for fp in [fp for fp in self._live if fp not in seen]:  # gone, or its rule removed
            out += self._end(self._live[fp], now_ms)
        out += self._settle(now_ms)
        return out

    def _instances(self, rule: Rule) -> dict[tuple[tuple[str, str], ...], _Instance]:
        held = self._known.get(rule.name)
        if held is None or held[0] is not rule:
            held = self._known[rule.name] = (rule, {})
        return held[1]

    @staticmethod
    def _instance(
        rule: Rule,
        known: dict[tuple[tuple[str, str], ...], _Instance],
        key: tuple[tuple[str, str], ...],
    ) -> _Instance:
        if len(known) >= FINGERPRINT_CACHE:
            known.clear()  # instances come and go (incidents): start over
        labels = {**dict(key), **rule.labels, "alertname": rule.name}
        labels["severity"] = str(rule.severity)
        instance = known[key] = _Instance(fingerprint(rule.name, labels), labels)
        return instance

    def _step(
        self, rule: Rule, fp: str, labels: dict[str, str], obs: Observation, now_ms: int
    ) -> list[Transition]:
        live = self._live.get(fp)
        if obs.unknown:
            return []  # no reading yet: neither a recovery nor a new condition
        value = obs.value
        if live is None:
            if value is None or not rule.passes(value, rule.threshold):
                return []
            row = AlertRow(
                id=self._next_id,
                fingerprint=fp,
                rule=rule.name,
                subject=obs.subject,
                labels=make_labels(labels),
                severity=str(rule.severity),
                state=PENDING,
                value=value,
                summary=_summary(rule, obs, labels),
                runbook_url=rule.runbook_url,
                pending_ms=now_ms,
                firing_ms=None,
                resolved_ms=None,
                flapping=self.is_flapping(fp),
                updated_ms=now_ms,
            )
            self._next_id += 1
            live = self._live[fp] = _Live(row)
            if rule.for_s > 0:
                return [self._record(live.row, PENDING, "", now_ms)]
            return self._fire(live, obs, rule, now_ms, was="")
        row = live.row
        if row.state == PENDING:
            if value is None or not rule.passes(value, rule.threshold):
                return self._end(live, now_ms)
            live.row = dataclasses.replace(row, value=value)
            if now_ms - row.pending_ms >= rule.for_s * 1000 - TICK_TOLERANCE_MS:
                return self._fire(live, obs, rule, now_ms, was=PENDING)
            return []
        if value is not None and rule.passes(value, rule.clear_at):
            live.clear_since_ms = None
            live.row = dataclasses.replace(row, value=value, summary=_summary(rule, obs, labels))
            return []
        if live.clear_since_ms is None:
            live.clear_since_ms = now_ms
        if now_ms - live.clear_since_ms >= rule.clear_for_s * 1000 - TICK_TOLERANCE_MS:
            if value is not None:
                live.row = dataclasses.replace(row, value=value)
            return self._end(live, now_ms)
        return []

    def _fire(
        self, live: _Live, obs: Observation, rule: Rule, now_ms: int, was: str
    ) -> list[Transition]:
        labels = dict(live.row.labels)
        live.row = dataclasses.replace(
            live.row, state=FIRING, firing_ms=now_ms, summary=_summary(rule, obs, labels)
        )
        out = [self._record(live.row, FIRING, was, now_ms)]
        return out + self._flip(live.row, now_ms)

    def _end(self, live: _Live, now_ms: int) -> list[Transition]:
        """The condition is over: a firing alert resolves; a pending one ends unfired."""
        del self._live[live.row.fingerprint]
        was = live.row.state
        row = dataclasses.replace(live.row, state=RESOLVED, resolved_ms=now_ms)
        out = [self._record(row, RESOLVED, was, now_ms)]
        if was != FIRING:
            if row.fingerprint not in self._flaps:
                self._rows.pop(row.fingerprint, None)
            return out
        return out + self._flip(row, now_ms)

    def _flip(self, row: AlertRow, now_ms: int) -> list[Transition]:
        flaps = self._flaps.setdefault(row.fingerprint, _Flaps())
        flaps.flips.append(now_ms)
        while flaps.flips and flaps.flips[0] <= now_ms - self.flap_window_ms:
            flaps.flips.popleft()
        if flaps.flapping or len(flaps.flips) < self.flap_transitions:
            return []
        flaps.flapping = True
        return [self._flapping(row, True, now_ms)]

    def _settle(self, now_ms: int) -> list[Transition]:
        out = []
        for fp, flaps in list(self._flaps.items()):
            while flaps.flips and flaps.flips[0] <= now_ms - self.flap_window_ms:
                flaps.flips.popleft()
            if flaps.flips:
                continue
            del self._flaps[fp]
            row = self._rows.pop(fp, None) if fp not in self._live else None
            if flaps.flapping:
                live = self._live.get(fp)
                last = live.row if live is not None else row
                if last is not None:
                    out.append(self._flapping(last, False, now_ms))
        return out

    def _flapping(self, row: AlertRow, on: bool, now_ms: int) -> Transition:
        row = dataclasses.replace(row, flapping=on)
        live = self._live.get(row.fingerprint)
        if live is not None:
            live.row = row
        if on or live is not None:
            self._rows[row.fingerprint] = row
        kind = "flapping" if on else "settled"
        self._store(row, now_ms)
        self.emit(
            Event(
                ts_ms=now_ms,
                kind="alert.flapping",
                subject=row.subject,
                message=f"{row.rule} {'is flapping' if on else 'settled'}: {row.summary}",
                data={"fingerprint": row.fingerprint, "alert": row.id, "state": kind},
            )
        )
        return Transition(kind, now_ms, row, row.state)

    def _record(self, row: AlertRow, kind: str, was: str, now_ms: int) -> Transition:
        row = dataclasses.replace(row, updated_ms=now_ms)
        if row.fingerprint in self._live:
            self._live[row.fingerprint].row = row
        self._rows[row.fingerprint] = row
        self._store(row, now_ms)
        value = row.value if row.value is not None and math.isfinite(row.value) else None
        log.log(
            logging.WARNING if kind == FIRING else logging.INFO,
            "alert %s rule=%s subject=%s fingerprint=%s",
            kind,
            row.rule,
            row.subject,
            row.fingerprint,
        )
        self.emit(
            Event(
                ts_ms=now_ms,
                kind=f"alert.{kind}",
                subject=row.subject,
                message=f"{row.rule} {kind}: {row.summary}",
                data={
                    "fingerprint": row.fingerprint,
                    "alert": row.id,
                    "rule": row.rule,
                    "severity": row.severity,
                    "labels": dict(row.labels),
                    "value": value,
                    "was": was,
                },
            )
        )
        return Transition(kind, now_ms, row, was)

    def _store(self, row: AlertRow, now_ms: int) -> None:
        if self.writer is not None:
            stored = dataclasses.replace(row, updated_ms=now_ms)
            self.writer.run_task(lambda conn: save_alert(conn, stored))


def _summary(rule: Rule, obs: Observation, labels: dict[str, str]) -> str:
    value = obs.value
    shown: object = value
    if value is None:
        shown = "none"
    elif math.isinf(value):
        shown = "never"
    values: dict[str, object] = {
        **labels,
        **obs.fields,
        "rule": rule.name,
        "severity": str(rule.severity),
        "value": shown,
        "threshold": rule.threshold,
        "clear_threshold": rule.clear_at,
        "op": rule.op,
        "subject": obs.subject,
    }
    return render(rule.summary, values)
