"""E-mail over SMTP: a plain-text and an HTML part, sent from a thread.

``security`` is ``starttls`` (upgrade a plain connection, the usual port 587), ``tls``
(implicit TLS, port 465) or ``none`` (loopback relays only). The password is a secret. The
Message-ID is derived from the notification's id, so a repeat is recognisably the same mail.
Every piece of text in the HTML part is escaped. SMTP's own 5xx answers refuse the message for
good; 4xx answers and connection failures are retried.
"""

from __future__ import annotations

import asyncio
import html
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from agent.alerting.channels.base import Channel, SendResult
from agent.alerting.channels.render import alert_line, headline, label_text
from agent.alerting.channels.settings import MailSettings
from agent.alerting.model import NotificationRequest
from storage.text import printable


def message(request: NotificationRequest, settings: MailSettings) -> EmailMessage:
    """The mail for one notification."""
    head = headline(request)
    msg = EmailMessage()
    msg["Subject"] = head
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.recipients)
    msg["Date"] = formatdate(request.created_ms / 1000, usegmt=True)
    msg["Message-ID"] = f"<{request.notification_id}@vigil>"
    msg["X-Vigil-Id"] = request.notification_id
    lines = [head, ""]
    items = []
    for a in request.alerts:
        lines.append(f"- {alert_line(a)}")
        if a.labels:
            lines.append(f"  labels: {label_text(a)}")
        if a.runbook_url:
            lines.append(f"  runbook: {printable(a.runbook_url)}")
        item = f"<li><b>{html.escape(alert_line(a))}</b>"
        if a.labels:
            item += f"<br><code>{html.escape(label_text(a))}</code>"
        if a.runbook_url.startswith(("https://", "http://")):
            url = html.escape(printable(a.runbook_url), quote=True)
            item += f'<br><a href="{url}">runbook</a>'
        items.append(item + "</li>")
    lines += ["", f"notification {request.notification_id}"]
    msg.set_content("\n".join(lines) + "\n")
    msg.add_alternative(
        "<!DOCTYPE html><html><body>"
        f"<h2>{html.escape(head)}</h2><ul>{''.join(items)}</ul>"
        f"<p><small>notification {html.escape(request.notification_id)}</small></p>"
        "</body></html>\n",
        subtype="html",
    )
    return msg


class MailChannel(Channel):
    """Sends mail with :mod:`smtplib` in a worker thread (the event loop never waits on it)."""

    kind = "email"
    settings: MailSettings

    def secrets(self) -> tuple[str, ...]:
        return (self.settings.password,) if self.settings.password else ()

    async def send(self, request: NotificationRequest) -> SendResult:
        msg = message(request, self.settings)
        try:
            refused = await asyncio.to_thread(self._deliver, msg)
        except smtplib.SMTPRecipientsRefused as exc:
            return SendResult.failed(
                f"all recipients refused: {_codes(exc.recipients)}", retryable=False
            )
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            return SendResult.failed(
                self.redact(f"SMTP {exc.smtp_code}: {printable(text)[:200]}"),
                retryable=exc.smtp_code < 500,
                status=exc.smtp_code,
            )
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            where = f"{self.settings.host}:{self.settings.port}"
            return SendResult.failed(
                self.redact(f"cannot send via {where}: {printable(exc)[:200]}")
            )
        if refused:
            return SendResult.accepted(f"accepted; refused for {_codes(refused)}")
        return SendResult.accepted(f"accepted for {len(self.settings.recipients)} recipient(s)")

    def _deliver(self, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file)
        smtp: smtplib.SMTP
        if s.security == "tls":
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        with smtp:
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password)
            return smtp.send_message(msg, from_addr=s.sender, to_addrs=list(s.recipients))


def _codes(refused: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{printable(rcpt)} ({code})" for rcpt, (code, _) in refused.items())
