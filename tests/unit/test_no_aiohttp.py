"""The agent process never loads aiohttp (issue 14: ~16 MB of its peak RSS).

Probes, model monitors and the notify channels speak HTTP through :mod:`probes.httpclient`;
the API is served by :mod:`agent.serve.httpserver`. Each check runs in a fresh interpreter,
as ``tests/unit/test_codec_pure.py`` does for numpy, since this test process has long loaded
aiohttp for its fake servers. The TUI and the test fakes may keep using aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from agent.alerting.channels.settings import WebhookSettings
from agent.alerting.channels.webhook import WebhookChannel
from tests.helpers import ROOT, child_env


def _loaded_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints a JSON object as its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_daemon_does_not_import_aiohttp() -> None:
    out = _loaded_after(
        "import sys, json\n"
        "import agent.runtime.daemon\n"
        "print(json.dumps({'aiohttp': sorted(m for m in sys.modules if m.startswith('aiohttp'))}))"
    )
    assert out["aiohttp"] == [], "the daemon imports aiohttp"


def test_probes_monitors_and_alerting_do_not_import_aiohttp() -> None:
    # Every probe the registry knows, the monitors, and every channel module but apprise's
    # (which needs its extra).
    modules = [
        "probes.registry",
        "probes.httpclient",
        "agent.health.monitor",
        "agent.alerting",
        "agent.alerting.outbox",
        *(
            f"agent.alerting.channels.{name}"
            for name in ("alertmanager", "webhook", "slack", "pagerduty", "mail", "command")
        ),
    ]
    out = _loaded_after(
        "import importlib, sys, json\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'aiohttp': 'aiohttp' in sys.modules}))"
    )
    assert out == {"aiohttp": False}


SEND = """
import asyncio, json, sys
from agent.alerting.channels.registry import build_channel
from agent.alerting.channels.settings import WebhookSettings

async def main():
    async def answer(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = build_channel(WebhookSettings(name="hook", url=f"http://127.0.0.1:{port}/hook"))
    result = await channel.post(f"http://127.0.0.1:{port}/hook", b"{}")
    await channel.close()
    server.close()
    return result

result = asyncio.run(main())
print(json.dumps({"ok": result.ok, "aiohttp": "aiohttp" in sys.modules}))
"""


def test_sending_over_an_http_channel_does_not_import_aiohttp() -> None:
    assert _loaded_after(SEND) == {"ok": True, "aiohttp": False}


# --- what the HTTP channels say, in the client's terms ------------------------------------------


async def test_an_http_channel_reports_failures_as_it_did(closed_port: int) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = WebhookChannel(
        WebhookSettings(name="hook", url="http://127.0.0.1/x/SECRET", timeout_s=0.2)
    )
    try:
        refused = await channel.post(f"http://127.0.0.1:{closed_port}/x/SECRET", b"{}")
        invalid = await channel.post("ftp://127.0.0.1/x/SECRET", b"{}")
        silence = await channel.post(f"http://127.0.0.1:{port}/x/SECRET", b"{}")
    finally:
        release.set()
        await channel.close()
        server.close()
    assert (refused.ok, refused.retryable) == (False, True)
    assert refused.detail == f"cannot reach 127.0.0.1:{closed_port}: connection refused"
    assert (invalid.ok, invalid.retryable, invalid.detail) == (False, False, "invalid URL")
    assert (silence.ok, silence.retryable) == (False, True)
    assert silence.detail == f"no answer from 127.0.0.1:{port} in 0.2s"
    assert all("SECRET" not in r.detail for r in (refused, invalid, silence))
