"""Alert rules: validation naming the field, templates with bare names only, built-ins."""

from __future__ import annotations

import dataclasses

import pytest

from agent.alerting.builtin import BUILTIN_NAMES, effective_rules
from agent.alerting.rules import Rule, SourceKind, parse_rule_duration, validate_rule
from agent.alerting.silences import Matcher
from agent.config.alerting.cron import Cron, zone
from agent.config.alerting.templates import check_template, render
from agent.config.alerting.windows import MaintenanceWindow, validate_window


def fields(rule: Rule) -> dict[str, str]:
    return {e.field: e.message for e in validate_rule(rule)}


def series_rule(**kw: object) -> Rule:
    base = Rule(name="hot", kind=SourceKind.SERIES, series="host.mem.percent", op=">", threshold=90)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_a_good_rule_has_no_errors() -> None:
    assert validate_rule(series_rule(summary="memory {value:.0f}% > {threshold}")) == []


def test_unknown_series_names_the_field() -> None:
    errors = fields(series_rule(series="host.mem.percnt"))
    assert "unknown series 'host.mem.percnt'" in errors["series"]


def test_bad_severity_names_the_field() -> None:
    errors = fields(series_rule(severity="page-me"))
    assert errors["severity"] == "expected 'warning' or 'critical', got 'page-me'"


def test_malformed_duration_is_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="expected a duration such as"):
        parse_rule_duration("5 minutes")
    assert parse_rule_duration("1h30m") == 5400.0
    assert "for" in fields(series_rule(for_s=-1.0))


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{mount} full", "unknown field {mount}"),
        ("{value.__class__}", "not a bare name"),
        ("{labels[0]}", "not a bare name"),
        ("{}", "positional field"),
        ("{value!r}", "conversions are not allowed"),
        ("{value:{threshold}}", "nested fields"),
        ("{value", "malformed template"),
    ],
)
def test_template_errors_name_the_summary_field(template: str, problem: str) -> None:
    errors = fields(series_rule(summary=template))
    assert problem in errors["summary"]


def test_template_fields_follow_the_source() -> None:
    disk = series_rule(series="host.disk.percent", summary="{mount} at {value}")
    assert validate_rule(disk) == []
    model = Rule(name="m", kind=SourceKind.MODEL_STATE, states=("down",), summary="{model} {state}")
    assert validate_rule(model) == []
    errors = fields(dataclasses.replace(model, summary="{mount}"))
    assert "unknown field {mount}" in errors["summary"]


def test_render_substitutes_names_only_and_never_raises() -> None:
    assert render("{model} {value:.1f}", {"model": "llama", "value": 3.14159}) == "llama 3.1"
    assert render("{model:.1f}", {"model": "llama"}) == "llama"
    assert render("{missing}", {}) == "?"
    assert render("{x.__class__}", {"x": 1}) == "?"  # never attribute access, even unvalidated
    assert check_template("{a} {b}", {"a", "b"}) is None


def test_state_rules_check_their_states_and_hysteresis_direction() -> None:
    bad_state = Rule(name="m", kind=SourceKind.MODEL_STATE, states=("dead",))
    assert "got 'dead'" in fields(bad_state)["states"]
    assert "states" in fields(Rule(name="p", kind=SourceKind.PROCESS_STATE))
    assert "clear_threshold" in fields(series_rule(clear_threshold=95))
    assert "signal" in fields(Rule(name="a", kind=SourceKind.AGENT, signal="nope"))
    assert "limit_series" in fields(series_rule(aggregation="time_to_full"))


def test_builtins_are_on_and_valid() -> None:
    rules, errors = effective_rules()
    assert errors == []
    assert {r.name for r in rules} == BUILTIN_NAMES
    assert {
        "model_down",
        "model_degraded",
        "process_quarantined",
        "process_restart_loop",
        "storage_failing",
        "disk_filling",
        "memory_pressure",
        "gpu_memory_near_full",
        "drift_detected",
        "watchdog_late",
    } <= BUILTIN_NAMES
    degraded = next(r for r in rules if r.name == "model_degraded")
    assert degraded.for_s == 300.0


def test_builtins_are_overridable_and_disableable_by_name() -> None:
    custom = Rule(name="model_down", kind=SourceKind.MODEL_STATE, states=("down",), for_s=60)
    rules, errors = effective_rules(
        [custom], {"model_degraded": {"for_s": 120.0}, "drift_detected": {"enabled": False}}
    )
    assert errors == []
    by_name = {r.name: r for r in rules}
    assert by_name["model_down"].for_s == 60
    assert by_name["model_degraded"].for_s == 120.0
    assert "drift_detected" not in by_name
    _, errors = effective_rules((), {"model_dwn": {"enabled": False}, "model_down": {"fo": 1}})
    assert [(e.rule, e.field) for e in errors] == [("model_dwn", "name"), ("model_down", "fo")]


def test_matchers_parse_like_alertmanager() -> None:
    m = Matcher.parse('model=~"llama.*"')
    assert (m.label, m.op, m.value) == ("model", "=~", "llama.*")
    assert m.matches({"model": "llama-3"}) and not m.matches({"model": "my-llama"})
    assert Matcher.parse("severity!=warning").matches({"severity": "critical"})
    assert Matcher.parse("team!~db.*").matches({})
    with pytest.raises(ValueError, match="bad regex"):
        Matcher.parse("model=~(")


def test_cron_windows_in_a_time_zone() -> None:
    from datetime import datetime

    tz = zone("Europe/Berlin")
    cron = Cron.parse("0 2 * * sun")
    inside = int(datetime(2024, 6, 2, 3, 30, tzinfo=tz).timestamp() * 1000)
    start = cron.latest_start(inside, tz, 2 * 3_600_000)
    assert start == int(datetime(2024, 6, 2, 2, 0, tzinfo=tz).timestamp() * 1000)
    assert cron.latest_start(inside, tz, 3_600_000) is None
    assert Cron.parse("*/15 9-17 * * mon-fri").day_matches(datetime(2024, 6, 3).date())
    with pytest.raises(ValueError, match="hour"):
        Cron.parse("0 25 * * *")
    bad = MaintenanceWindow(name="w", duration_s=0, schedule="0 2 * *", timezone="Mars/Base")
    assert {e.field for e in validate_window(bad)} == {"duration", "schedule", "timezone"}
