"""Alert rules, as this room reads them: the model and its validation live in
:mod:`agent.config.alerting.rules`, below this room, so the config schema can build and check
``[[alert]]`` tables without importing the engine."""

from agent.config.alerting.rules import (
    AGENT_SIGNALS,
    Aggregation,
    Rule,
    RuleError,
    Severity,
    SourceKind,
    parse_rule_duration,
    validate_rule,
)

__all__ = [
    "AGENT_SIGNALS",
    "Aggregation",
    "Rule",
    "RuleError",
    "Severity",
    "SourceKind",
    "parse_rule_duration",
    "validate_rule",
]
