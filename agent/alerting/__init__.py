"""Alerting: rules, the alert lifecycle, routing and noise control, silences, maintenance
windows, channels and the durable outbox.

Live state and stored series come in (a snapshot the daemon builds); notification requests go
out to the outbox. This room builds on ``agent.health``, ``agent.config``, ``probes`` and
``storage``; nothing below it imports it.
"""

from agent._rooms import lazy_exports

_EXPORTS = {
    "AlertNotice": "model",
    "NoticeKind": "model",
    "NotificationRequest": "model",
    "Rule": "rules",
    "RuleError": "rules",
    "Severity": "rules",
    "SourceKind": "rules",
    "Aggregation": "rules",
    "validate_rule": "rules",
    "parse_rule_duration": "rules",
    "BUILTIN_RULES": "builtin",
    "effective_rules": "builtin",
    "AlertEngine": "engine",
    "Transition": "engine",
    "Snapshot": "snapshot",
    "AgentSignals": "snapshot",
    "SeriesReader": "snapshot",
    "SqliteSeriesReader": "snapshot",
    "Matcher": "silences",
    "SilenceBook": "silences",
    "MaintenanceWindow": "maintenance",
    "MaintenanceCalendar": "maintenance",
    "validate_window": "maintenance",
    "Route": "router",
    "Notifier": "notifier",
}
__all__ = [
    "BUILTIN_RULES",
    "AgentSignals",
    "Aggregation",
    "AlertEngine",
    "AlertNotice",
    "MaintenanceCalendar",
    "MaintenanceWindow",
    "Matcher",
    "NoticeKind",
    "NotificationRequest",
    "Notifier",
    "Route",
    "Rule",
    "RuleError",
    "SeriesReader",
    "Severity",
    "SilenceBook",
    "Snapshot",
    "SourceKind",
    "SqliteSeriesReader",
    "Transition",
    "effective_rules",
    "parse_rule_duration",
    "validate_rule",
    "validate_window",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
