"""From decoded alerting tables to the records the agent runs on, with every check that spans
fields: rules validated against the series catalogue and their templates, built-ins overridden
by name, secrets read, routes' matchers parsed, maintenance windows' schedules and zones.

Each problem is an :class:`~storage.tomlschema.Invalid` naming its table and field
(``alert[2].series``, ``notify[0].route[1].match``), which the loader turns into file:line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from agent.config.alerting import channels as ch
from agent.config.alerting.builtin import BUILTIN_NAMES, BUILTIN_RULES, effective_rules
from agent.config.alerting.cron import zone
from agent.config.alerting.routes import Matcher, Route
from agent.config.alerting.rules import Rule, RuleError, Severity, SourceKind
from agent.config.alerting.tables import (
    NOTIFY_TABLES,
    AlertingTable,
    AlertmanagerTable,
    AlertTable,
    AppriseTable,
    EmailTable,
    ExecTable,
    MaintenanceTable,
    NotifyTable,
    PagerDutyTable,
    RouteTable,
    SlackTable,
    WebhookTable,
)
from agent.config.alerting.windows import MaintenanceWindow, validate_window
from agent.config.secrets import read_secret
from storage.tomlschema import Invalid, Part, decode

DEFAULT_REPEAT_S = 4 * 3600.0

_RULE_KEYS = {"for_": "for_s", "clear_for": "clear_for_s", "window": "window_s"}
"""Table field -> Rule field, where they differ."""


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    """Alerting as configured: the rules in force (built-ins merged), channels, routes, windows.

    ``rules`` holds the enabled rules only. ``channels`` hold their secrets, read at load
    (``repr=False``): never print, store or serve them as they are.
    """

    evaluate_interval_s: float = 1.0
    flap_window_s: float = 600.0
    flap_transitions: int = 4
    rules: tuple[Rule, ...] = BUILTIN_RULES
    channels: tuple[ch.ChannelSettings, ...] = ()
    routes: tuple[Route, ...] = ()
    maintenance: tuple[MaintenanceWindow, ...] = ()


def build_alerting(
    knobs: Mapping[str, Any],
    alerts: list[dict[str, Any]],
    notify: list[dict[str, Any]],
    maintenance: list[dict[str, Any]],
) -> AlertingConfig:
    """The alerting config from the raw ``[alerting]``, ``[[alert]]``, ``[[notify]]`` and
    ``[[maintenance]]`` tables.

    Raises:
        Invalid: the first problem, naming its field.
    """
    t = decode(dict(knobs), AlertingTable, ("alerting",))
    rules = _rules(alerts)
    channels: list[ch.ChannelSettings] = []
    routes: list[Route] = []
    for i, raw in enumerate(notify):
        settings, channel_routes = _channel(raw, i)
        channels.append(settings)
        routes.extend(channel_routes)
    _unique([c.name for c in channels], "notify")
    windows = tuple(_window(raw, i) for i, raw in enumerate(maintenance))
    _unique([w.name for w in windows], "maintenance")
    return AlertingConfig(
        evaluate_interval_s=t.evaluate_interval,
        flap_window_s=t.flap_window,
        flap_transitions=t.flap_transitions,
        rules=tuple(rules),
        channels=tuple(channels),
        routes=tuple(routes),
        maintenance=windows,
    )


def _unique(names: list[str], table: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise Invalid(
                (table, i, "name"),
                f"duplicate name {name!r} (also {table}[{seen[name]}]); "
                f"expected every {table} to have its own name",
            )
        seen[name] = i


# --- rules ------------------------------------------------------------------------------------


def _rules(alerts: list[dict[str, Any]]) -> list[Rule]:
    custom: list[Rule] = []
    overrides: dict[str, dict[str, Any]] = {}
    index: dict[str, int] = {}
    for i, raw in enumerate(alerts):
        t = decode(raw, AlertTable, ("alert", i))
        if t.name in index:
            raise Invalid(
                ("alert", i, "name"),
                f"duplicate name {t.name!r} (also alert[{index[t.name]}]); "
                "expected every rule to have its own name",
            )
        index[t.name] = i
        given = _given(t)
        if t.kind is None:
            if t.name not in BUILTIN_NAMES:
                raise Invalid(
                    ("alert", i, "kind"),
                    f"missing required field; expected the source a rule watches (one of "
                    f"{', '.join(SourceKind)}), or the name of a built-in rule to change "
                    f"({', '.join(sorted(BUILTIN_NAMES))}), got {t.name!r}",
                )
            overrides[t.name] = given
        else:
            custom.append(Rule(name=t.name, kind=SourceKind(t.kind), **given))
    rules, errors = effective_rules(custom, overrides)
    if errors:
        raise _rule_error(errors[0], index)
    return rules


def _given(t: AlertTable) -> dict[str, Any]:
    """The Rule fields an ``[[alert]]`` table sets (what it leaves out keeps its default)."""
    out: dict[str, Any] = {}
    for f in AlertTable.__struct_fields__:
        if f in ("name", "kind"):
            continue
        value = getattr(t, f)
        if value is None:
            continue
        out[_RULE_KEYS.get(f, f)] = dict(value) if isinstance(value, dict) else value
    return out


def _rule_error(error: RuleError, index: Mapping[str, int]) -> Invalid:
    i = index.get(error.rule)
    where: tuple[Part, ...] = ("alert", i, error.field) if i is not None else ("alert",)
    return Invalid(where, error.message)


# --- channels ---------------------------------------------------------------------------------


def _channel(raw: dict[str, Any], i: int) -> tuple[ch.ChannelSettings, list[Route]]:
    at: tuple[Part, ...] = ("notify", i)
    kind = raw.get("type")
    # Not a string (a list, a table) is an unknown type too, not a TypeError from the lookup.
    if not isinstance(kind, str) or kind not in NOTIFY_TABLES:
        if "type" not in raw:
            reason = "missing required field; expected the channel's type: "
        else:
            reason = f"unknown channel type {kind!r}; expected one of: "
        raise Invalid((*at, "type"), reason + ", ".join(NOTIFY_TABLES))
    t = decode(raw, NOTIFY_TABLES[str(kind)], at)
    common: dict[str, Any] = {
        "name": t.name,
        "timeout_s": t.timeout,
        "rate_per_s": t.rate,
        "burst": t.burst,
    }
    settings = _settings(t, at, common)
    default_repeat = DEFAULT_REPEAT_S
    if isinstance(settings, ch.AlertmanagerSettings):
        default_repeat = min(DEFAULT_REPEAT_S, settings.firing_ttl_s / 2)
    routes = [
        _route(r, (*at, "route", j), t.name, default_repeat, settings)
        for j, r in enumerate(t.route or ({},))
    ]
    return settings, routes


def _settings(t: NotifyTable, at: tuple[Part, ...], common: dict[str, Any]) -> ch.ChannelSettings:
    def secret(field: str, what: str, *, required: bool = True) -> str | None:
        env = getattr(t, f"{field}_env")
        file = getattr(t, f"{field}_file")
        return read_secret(env, file, at, field, what, required=required)

    if isinstance(t, AlertmanagerTable):
        _http_url(t.url, (*at, "url"))
        token = secret("bearer_token", "the bearer token", required=False)
        return ch.AlertmanagerSettings(
            **common,
            url=t.url,
            firing_ttl_s=t.firing_ttl,
            generator_url=t.generator_url,
            bearer_token=token,
        )
    if isinstance(t, WebhookTable):
        url = t.url
        if url is not None and (t.url_env or t.url_file):
            raise Invalid((*at, "url"), "expected url, url_env or url_file, only one")
        url = url or secret("url", "the webhook URL")
        assert url is not None
        _http_url(url, (*at, "url" if t.url else "url_env" if t.url_env else "url_file"))
        return ch.WebhookSettings(
            **common, url=url, secret=secret("secret", "the signing secret", required=False) or ""
        )
    if isinstance(t, SlackTable):
        url = secret("webhook_url", "the Slack webhook URL")
        assert url is not None
        return ch.SlackSettings(**common, webhook_url=url)
    if isinstance(t, PagerDutyTable):
        key = secret("routing_key", "the PagerDuty routing key")
        assert key is not None
        _http_url(t.url, (*at, "url"))
        return ch.PagerDutySettings(
            **common, routing_key=key, url=t.url, source=t.source, client_url=t.client_url
        )
    if isinstance(t, EmailTable):
        password = secret("password", "the SMTP password", required=False) or ""
        if password and not t.username:
            raise Invalid((*at, "username"), "a password is given: expected the user name too")
        return ch.MailSettings(
            **common,
            host=t.host,
            port=t.port,
            security=t.security,
            username=t.username,
            password=password,
            sender=t.sender,
            recipients=t.recipients,
            ca_file=t.ca_file,
        )
    if isinstance(t, ExecTable):
        return ch.CommandSettings(**common, argv=t.argv)
    assert isinstance(t, AppriseTable)
    urls = secret("urls", "the Apprise URLs (whitespace-separated)")
    assert urls is not None
    return ch.AppriseSettings(**common, urls=tuple(urls.split()))


def _http_url(url: str, where: tuple[Part, ...]) -> None:
    if not url.startswith(("http://", "https://")):
        # Never the URL itself: it may hold a token (a secret read from the environment).
        raise Invalid(where, "expected an http:// or https:// URL")


def _route(
    raw: dict[str, Any],
    at: tuple[Part, ...],
    channel: str,
    default_repeat_s: float,
    settings: ch.ChannelSettings,
) -> Route:
    t = decode(raw, RouteTable, at)
    for sev in t.severities:
        if sev not in tuple(Severity):
            raise Invalid((*at, "severities"), f"expected 'warning' or 'critical', got {sev!r}")
    matchers = []
    for text in t.match:
        try:
            matchers.append(Matcher.parse(text))
        except ValueError as exc:
            raise Invalid((*at, "match"), str(exc)) from None
    repeat = t.repeat_interval if t.repeat_interval is not None else default_repeat_s
    if isinstance(settings, ch.AlertmanagerSettings) and repeat >= settings.firing_ttl_s:
        raise Invalid(
            (*at, "repeat_interval"),
            f"expected less than the channel's firing_ttl ({settings.firing_ttl_s:g}s): "
            "Alertmanager resolves an alert it has not heard of again by then",
        )
    return Route(
        channel=channel,
        severities=t.severities,
        matchers=tuple(matchers),
        group_by=t.group_by,
        group_wait_s=t.group_wait,
        group_interval_s=t.group_interval,
        repeat_interval_s=repeat,
        send_resolved=t.send_resolved,
        name=t.name or (f"{channel}#{at[-1]}" if at[-1] else ""),
    )


# --- maintenance ------------------------------------------------------------------------------


def _window(raw: dict[str, Any], i: int) -> MaintenanceWindow:
    at: tuple[Part, ...] = ("maintenance", i)
    t = decode(raw, MaintenanceTable, at)
    try:
        tz: tzinfo = zone(t.timezone)
    except ValueError as exc:
        raise Invalid((*at, "timezone"), str(exc)) from None
    starts_ms: int | None = None
    duration = t.duration
    if t.schedule is not None:
        if t.start is not None or t.end is not None:
            key = "start" if t.start is not None else "end"
            raise Invalid((*at, key), "expected schedule + duration, or start + end, not both")
        if duration is None:
            raise Invalid((*at, "duration"), "missing required field; a schedule needs a duration")
    else:
        if t.start is None:
            raise Invalid(
                (*at, "schedule"),
                "missing required field; expected a schedule (cron) with a duration, "
                "or a start with an end or a duration",
            )
        starts_ms = _epoch_ms(t.start, tz)
        if t.end is not None:
            if duration is not None:
                raise Invalid((*at, "end"), "expected end or duration, not both")
            duration = (_epoch_ms(t.end, tz) - starts_ms) / 1000
            if duration <= 0:
                raise Invalid((*at, "end"), "expected a time after start")
        elif duration is None:
            raise Invalid((*at, "end"), "missing required field; expected an end or a duration")
    window = MaintenanceWindow(
        name=t.name,
        duration_s=float(duration),
        schedule=t.schedule or "",
        starts_ms=starts_ms,
        timezone=t.timezone,
        subjects=t.subjects,
        notify=t.notify,
        comment=t.comment,
    )
    errors = validate_window(window)
    if errors:
        raise Invalid((*at, errors[0].field), errors[0].message)
    return window


def _epoch_ms(when: datetime, tz: tzinfo) -> int:
    """A TOML date-time as epoch ms; a local one (no offset) is in the window's time zone."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return int(when.timestamp() * 1000)


__all__ = ["AlertingConfig", "build_alerting"]
