"""Serving the agent's API: binding its routes, and api.json where local clients find it."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

from agent.config.records import TlsConfig
from agent.runtime.certreload import CertReloader
from agent.serve.files import API_FILE
from agent.serve.httpserver import HttpServer
from agent.serve.routing import Router
from storage import private
from storage.records import Event


class ApiServer(HttpServer):
    """The API's HTTP server; with TLS, it owns the reloader of its certificate."""

    def __init__(self, router: Router, certs: CertReloader | None = None) -> None:
        super().__init__(router)
        self.certs = certs

    async def close(self) -> None:
        """Stop watching the certificate, then close as :meth:`HttpServer.close` does."""
        if self.certs is not None:
            self.certs.stop()
        await super().close()


async def bind(
    app: Router,
    host: str,
    port: int,
    tls: TlsConfig | None = None,
    emit: Callable[[Event], None] | None = None,
) -> tuple[ApiServer, str]:
    """Start serving ``app`` on ``host:port`` (0 picks a free port), over HTTPS with ``tls``
    (its files reloaded on change, refusals and reloads recorded through ``emit``); the
    server and the URL.

    Raises:
        agent.config.tls.TlsFileError: the certificate or key no longer loads.
    """
    certs = CertReloader(tls, emit or (lambda event: None)) if tls is not None else None
    server = ApiServer(app, certs)
    await server.start(host, port, ssl=certs.context if certs is not None else None)
    if certs is not None:
        certs.start(asyncio.get_running_loop())
    bound, real_port = server.sockets[0].getsockname()[:2]
    shown = f"[{bound}]" if ":" in bound else bound
    return server, f"{'https' if certs is not None else 'http'}://{shown}:{real_port}"


def publish(data_dir: Path, url: str | None, started_ms: int, tls: TlsConfig | None = None) -> None:
    """Write api.json, atomically and owner-only: the URL, the pid and when the agent started;
    with TLS, ``tls_cert``: the certificate file local clients trust this agent by."""
    info: dict[str, object] = {"url": url, "pid": os.getpid(), "started_ms": started_ms}
    if tls is not None:
        info["tls_cert"] = str(tls.cert_file)
    private.write_atomic(data_dir / API_FILE, (json.dumps(info) + "\n").encode("utf-8"))
