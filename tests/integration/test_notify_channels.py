"""Notification channels against real receivers on loopback: a real Alertmanager (Debian's
package) receives an alert and its resolution; a real SMTP server (aiosmtpd) receives mails that
parse back, over STARTTLS with auth and over implicit TLS; a local HTTP receiver checks the
webhook's signature and timestamp, and the Slack and PagerDuty bodies against their documented
shapes; exec runs a real program; Apprise without its package says how to install it."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import json
import shutil
import ssl
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from agent.alerting.channels import build_channel
from agent.alerting.channels.base import Channel, ChannelUnavailable
from agent.alerting.channels.settings import (
    AlertmanagerSettings,
    AppriseSettings,
    CommandSettings,
    MailSettings,
    PagerDutySettings,
    SlackSettings,
    WebhookSettings,
)
from agent.alerting.channels.webhook import verify
from agent.alerting.model import AlertNotice, NoticeKind, NotificationRequest
from tests.fakes.notify_receiver import Answer, free_port, receiver
from tests.helpers import ROOT, wait_for
from tests.schema_subset import errors

pytestmark = pytest.mark.integration

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
SCHEMAS = ROOT / "tests" / "schemas"
NOTIFICATION_SCHEMA = ROOT / "agent" / "alerting" / "channels" / "notification.schema.json"
NASTY = "<!channel> & <http://evil.example|click> \x1b[31mred"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def notification(
    kind: NoticeKind = NoticeKind.FIRING, *, summary: str = NASTY, ends_ms: int | None = None
) -> NotificationRequest:
    start = now_ms() - 60_000
    alert = AlertNotice(
        fingerprint="fp-llama-down",
        rule="ModelDown",
        status="resolved" if kind == NoticeKind.RESOLVED else "firing",
        severity="critical",
        labels=(("host", "gpu1"), ("model", "llama")),
        summary=summary,
        runbook_url="https://runbooks.example/model-down",
        value=0.0,
        starts_ms=start,
        ends_ms=ends_ms,
    )
    return NotificationRequest(
        channel="ch",
        notification_id=f"nid-{kind}",
        dedup_key="fp-llama-down",
        kind=kind,
        created_ms=now_ms(),
        title="ModelDown llama",
        group_labels=(("alertname", "ModelDown"),),
        alerts=(alert,),
    )


async def send(channel: Channel, req: NotificationRequest) -> Any:
    try:
        return await channel.send(req)
    finally:
        await channel.close()


# --- Alertmanager ---------------------------------------------------------------------------


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if ALERTMANAGER is None:
        pytest.skip("Debian's prometheus-alertmanager is not installed (scripts/debian-deps.sh)")
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={cfg}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return False

    try:
        wait_for(ready, timeout=30, what="alertmanager ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def am_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url + "/api/v2/alerts?filter=alertname%3D%22ModelDown%22") as r:
        return list(json.load(r))


async def test_alertmanager_receives_alert_and_resolution(alertmanager: str) -> None:
    channel = build_channel(AlertmanagerSettings(name="am", url=alertmanager))
    result = await send(channel, notification())
    assert result.ok, result.detail
    [got] = await asyncio.to_thread(wait_for, lambda: am_alerts(alertmanager), 10, 0.1, "alert")
    assert got["labels"] == {
        "alertname": "ModelDown",
        "host": "gpu1",
        "model": "llama",
        "severity": "critical",
    }
    assert got["annotations"]["runbook_url"] == "https://runbooks.example/model-down"
    assert got["annotations"]["vigil_notification_id"] == "nid-firing"
    assert "\x1b" not in got["annotations"]["summary"]  # control characters made visible
    assert got["status"]["state"] == "active"

    channel = build_channel(AlertmanagerSettings(name="am", url=alertmanager))
    resolved = notification(NoticeKind.RESOLVED, ends_ms=now_ms() - 1000)
    result = await send(channel, resolved)
    assert result.ok, result.detail
    # Alertmanager lists only alerts that have not ended: the resolution took it away.
    await asyncio.to_thread(wait_for, lambda: am_alerts(alertmanager) == [], 10, 0.1, "resolved")


async def test_alertmanager_refusal_is_not_retried(alertmanager: str) -> None:
    req = notification()
    bad_alert = dataclasses.replace(req.alerts[0], labels=(("bad label", "x"),))
    channel = build_channel(AlertmanagerSettings(name="am", url=alertmanager))
    result = await send(channel, dataclasses.replace(req, alerts=(bad_alert,)))
    assert not result.ok and not result.retryable and result.status == 400, result.detail


# --- SMTP -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


def smtp_server(cert: tuple[Path, Path], *, implicit: bool) -> tuple[Any, Inbox, int]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            getattr(data, "login", None) == b"vigil"
            and getattr(data, "password", None) == b"pw-123456"
        )
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    inbox = Inbox()
    port = free_port()
    kwargs: dict[str, Any] = {"authenticator": authenticator}
    if implicit:
        # aiosmtpd does not count an implicit-TLS session as TLS for auth_require_tls.
        kwargs.update(ssl_context=ctx, auth_require_tls=False)
    else:
        kwargs.update(tls_context=ctx, require_starttls=True)
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, inbox, port


def mail_settings(port: int, cert: Path, **kw: Any) -> MailSettings:
    base: dict[str, Any] = {
        "name": "mail",
        "host": "127.0.0.1",
        "port": port,
        "security": "starttls",
        "username": "vigil",
        "password": "pw-123456",
        "sender": "vigil@gpu1.example",
        "recipients": ("oncall@example.com", "sre@example.com"),
        "ca_file": str(cert),
        "timeout_s": 10.0,
    }
    return MailSettings(**{**base, **kw})


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_smtp_mail_parses_back_with_both_parts(
    certificate: tuple[Path, Path], security: str
) -> None:
    controller, inbox, port = smtp_server(certificate, implicit=security == "tls")
    try:
        channel = build_channel(mail_settings(port, certificate[0], security=security))
        result = await send(channel, notification())
        assert result.ok, result.detail
    finally:
        controller.stop()
    [(sender, rcpts, msg)] = inbox.mails
    assert sender == "vigil@gpu1.example"
    assert rcpts == ["oncall@example.com", "sre@example.com"]
    assert msg["Subject"] == "[FIRING] ModelDown llama"
    assert msg["Message-ID"] == "<nid-firing@vigil>"
    plain = msg.get_body(("plain",))
    html_part = msg.get_body(("html",))
    assert plain is not None and html_part is not None
    text, html = plain.get_content(), html_part.get_content()
    assert "<!channel> & <http://evil.example|click> ?[31mred" in text
    assert "&lt;!channel&gt; &amp; &lt;http://evil.example|click&gt;" in html
    assert "<!channel>" not in html and "\x1b" not in html
    assert '<a href="https://runbooks.example/model-down">runbook</a>' in html


async def test_smtp_wrong_password_fails_without_showing_it(certificate: tuple[Path, Path]) -> None:
    controller, inbox, port = smtp_server(certificate, implicit=False)
    try:
        channel = build_channel(mail_settings(port, certificate[0], password="wrong-secret"))
        result = await send(channel, notification())
    finally:
        controller.stop()
    assert not result.ok and result.status == 535 and not result.retryable
    assert "wrong-secret" not in result.detail
    assert inbox.mails == []


async def test_smtp_server_down_is_retryable(certificate: tuple[Path, Path]) -> None:
    channel = build_channel(mail_settings(free_port(), certificate[0]))
    result = await send(channel, notification())
    assert not result.ok and result.retryable and "refused" in result.detail


# --- webhook, Slack, PagerDuty ----------------------------------------------------------------


async def test_webhook_is_signed_timestamped_and_documented() -> None:
    schema = json.loads(NOTIFICATION_SCHEMA.read_text())
    async with receiver() as r:
        url = r.url + "/hooks/T0K3N"
        channel = build_channel(WebhookSettings(name="hook", url=url, secret="shared-secret"))
        result = await send(channel, notification())
        assert result.ok, result.detail
        [req] = r.requests
    assert req.path == "/hooks/T0K3N"
    ts, sig = req.headers["X-Vigil-Timestamp"], req.headers["X-Vigil-Signature"]
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert abs(int(ts) - time.time()) < 30
    assert verify("shared-secret", req.body, timestamp=ts, signature=sig, now_s=time.time())
    # A receiver refuses a tampered body, a wrong secret and a replay from ten minutes later.
    assert not verify(
        "shared-secret", req.body + b" ", timestamp=ts, signature=sig, now_s=time.time()
    )
    assert not verify("other", req.body, timestamp=ts, signature=sig, now_s=time.time())
    assert not verify(
        "shared-secret", req.body, timestamp=ts, signature=sig, now_s=time.time() + 600
    )
    body = req.json()
    assert errors(body, schema) == []
    assert body["id"] == req.headers["X-Vigil-Id"] == "nid-firing"
    assert body["alerts"][0]["summary"] == NASTY  # data, unescaped: the receiver's format decides


async def test_slack_block_kit_shape_and_mrkdwn_escaping() -> None:
    schema = json.loads((SCHEMAS / "slack_webhook.json").read_text())
    long = notification(summary="x" * 5000 + " & <!here>")
    async with receiver() as r:
        for req in (notification(), long):
            channel = build_channel(
                SlackSettings(name="slack", webhook_url=r.url + "/services/T/B/X")
            )
            result = await send(channel, req)
            assert result.ok, result.detail
        r.script = [Answer(429, {"Retry-After": "30"}, "rate_limited")]
        channel = build_channel(SlackSettings(name="slack", webhook_url=r.url + "/services/T/B/X"))
        limited = await send(channel, notification())
        bodies = [q.json() for q in r.requests[:2]]
    assert not limited.ok and limited.retryable and limited.retry_after_s == 30.0
    for body in bodies:
        assert errors(body, schema) == []
        assert len(body["blocks"]) <= 50
        header = body["blocks"][0]
        assert header["type"] == "header" and len(header["text"]["text"]) <= 150
        for block in body["blocks"][1:]:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= 3000
    section = bodies[0]["blocks"][1]["text"]["text"]
    assert "&lt;!channel&gt; &amp; &lt;http://evil.example|click&gt; ?[31mred" in section
    assert "<!channel>" not in json.dumps(bodies) and "<!here>" not in json.dumps(bodies)
    assert "<https://runbooks.example/model-down|runbook>" in section
    cut = bodies[1]["blocks"][1]["text"]["text"]
    assert cut.endswith("…") and len(cut) == 3000


async def test_pagerduty_trigger_and_resolve_share_the_dedup_key() -> None:
    schema = json.loads((SCHEMAS / "pagerduty_event.json").read_text())
    accepted = '{"status":"success","message":"Event processed","dedup_key":"fp-llama-down"}'
    async with receiver() as r:
        r.script = [Answer(202, body=accepted), Answer(202, body=accepted)]
        settings = PagerDutySettings(
            name="pd", routing_key="R0UTINGKEY0123456789", url=r.url + "/v2/enqueue", source="gpu1"
        )
        for kind in (NoticeKind.FIRING, NoticeKind.RESOLVED):
            result = await send(build_channel(settings), notification(kind))
            assert result.ok and result.status == 202, result.detail
        r.script = [Answer(400, body='{"status":"invalid event"}')]
        refused = await send(build_channel(settings), notification())
        trigger, resolve = (q.json() for q in r.requests[:2])
    assert not refused.ok and not refused.retryable
    for body in (trigger, resolve):
        assert errors(body, schema) == []
        assert body["routing_key"] == "R0UTINGKEY0123456789"
        assert body["dedup_key"] == "fp-llama-down"
    assert r.requests[0].path == "/v2/enqueue"
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "gpu1"
    assert trigger["payload"]["component"] == "llama"
    assert len(trigger["payload"]["summary"]) <= 1024
    assert trigger["links"] == [
        {"href": "https://runbooks.example/model-down", "text": "runbook: ModelDown"}
    ]
    assert "payload" not in resolve
    assert "R0UTINGKEY" not in repr(settings)


# --- exec, Apprise -----------------------------------------------------------------------------


async def test_exec_gets_the_document_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = (
        "import json, os, sys; d = json.load(sys.stdin); "
        "d['env'] = os.environ['VIGIL_NOTIFICATION_ID']; "
        f"open({str(out)!r}, 'w').write(json.dumps(d))"
    )
    channel = build_channel(CommandSettings(name="x", argv=(sys.executable, "-c", script)))
    result = await send(channel, notification())
    assert result.ok, result.detail
    got = json.loads(out.read_text())
    assert got.pop("env") == "nid-firing"
    assert errors(got, json.loads(NOTIFICATION_SCHEMA.read_text())) == []


async def test_exec_failure_and_timeout_are_failed_sends() -> None:
    fail = "import sys; sys.stderr.write('webhook relay said no\\n'); sys.exit(3)"
    channel = build_channel(CommandSettings(name="x", argv=(sys.executable, "-c", fail)))
    result = await send(channel, notification())
    assert not result.ok and result.retryable
    assert result.detail.endswith("exited 3: webhook relay said no")
    slow = build_channel(
        CommandSettings(
            name="x", argv=(sys.executable, "-c", "import time; time.sleep(30)"), timeout_s=0.5
        )
    )
    started = time.monotonic()
    result = await send(slow, notification())
    assert not result.ok and "ran past 0.5s" in result.detail
    assert time.monotonic() - started < 5
    missing = build_channel(CommandSettings(name="x", argv=("/nonexistent/notify",)))
    result = await send(missing, notification())
    assert not result.ok and "cannot run /nonexistent/notify" in result.detail


def test_apprise_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)
    with pytest.raises(ChannelUnavailable, match=r"pip install 'vigil\[notify\]'"):
        build_channel(AppriseSettings(name="a", urls=("tgram://bottoken/chat",)))


async def test_apprise_sends_through_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class FakeApprise:
        def __init__(self) -> None:
            self.urls: list[str] = []

        def add(self, url: str) -> None:
            self.urls.append(url)

        def notify(self, **kw: Any) -> bool:
            calls.append({"urls": self.urls, **kw})
            return True

    fake = types.ModuleType("apprise")
    fake.Apprise = FakeApprise  # type: ignore[attr-defined]
    fake.NotifyType = types.SimpleNamespace(  # type: ignore[attr-defined]
        INFO="info", SUCCESS="success", WARNING="warning", FAILURE="failure"
    )
    monkeypatch.setitem(sys.modules, "apprise", fake)
    channel = build_channel(AppriseSettings(name="a", urls=("tgram://bottoken/chat",)))
    result = await send(channel, notification(NoticeKind.RESOLVED))
    assert result.ok
    [call] = calls
    assert call["urls"] == ["tgram://bottoken/chat"]
    assert call["notify_type"] == "success" and call["title"] == "[RESOLVED] ModelDown llama"
    assert "bottoken" not in repr(channel.settings)
