"""The file's shape for alerting: ``[alerting]``, ``[[alert]]``, ``[[notify]]`` (with
``[[notify.route]]``) and ``[[maintenance]]``, one msgspec Struct per table.

``[[alert]]`` fields are all optional but ``name``: a table naming a built-in rule without a
``kind`` changes only the fields it gives (``enabled = false``, ``for = "10m"``); with a
``kind`` it is a whole rule (replacing a built-in of that name). ``[[notify]]`` is decoded
twice: its ``type`` first, then the whole table against that kind's Struct, so a key of another
kind is refused as unknown. Secrets are never written in the file: ``<field>_env`` names an
environment variable, ``<field>_file`` a file, as a model's ``api_key_env``/``api_key_file``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from agent.config.alerting.channels import PAGERDUTY_URL
from agent.config.schema import Label, Name, Strings, _Table, count
from storage.tomlschema import Duration, DurationOrZero, number

RULE_NAME = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        extra={"expected": "a rule name", "bound": "1-64 letters, digits, '_' or '-'"},
    ),
]
Kind = Literal[
    "series",
    "model_state",
    "process_state",
    "process_restarts",
    "incident",
    "drift",
    "agent",
]
Aggregation = Literal[
    "avg", "max", "min", "last", "p50", "p95", "p99", "rate", "absent", "time_to_full"
]
Op = Literal[">", ">=", "<", "<=", "==", "!="]
Number = Annotated[float, number()]


class AlertingTable(_Table, frozen=True):
    """``[alerting]``: the engine's knobs."""

    evaluate_interval: Duration = 1.0
    flap_window: Duration = 600.0
    flap_transitions: Annotated[int, count(2)] = 4


class AlertTable(_Table, frozen=True):
    """``[[alert]]``: a rule, or changes to a built-in one (see the module docstring)."""

    name: RULE_NAME
    kind: Kind | None = None
    enabled: bool | None = None
    severity: Literal["warning", "critical"] | None = None
    summary: str | None = None
    runbook_url: str | None = None
    labels: dict[str, str] | None = None
    series: str | None = None
    match: dict[str, str] | None = None
    aggregation: Aggregation | None = None
    window: Duration | None = None
    ratio_to: str | None = None
    limit_series: str | None = None
    states: tuple[str, ...] | None = None
    incident_kinds: tuple[str, ...] | None = None
    signal: str | None = None
    op: Op | None = None
    threshold: Number | None = None
    clear_threshold: Number | None = None
    for_: DurationOrZero | None = msgspec.field(default=None, name="for")
    clear_for: DurationOrZero | None = None


class RouteTable(_Table, frozen=True):
    """``[[notify.route]]``: which alerts go to the channel, grouped and timed how."""

    name: Label = ""
    severities: tuple[str, ...] = ()
    """Empty: every severity; else among ``warning`` and ``critical`` (checked when built)."""
    match: tuple[str, ...] = ()
    """Label matchers (``model=~llama.*``), all of which must pass."""
    group_by: tuple[str, ...] = ("alertname",)
    group_wait: DurationOrZero = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration | None = None
    """Default 4h; for Alertmanager, half its ``firing_ttl`` (it must hear again in time)."""
    send_resolved: bool = True


class NotifyTable(_Table, frozen=True):
    """What every ``[[notify]]`` has; each kind's Struct below adds its own keys."""

    name: Name
    type: str
    timeout: Duration = 10.0
    rate: Annotated[float, number(gt=0.0)] = 1.0
    """Sends per second, at most (a token bucket of ``burst``)."""
    burst: Annotated[int, count(1)] = 5
    route: tuple[dict[str, Any], ...] = ()
    """Each a :class:`RouteTable`, decoded one by one so errors name ``route[N]``; none: one
    route taking every alert."""


class AlertmanagerTable(NotifyTable, frozen=True, kw_only=True):
    url: str
    firing_ttl: Duration = 3600.0
    generator_url: str = ""
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None


class WebhookTable(NotifyTable, frozen=True, kw_only=True):
    url: str | None = None
    url_env: str | None = None
    url_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None


class SlackTable(NotifyTable, frozen=True, kw_only=True):
    webhook_url_env: str | None = None
    webhook_url_file: str | None = None


class PagerDutyTable(NotifyTable, frozen=True, kw_only=True):
    routing_key_env: str | None = None
    routing_key_file: str | None = None
    url: str = PAGERDUTY_URL
    source: str = ""
    client_url: str = ""


class EmailTable(NotifyTable, frozen=True, kw_only=True):
    host: str
    port: Annotated[int, Meta(ge=1, le=65535, extra={"expected": "a port number 1-65535"})] = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password_env: str | None = None
    password_file: str | None = None
    sender: str
    recipients: Strings
    ca_file: str | None = None


class ExecTable(NotifyTable, frozen=True, kw_only=True):
    argv: Strings


class AppriseTable(NotifyTable, frozen=True, kw_only=True):
    urls_env: str | None = None
    urls_file: str | None = None


NOTIFY_TABLES: dict[str, type[NotifyTable]] = {
    "alertmanager": AlertmanagerTable,
    "webhook": WebhookTable,
    "slack": SlackTable,
    "pagerduty": PagerDutyTable,
    "email": EmailTable,
    "exec": ExecTable,
    "apprise": AppriseTable,
}
"""``type`` -> its table (the same kinds as ``agent.alerting.channels.registry.KINDS``)."""


class MaintenanceTable(_Table, frozen=True):
    """``[[maintenance]]``: one-off (``start`` and ``end`` or ``duration``) or recurring
    (``schedule``, a cron expression, with ``duration`` and ``timezone``)."""

    name: Name
    schedule: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    duration: Duration | None = None
    timezone: str = "UTC"
    subjects: tuple[str, ...] = ()
    notify: bool = False
    comment: str = ""
