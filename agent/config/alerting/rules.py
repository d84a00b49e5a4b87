"""Alert rules: what to watch, when to fire, when to clear, and what to say.

A :class:`Rule` is flat, frozen data, so the config schema can embed it as an ``[[alert]]``
table field for field. :func:`validate_rule` returns every problem as a :class:`RuleError`
naming the field, which the config loader turns into ``file:line: alert[N].field: ...``.

A rule watches one *source* (``kind``):

- ``series``: a stored series, aggregated over ``window`` (``avg max min last p50 p95 p99``,
  ``rate`` per second by a linear fit, ``absent`` 1 when no sample came in the window, and
  ``time_to_full`` the seconds until the fitted line reaches the latest ``limit_series`` value).
  ``ratio_to`` divides the aggregate by the latest value of another series with the same labels,
  as a percentage (GPU memory used of total).
- ``model_state`` / ``process_state``: 1 while a model's or a process's state is in ``states``.
- ``process_restarts``: a process's restarts within ``window``.
- ``incident``: 1 per open incident of ``incident_kinds``.
- ``drift``: 1 per model and drift group (``latency``, ``throughput``, ``output``) in drift.
- ``agent``: one of the agent's own signals (``storage_failing``, ``watchdog_late_s``).

The value is compared with ``threshold``; the alert is pending, then firing once the
condition held for ``for_s``. It clears when the value no longer passes ``clear_threshold``
(hysteresis: a rule firing above 90 that clears below 85) for ``clear_for_s``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from agent.config.alerting.catalog import series_labels
from agent.config.alerting.templates import check_template
from storage.records import ModelState, ProcessState
from storage.units import EXPECTED as DURATION_EXPECTED
from storage.units import parse_duration


class Severity(StrEnum):
    """How urgent a firing alert is."""

    WARNING = "warning"
    CRITICAL = "critical"


class SourceKind(StrEnum):
    """What a rule watches (see the module docstring)."""

    SERIES = "series"
    MODEL_STATE = "model_state"
    PROCESS_STATE = "process_state"
    PROCESS_RESTARTS = "process_restarts"
    INCIDENT = "incident"
    DRIFT = "drift"
    AGENT = "agent"


class Aggregation(StrEnum):
    """How a series' samples in the window become one value."""

    AVG = "avg"
    MAX = "max"
    MIN = "min"
    LAST = "last"
    P50 = "p50"
    P95 = "p95"
    P99 = "p99"
    RATE = "rate"
    ABSENT = "absent"
    TIME_TO_FULL = "time_to_full"


AGENT_SIGNALS = ("storage_failing", "watchdog_late_s")
"""The agent's own signals (see :class:`agent.alerting.snapshot.AgentSignals`)."""

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

COMMON_FIELDS = ("rule", "severity", "value", "threshold", "clear_threshold", "subject")
"""Template fields every rule offers (besides its labels)."""

SOURCE_FIELDS: dict[SourceKind, tuple[str, ...]] = {
    SourceKind.SERIES: ("series", "window"),
    SourceKind.MODEL_STATE: ("model", "state", "since"),
    SourceKind.PROCESS_STATE: ("process", "state", "since", "detail"),
    SourceKind.PROCESS_RESTARTS: ("process", "window"),
    SourceKind.INCIDENT: ("incident", "kind", "cause"),
    SourceKind.DRIFT: ("model", "group", "since"),
    SourceKind.AGENT: ("signal", "detail"),
}
"""Template fields each kind of source offers."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule. Durations are seconds; ``labels`` are added to every alert's labels."""

    name: str
    kind: SourceKind
    severity: Severity = Severity.WARNING
    summary: str = "{rule}: {subject} {value} {op} {threshold}"
    runbook_url: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    series: str = ""
    match: Mapping[str, str] = field(default_factory=dict)
    """Only series whose labels equal these (``{mount = "/"}``)."""
    aggregation: Aggregation = Aggregation.AVG
    window_s: float = 300.0
    ratio_to: str = ""
    limit_series: str = ""
    states: tuple[str, ...] = ()
    incident_kinds: tuple[str, ...] = ()
    signal: str = ""
    op: str = ">="
    threshold: float = 1.0
    clear_threshold: float | None = None
    """Defaults to ``threshold`` (no hysteresis)."""
    for_s: float = 0.0
    clear_for_s: float = 0.0
    enabled: bool = True

    @property
    def clear_at(self) -> float:
        """The threshold a firing alert must stop passing to clear."""
        return self.threshold if self.clear_threshold is None else self.clear_threshold

    def passes(self, value: float, threshold: float) -> bool:
        """Whether ``value`` passes ``threshold`` by this rule's comparison."""
        return COMPARISONS[self.op](value, threshold)

    def template_fields(self) -> set[str]:
        """Every name the rule's summary may use."""
        names = set(COMMON_FIELDS) | {"op"} | set(SOURCE_FIELDS.get(self.kind, ()))
        names |= set(self.labels)
        if self.kind == SourceKind.SERIES:
            names |= set(series_labels(self.series) or ())
        return names


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem with one rule: the field it is in and what was expected."""

    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"alert {self.rule!r}: {self.field}: {self.message}"


def parse_rule_duration(value: object) -> float:
    """A rule duration from config text (``"5m"``) or seconds.

    Raises:
        ValueError: naming what was expected.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_EXPECTED}, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a duration >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        seconds = parse_duration(value)
        if seconds < 0:
            raise ValueError(f"expected a duration >= 0, got {value!r}")
        return seconds
    raise ValueError(f"expected {DURATION_EXPECTED}, got {value!r}")


def validate_rule(rule: Rule) -> list[RuleError]:
    """Every problem with ``rule`` (empty when it is fine), each naming its field."""
    errors: list[RuleError] = []

    def bad(field_name: str, message: str) -> None:
        errors.append(RuleError(rule.name, field_name, message))

    if not rule.name or not rule.name.replace("_", "").replace("-", "").isalnum():
        bad("name", f"expected letters, digits, '_' or '-', got {rule.name!r}")
    try:
        SourceKind(rule.kind)
    except ValueError:
        bad("kind", f"expected one of {', '.join(SourceKind)}, got {rule.kind!r}")
        return errors
    try:
        Severity(rule.severity)
    except ValueError:
        bad("severity", f"expected 'warning' or 'critical', got {rule.severity!r}")
    if rule.op not in COMPARISONS:
        bad("op", f"expected one of {' '.join(COMPARISONS)}, got {rule.op!r}")
    for name, seconds in (("for", rule.for_s), ("clear_for", rule.clear_for_s)):
        if seconds < 0:
            bad(name, f"expected a duration >= 0, got {seconds!r}")
    _check_source(rule, bad)
    if rule.op in COMPARISONS and rule.clear_threshold is not None:
        if rule.op in (">", ">=") and rule.clear_threshold > rule.threshold:
            bad("clear_threshold", f"expected <= threshold ({rule.threshold}) for '{rule.op}'")
        if rule.op in ("<", "<=") and rule.clear_threshold < rule.threshold:
            bad("clear_threshold", f"expected >= threshold ({rule.threshold}) for '{rule.op}'")
    problem = check_template(rule.summary, rule.template_fields())
    if problem:
        bad("summary", problem)
    if rule.runbook_url and not rule.runbook_url.startswith(("http://", "https://")):
        bad("runbook_url", f"expected an http(s):// URL, got {rule.runbook_url!r}")
    for key in rule.labels:
        if not key.isidentifier():
            bad("labels", f"label names are letters, digits and '_', got {key!r}")
    return errors


def _check_source(rule: Rule, bad: Callable[[str, str], None]) -> None:
    kind = SourceKind(rule.kind)
    if kind in (SourceKind.SERIES, SourceKind.PROCESS_RESTARTS) and rule.window_s <= 0:
        bad("window", "expected a duration > 0")
    if kind == SourceKind.SERIES:
        keys = series_labels(rule.series)
        if not rule.series:
            bad("series", "required for kind 'series'")
        elif keys is None:
            bad("series", f"unknown series {rule.series!r} (see the README's 'Series collected')")
        for key in rule.match:
            if keys is not None and key not in keys:
                bad("match", f"series {rule.series!r} has no label {key!r}")
        try:
            agg = Aggregation(rule.aggregation)
        except ValueError:
            bad(
                "aggregation", f"expected one of {', '.join(Aggregation)}, got {rule.aggregation!r}"
            )
            return
        for name in ("ratio_to", "limit_series"):
            other = getattr(rule, name)
            if other and series_labels(other) != keys:
                bad(name, f"unknown series {other!r}, or not labelled as {rule.series!r}")
        if agg == Aggregation.TIME_TO_FULL and not rule.limit_series:
            bad("limit_series", "required for aggregation 'time_to_full'")
    elif kind in (SourceKind.MODEL_STATE, SourceKind.PROCESS_STATE):
        known = [str(s) for s in (ModelState if kind == SourceKind.MODEL_STATE else ProcessState)]
        if not rule.states:
            bad("states", f"required for kind {kind.value!r}: the states that fire")
        for state in rule.states:
            if state not in known:
                bad("states", f"expected states among {', '.join(known)}, got {state!r}")
    elif kind == SourceKind.INCIDENT and not rule.incident_kinds:
        bad("incident_kinds", "required for kind 'incident'")
    elif kind == SourceKind.AGENT and rule.signal not in AGENT_SIGNALS:
        bad("signal", f"expected one of {', '.join(AGENT_SIGNALS)}, got {rule.signal!r}")
