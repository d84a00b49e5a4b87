"""Each channel kind's settings: frozen dataclasses, plain data with no I/O and no imports.

Kept apart from the channels themselves (which load the HTTP client, smtplib, apprise) so the
config schema can embed or mirror them cheaply. Secrets (URLs with tokens, routing keys, passwords)
come in resolved, as the config resolves model API keys, and are ``repr=False``: a settings
object printed in a log line or an error shows no secret. Never serve these objects as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelSettings:
    """What every channel has. Each kind adds its own fields; secret ones are ``repr=False``.

    ``rate_per_s`` and ``burst`` make the channel's token bucket: at most ``burst`` sends at
    once, refilled at ``rate_per_s``. ``timeout_s`` bounds one send.
    """

    name: str
    timeout_s: float = 10.0
    rate_per_s: float = 1.0
    burst: int = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertmanagerSettings(ChannelSettings):
    """``url`` is Alertmanager's base URL (``http://alertmanager:9093``)."""

    url: str
    firing_ttl_s: float = 3600.0
    generator_url: str = ""
    bearer_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings(ChannelSettings):
    """``url`` may hold a token in its path, so it is as secret as ``secret``."""

    url: str = field(repr=False)
    secret: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackSettings(ChannelSettings):
    """``webhook_url`` is the secret ``https://hooks.slack.com/services/...`` URL."""

    webhook_url: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PagerDutySettings(ChannelSettings):
    """``source`` names this host in PagerDuty (defaults to the agent's host name)."""

    routing_key: str = field(repr=False)
    url: str = PAGERDUTY_URL
    source: str = ""
    client_url: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MailSettings(ChannelSettings):
    """SMTP server, sender and recipients; ``ca_file`` trusts a private CA."""

    host: str
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str
    recipients: tuple[str, ...]
    ca_file: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSettings(ChannelSettings):
    """``argv[0]`` is the program; it is not run through a shell."""

    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AppriseSettings(ChannelSettings):
    """One or more Apprise URLs (``slack://...``, ``tgram://...``)."""

    urls: tuple[str, ...] = field(repr=False)


SECURITIES = ("starttls", "tls", "none")
"""What ``MailSettings.security`` may be."""
