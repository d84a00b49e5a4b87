"""The built-in rules: on by default, each overridable or disable-able by name.

:func:`effective_rules` merges them with the config's own rules: a config rule with a built-in's
name replaces it whole, ``overrides`` change some of a built-in's fields (``{"for_s": 120}``),
and ``enabled = False`` in either turns it off.

``deploy_failed`` pages for a deploy that failed its canary gate (or did not start) and was
rolled back: its incident stays open until an operator resolves it or a later deploy of the
model is promoted (``agent.deploy``). ``process_down`` is one more than the issue's list: a
crashed server is the root of its models' outages, and dependency-aware suppression folds their
alerts into its alert.
``watchdog_late`` reads the agent's own ``watchdog_late_s`` signal: the daemon's heartbeat task
measures how late each of its ticks woke against its schedule (a blocked event loop shows as a
late tick) and reports the largest lateness since the previous evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from agent.config.alerting.rules import (
    Aggregation,
    Rule,
    RuleError,
    Severity,
    SourceKind,
    validate_rule,
)

_S = SourceKind

BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        name="model_down",
        kind=_S.MODEL_STATE,
        states=("down",),
        severity=Severity.CRITICAL,
        summary="model {model} is down (since {since})",
    ),
    Rule(
        name="model_degraded",
        kind=_S.MODEL_STATE,
        states=("degraded",),
        for_s=300.0,
        summary="model {model} has been degraded for 5m (since {since})",
    ),
    Rule(
        name="process_down",
        kind=_S.PROCESS_STATE,
        states=("backoff", "failed", "exited"),
        severity=Severity.CRITICAL,
        summary="process {process} is {state}: {detail}",
    ),
    Rule(
        name="process_quarantined",
        kind=_S.PROCESS_STATE,
        states=("quarantined",),
        severity=Severity.CRITICAL,
        summary="process {process} is quarantined after a crash loop: {detail}",
    ),
    Rule(
        name="process_restart_loop",
        kind=_S.PROCESS_RESTARTS,
        window_s=600.0,
        threshold=3.0,
        summary="process {process} restarted {value:.0f} times in {window}",
    ),
    Rule(
        name="storage_failing",
        kind=_S.AGENT,
        signal="storage_failing",
        severity=Severity.CRITICAL,
        for_s=60.0,
        summary="storage is failing: {detail}",
    ),
    Rule(
        name="disk_filling",
        kind=_S.SERIES,
        series="host.disk.used_bytes",
        aggregation=Aggregation.TIME_TO_FULL,
        limit_series="host.disk.total_bytes",
        window_s=3600.0,
        op="<",
        threshold=6 * 3600.0,
        clear_threshold=12 * 3600.0,
        for_s=300.0,
        summary="disk {mount} will be full in {value:.0f}s at the current rate",
    ),
    Rule(
        name="memory_pressure",
        kind=_S.SERIES,
        series="host.mem.percent",
        aggregation=Aggregation.AVG,
        window_s=300.0,
        op=">",
        threshold=90.0,
        clear_threshold=85.0,
        for_s=300.0,
        summary="host memory {value:.0f}% used (5m average) > {threshold:.0f}%",
    ),
    Rule(
        name="gpu_memory_near_full",
        kind=_S.SERIES,
        series="gpu.mem.used_bytes",
        ratio_to="gpu.mem.total_bytes",
        aggregation=Aggregation.MIN,
        window_s=300.0,
        op=">",
        threshold=95.0,
        clear_threshold=90.0,
        summary="GPU {gpu} memory {value:.0f}% full for 5m",
    ),
    Rule(
        name="drift_detected",
        kind=_S.DRIFT,
        summary="model {model}: {group} drift since {since}",
    ),
    Rule(
        name="deploy_failed",
        kind=_S.INCIDENT,
        incident_kinds=("deploy_failed",),
        severity=Severity.CRITICAL,
        summary="{subject}: {cause}",
    ),
    Rule(
        name="watchdog_late",
        kind=_S.AGENT,
        signal="watchdog_late_s",
        op=">",
        threshold=5.0,
        clear_threshold=1.0,
        severity=Severity.CRITICAL,
        summary="the agent's own loop ran {value:.1f}s late",
    ),
)
"""Every built-in rule, by name."""

BUILTIN_NAMES = frozenset(r.name for r in BUILTIN_RULES)


def effective_rules(
    custom: Iterable[Rule] = (),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[Rule], list[RuleError]]:
    """The rules in force: the built-ins (overridden, replaced or disabled) then the config's.

    Args:
        custom: the config's rules; one named like a built-in replaces it.
        overrides: built-in name -> fields to change (``Rule`` field names).

    Returns:
        The enabled rules, and every error (an unknown built-in, an unknown field, a rule that
        does not validate, two rules of one name).
    """
    errors: list[RuleError] = []
    by_name: dict[str, Rule] = {r.name: r for r in BUILTIN_RULES}
    fields = {f.name for f in dataclasses.fields(Rule)} - {"name"}
    for name, changes in (overrides or {}).items():
        if name not in by_name:
            known = ", ".join(sorted(BUILTIN_NAMES))
            errors.append(RuleError(name, "name", f"no built-in rule {name!r} (known: {known})"))
            continue
        unknown = sorted(set(changes) - fields)
        if unknown:
            errors.append(RuleError(name, unknown[0], "not a field of an alert rule"))
            continue
        by_name[name] = dataclasses.replace(by_name[name], **changes)
    seen: set[str] = set()
    for rule in custom:
        if rule.name in seen:
            errors.append(RuleError(rule.name, "name", "two rules share this name"))
        seen.add(rule.name)
        by_name[rule.name] = rule
    rules = [r for r in by_name.values() if r.enabled]
    for rule in rules:
        errors.extend(validate_rule(rule))
    return rules, errors
