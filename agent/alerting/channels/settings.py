"""Each channel kind's settings, as the channels read them: plain data that lives in
:mod:`agent.config.alerting.channels`, where the config builds it from ``[[notify]]`` tables."""

from agent.config.alerting.channels import (
    PAGERDUTY_URL,
    SECURITIES,
    AlertmanagerSettings,
    AppriseSettings,
    ChannelSettings,
    CommandSettings,
    MailSettings,
    PagerDutySettings,
    SlackSettings,
    WebhookSettings,
)

__all__ = [
    "PAGERDUTY_URL",
    "SECURITIES",
    "AlertmanagerSettings",
    "AppriseSettings",
    "ChannelSettings",
    "CommandSettings",
    "MailSettings",
    "PagerDutySettings",
    "SlackSettings",
    "WebhookSettings",
]
