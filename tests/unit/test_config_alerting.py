"""The config's alerting tables: [alerting], [[alert]], [[notify]] (with routes), [[maintenance]].

Every refusal names the file, the line and the field, as for the other tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_config
from agent.config.alerting.builtin import BUILTIN_NAMES
from agent.config.alerting.channels import (
    AlertmanagerSettings,
    AppriseSettings,
    CommandSettings,
    MailSettings,
    PagerDutySettings,
    SlackSettings,
    WebhookSettings,
)
from agent.config.alerting.rules import Aggregation, Severity, SourceKind
from agent.runtime.reloading import read_for_reload

CFG = Path("/etc/vigil/vigil.toml")


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, CFG)
    return info.value


def where(err: ConfigError) -> tuple[str | None, int | None]:
    return err.field, err.line


def rules(text: str) -> dict[str, object]:
    return {r.name: r for r in parse_config(text, CFG).alerting.rules}


def test_no_alerting_tables_means_the_built_ins_and_no_channels() -> None:
    cfg = parse_config("", CFG)
    assert {r.name for r in cfg.alerting.rules} == BUILTIN_NAMES
    assert cfg.alerting.channels == () and cfg.alerting.routes == ()
    assert cfg.alerting.evaluate_interval_s == 1.0


def test_a_custom_rule_field_for_field() -> None:
    text = """
[alerting]
evaluate_interval = "2s"

[[alert]]
name = "gpu_hot"
kind = "series"
series = "gpu.temperature_c"
match = { gpu = "0" }
aggregation = "p95"
window = "5m"
op = ">"
threshold = 85
clear_threshold = 80
for = "2m"
clear_for = "30s"
severity = "critical"
summary = "GPU {gpu} at {value:.0f}C"
runbook_url = "https://runbooks.example/gpu"
labels = { team = "ml" }
"""
    cfg = parse_config(text, CFG)
    assert cfg.alerting.evaluate_interval_s == 2.0
    rule = {r.name: r for r in cfg.alerting.rules}["gpu_hot"]
    assert rule.kind == SourceKind.SERIES and rule.aggregation == Aggregation.P95
    assert (rule.window_s, rule.for_s, rule.clear_for_s) == (300.0, 120.0, 30.0)
    assert (rule.threshold, rule.clear_threshold, rule.op) == (85.0, 80.0, ">")
    assert rule.severity == Severity.CRITICAL and dict(rule.labels) == {"team": "ml"}
    assert dict(rule.match) == {"gpu": "0"}


def test_built_ins_are_changed_or_disabled_by_name() -> None:
    got = rules(
        """
[[alert]]
name = "model_degraded"
for = "10m"
severity = "critical"

[[alert]]
name = "watchdog_late"
enabled = false
"""
    )
    assert "watchdog_late" not in got
    degraded = got["model_degraded"]
    assert degraded.for_s == 600.0 and degraded.severity == "critical"  # type: ignore[attr-defined]
    assert degraded.states == ("degraded",)  # type: ignore[attr-defined]  # the rest kept


def test_a_rule_with_a_built_ins_name_and_a_kind_replaces_it() -> None:
    got = rules(
        '[[alert]]\nname = "model_down"\nkind = "model_state"\nstates = ["down", "degraded"]\n'
    )
    assert got["model_down"].states == ("down", "degraded")  # type: ignore[attr-defined]
    assert got["model_down"].severity == "warning"  # type: ignore[attr-defined]  # not merged


@pytest.mark.parametrize(
    ("text", "field", "line", "expected"),
    [
        (
            '[[alert]]\nname = "x"\nkind = "series"\nseries = "host.mem.percnt"\n',
            "alert[0].series",
            4,
            "unknown series 'host.mem.percnt'",
        ),
        (
            '[[alert]]\nname = "x"\nkind = "drift"\nfor = "5 minutes"\n',
            "alert[0].for",
            4,
            "expected a duration such as",
        ),
        (
            '[[alert]]\nname = "x"\nkind = "drift"\nsummary = "{model} {mount}"\n',
            "alert[0].summary",
            4,
            "unknown field {mount}",
        ),
        (
            '[[alert]]\nname = "x"\nkind = "drift"\nsummary = "{model.__class__}"\n',
            "alert[0].summary",
            4,
            "not a bare name",
        ),
        (
            '[[alert]]\nname = "x"\nkind = "drift"\n\nseverity = "page-me"\n',
            "alert[0].severity",
            5,
            "expected one of 'warning', 'critical', got 'page-me'",
        ),
        (
            '[[alert]]\nname = "x"\nkind = "model_state"\nstates = ["sideways"]\n',
            "alert[0].states",
            4,
            "got 'sideways'",
        ),
        (
            '[[alert]]\nname = "model_down"\nfor = "1m"\nsumary = "x"\n',
            "alert[0].sumary",
            4,
            "unknown key",
        ),
        (
            '[[alert]]\nname = "model_down"\nsummary = "{mount}"\n',
            "alert[0].summary",
            3,
            "unknown field {mount}",
        ),
        (
            '[[alert]]\nname = "no_such_rule"\nfor = "1m"\n',
            "alert[0].kind",
            1,
            "or the name of a built-in rule",
        ),
        (
            '[[alert]]\nname = "a"\nkind = "drift"\n[[alert]]\nname = "a"\nkind = "drift"\n',
            "alert[1].name",
            5,
            "duplicate name 'a'",
        ),
        (
            '[[alert]]\nname = "a"\nkind = "series"\nseries = "host.mem.percent"\nop = ">"\n'
            "threshold = 90\nclear_threshold = 95\n",
            "alert[0].clear_threshold",
            7,
            "expected <= threshold",
        ),
    ],
)
def test_rule_errors_name_file_line_and_field(
    text: str, field: str, line: int, expected: str
) -> None:
    err = refused(text)
    assert where(err) == (field, line), str(err)
    assert expected in err.reason
    assert str(err).startswith(f"{CFG}:{line}: {field}: ")


# --- channels ---------------------------------------------------------------------------------


def test_every_channel_kind_with_its_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cret-hmac")
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/T/B/XYZ\n")
    key = tmp_path / "pd.key"
    key.write_text("R0UTINGKEY\n")
    (tmp_path / "smtp.pw").write_text("hunter22")
    monkeypatch.setenv("APPRISE", "tgram://tok/chat  mailto://u:p@x")
    text = f"""
[[notify]]
name = "am"
type = "alertmanager"
url = "http://127.0.0.1:9093"

[[notify]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:8080/hook"
secret_env = "HOOK_SECRET"
timeout = "3s"
rate = 2.5
burst = 2

[[notify]]
name = "slack"
type = "slack"
webhook_url_env = "SLACK_URL"

[[notify]]
name = "pd"
type = "pagerduty"
routing_key_file = "{key}"

[[notify]]
name = "mail"
type = "email"
host = "smtp.example"
username = "vigil"
password_file = "{tmp_path / "smtp.pw"}"
sender = "vigil@example"
recipients = ["oncall@example"]

[[notify]]
name = "run"
type = "exec"
argv = ["/usr/local/bin/page", "--now"]

[[notify]]
name = "more"
type = "apprise"
urls_env = "APPRISE"
"""
    cfg = parse_config(text, CFG)
    chans = {c.name: c for c in cfg.alerting.channels}
    assert isinstance(chans["am"], AlertmanagerSettings)
    hook = chans["hook"]
    assert isinstance(hook, WebhookSettings) and hook.secret == "s3cret-hmac"
    assert (hook.timeout_s, hook.rate_per_s, hook.burst) == (3.0, 2.5, 2)
    slack = chans["slack"]
    assert isinstance(slack, SlackSettings)
    assert slack.webhook_url == "https://hooks.slack.com/services/T/B/XYZ"
    pd = chans["pd"]
    assert isinstance(pd, PagerDutySettings) and pd.routing_key == "R0UTINGKEY"
    mail = chans["mail"]
    assert isinstance(mail, MailSettings) and mail.password == "hunter22"
    assert isinstance(chans["run"], CommandSettings)
    more = chans["more"]
    assert isinstance(more, AppriseSettings) and len(more.urls) == 2
    shown = repr(cfg)
    for secret in ("s3cret-hmac", "XYZ", "R0UTINGKEY", "hunter22", "tgram://tok"):
        assert secret not in shown
    # One route per channel by default, taking every alert.
    assert [r.channel for r in cfg.alerting.routes] == list(chans)
    assert all(r.severities == () and r.matchers == () for r in cfg.alerting.routes)


def test_routes_with_severities_matchers_and_timers() -> None:
    text = """
[[notify]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:8080/"

[[notify.route]]
severities = ["critical"]
match = ["model=~llama.*", 'team!="infra"']
group_by = ["alertname", "process"]
group_wait = "0s"
group_interval = "1m"
repeat_interval = "2h"
send_resolved = false

[[notify.route]]
name = "warnings"
severities = ["warning"]
"""
    routes = parse_config(text, CFG).alerting.routes
    first, second = routes
    assert first.key == "hook" and second.key == "warnings"
    assert first.severities == ("critical",)
    assert [str(m) for m in first.matchers] == ["model=~llama.*", "team!=infra"]
    assert first.group_by == ("alertname", "process")
    assert (first.group_wait_s, first.group_interval_s, first.repeat_interval_s) == (
        0.0,
        60.0,
        7200.0,
    )
    assert first.send_resolved is False
    assert second.repeat_interval_s == 4 * 3600.0


def test_alertmanager_routes_repeat_within_its_ttl() -> None:
    base = '[[notify]]\nname = "am"\ntype = "alertmanager"\nurl = "http://127.0.0.1:9093"\n'
    (route,) = parse_config(base, CFG).alerting.routes
    assert route.repeat_interval_s == 1800.0  # half of the 1h endsAt it sends
    err = refused(base + '\n[[notify.route]]\nrepeat_interval = "2h"\n')
    assert where(err) == ("notify[0].route[0].repeat_interval", 7)
    assert "firing_ttl" in err.reason


@pytest.mark.parametrize(
    ("text", "field", "line", "expected"),
    [
        (
            '[[notify]]\nname = "x"\ntype = "carrier-pigeon"\n',
            "notify[0].type",
            3,
            "unknown channel type 'carrier-pigeon'; expected one of: alertmanager, webhook",
        ),
        ('[[notify]]\nname = "x"\n', "notify[0].type", 1, "missing required field"),
        (
            '[[notify]]\nname = "x"\ntype = "slack"\nwebhook_url_env = "VIGIL_TEST_UNSET_VAR"\n',
            "notify[0].webhook_url_env",
            4,
            "VIGIL_TEST_UNSET_VAR is unset or empty",
        ),
        (
            '[[notify]]\nname = "x"\ntype = "pagerduty"\n',
            "notify[0].routing_key_env",
            1,
            "missing the PagerDuty routing key",
        ),
        (
            '[[notify]]\nname = "x"\ntype = "pagerduty"\nrouting_key_file = "/nonexistent/k"\n',
            "notify[0].routing_key_file",
            4,
            "cannot read /nonexistent/k",
        ),
        (
            '[[notify]]\nname = "x"\ntype = "webhook"\nurl = "http://h/"\nrouting_key_env = "K"\n',
            "notify[0].routing_key_env",
            5,
            "unknown key",
        ),
        (
            '[[notify]]\nname = "x"\ntype = "webhook"\nurl = "ftp://h/"\n',
            "notify[0].url",
            4,
            "expected an http:// or https:// URL",
        ),
        (
            '[[notify]]\nname = "x"\ntype = "exec"\nargv = []\n',
            "notify[0].argv",
            4,
            "non-empty",
        ),
        (
            '[[notify]]\nname = "x"\ntype = "webhook"\nurl = "http://h/"\n'
            '[[notify.route]]\nmatch = ["model~=x"]\n',
            "notify[0].route[0].match",
            6,
            "expected LABEL=VALUE",
        ),
        (
            '[[notify]]\nname = "x"\ntype = "webhook"\nurl = "http://h/"\n'
            '[[notify.route]]\nseverities = ["info"]\n',
            "notify[0].route[0].severities",
            6,
            "expected 'warning' or 'critical', got 'info'",
        ),
        (
            '[[notify]]\nname = "x"\ntype = "exec"\nargv = ["a"]\n'
            '[[notify]]\nname = "x"\ntype = "exec"\nargv = ["b"]\n',
            "notify[1].name",
            6,
            "duplicate name 'x'",
        ),
    ],
)
def test_channel_errors_name_file_line_and_field(
    text: str, field: str, line: int, expected: str
) -> None:
    err = refused(text)
    assert where(err) == (field, line), str(err)
    assert expected in err.reason, err.reason


def test_a_secret_url_is_never_in_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_URL", "ftp://hooks.example/T0KEN")
    err = refused('[[notify]]\nname = "x"\ntype = "webhook"\nurl_env = "HOOK_URL"\n')
    assert err.field == "notify[0].url_env" and "T0KEN" not in str(err)


# --- maintenance ------------------------------------------------------------------------------


def test_maintenance_windows_one_off_and_recurring() -> None:
    text = """
[[maintenance]]
name = "upgrade"
start = 2024-06-01T02:00:00Z
end = 2024-06-01T03:30:00Z
subjects = ["model:llama*"]
notify = true
comment = "driver upgrade"

[[maintenance]]
name = "weekly"
schedule = "0 2 * * sun"
duration = "2h"
timezone = "Europe/Berlin"

[[maintenance]]
name = "local"
start = 2024-06-01T02:00:00
duration = "30m"
timezone = "Europe/Berlin"
"""
    one, weekly, local = parse_config(text, CFG).alerting.maintenance
    assert one.starts_ms == 1_717_207_200_000 and one.duration_s == 5400.0
    assert one.subjects == ("model:llama*",) and one.notify and one.comment == "driver upgrade"
    assert weekly.schedule == "0 2 * * sun" and weekly.duration_s == 7200.0
    assert weekly.timezone == "Europe/Berlin" and weekly.starts_ms is None
    assert local.starts_ms == 1_717_207_200_000 - 2 * 3600_000  # 02:00 CEST is 00:00 UTC


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ('schedule = "0 25 * * *"\nduration = "1h"', "schedule", "hour"),
        ('schedule = "0 2 * * *"', "duration", "a schedule needs a duration"),
        ('schedule = "0 2 * * *"\nduration = "1h"\ntimezone = "Mars/Olympus"', "timezone", "Mars"),
        ("start = 2024-06-01T02:00:00Z\nend = 2024-06-01T01:00:00Z", "end", "after start"),
        ("start = 2024-06-01T02:00:00Z", "end", "an end or a duration"),
        ('duration = "1h"', "schedule", "expected a schedule"),
        (
            'schedule = "0 2 * * *"\nduration = "1h"\nstart = 2024-06-01T02:00:00Z',
            "start",
            "not both",
        ),
        ('schedule = "0 2 * * *"\nduration = "one hour"', "duration", "expected a duration"),
    ],
)
def test_maintenance_errors_name_the_field(body: str, field: str, expected: str) -> None:
    err = refused(f'[[maintenance]]\nname = "w"\n{body}\n')
    assert err.field == f"maintenance[0].{field}", str(err)
    assert err.line is not None
    assert expected in err.reason


# --- reload -----------------------------------------------------------------------------------


def test_a_bad_alerting_table_refuses_the_reload(tmp_path: Path) -> None:
    path = tmp_path / "vigil.toml"
    path.write_text('[[alert]]\nname = "x"\nkind = "drift"\n')
    assert "x" in {r.name for r in load_config(path).alerting.rules}
    path.write_text('[[alert]]\nname = "x"\nkind = "series"\nseries = "nope"\n')
    with pytest.raises(ConfigError) as info:
        read_for_reload(path)
    assert (info.value.field, info.value.line) == ("alert[0].series", 4)
