"""Slack incoming webhooks, formatted with Block Kit.

A header with the headline, one mrkdwn section per alert (summary, labels, runbook link), and a
context line with the notification's id; ``text`` carries the headline too, as the fallback
Slack shows in notifications. Every piece of text is escaped for mrkdwn (``&``, ``<``, ``>``,
control characters), so nothing from a model server becomes a link or an ``@channel``, and cut
to Slack's limits (header 150 characters, section 3000, 50 blocks).
"""

from __future__ import annotations

from typing import Any

from agent.alerting.channels.base import SendResult
from agent.alerting.channels.http import HttpChannel, json_bytes, url_secrets
from agent.alerting.channels.render import (
    alert_line,
    headline,
    label_text,
    mrkdwn,
    truncate,
    truncate_escaped,
)
from agent.alerting.channels.settings import SlackSettings
from agent.alerting.model import NotificationRequest

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
MAX_BLOCKS = 50
MAX_ALERT_SECTIONS = MAX_BLOCKS - 3  # header, the "and N more" section, context


def blocks_payload(request: NotificationRequest) -> dict[str, Any]:
    """The webhook body for one notification."""
    head = headline(request)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(head, HEADER_LIMIT)}}
    ]
    for alert in request.alerts[:MAX_ALERT_SECTIONS]:
        lines = [f"*{mrkdwn(alert_line(alert))}*"]
        if alert.labels:
            lines.append(mrkdwn(label_text(alert)))
        if alert.runbook_url.startswith(("https://", "http://")):
            # A link's URL must not close the <url|text> form early: escape it as text.
            lines.append(f"<{mrkdwn(alert.runbook_url)}|runbook>")
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": truncate_escaped("\n".join(lines), SECTION_LIMIT),
                },
            }
        )
    hidden = len(request.alerts) - MAX_ALERT_SECTIONS
    if hidden > 0:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"… and {hidden} more alerts"}}
        )
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": mrkdwn(f"vigil · {request.notification_id}")}],
        }
    )
    return {"text": truncate_escaped(mrkdwn(head), SECTION_LIMIT), "blocks": blocks}


class SlackChannel(HttpChannel):
    """Posts Block Kit messages to an incoming webhook."""

    kind = "slack"
    settings: SlackSettings

    def secrets(self) -> tuple[str, ...]:
        return url_secrets(self.settings.webhook_url)

    async def send(self, request: NotificationRequest) -> SendResult:
        return await self.post(self.settings.webhook_url, json_bytes(blocks_payload(request)))
