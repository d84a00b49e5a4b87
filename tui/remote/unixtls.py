"""HTTPS over a unix socket, for agents that serve TLS reached through an ``ssh -L`` forward."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp


class TlsUnixConnector(aiohttp.UnixConnector):
    """HTTPS over a unix socket: an ``ssh -L`` forward to an agent that serves TLS.

    aiohttp's UnixConnector never wraps its socket in TLS (it speaks plain HTTP whatever the
    URL's scheme), so the connection is made here with the context; its failures become the
    errors a TCP connection's would, which :meth:`tui.remote.client.AgentClient._send` words.
    """

    def __init__(self, path: str, context: ssl.SSLContext | None) -> None:
        super().__init__(path=path)
        self._tls = context or ssl.create_default_context()

    async def _create_connection(
        self,
        req: Any,
        traces: Any,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's
    ) -> Any:
        try:
            async with asyncio.timeout(timeout.sock_connect):
                _, proto = await self._loop.create_unix_connection(
                    self._factory, self.path, ssl=self._tls, server_hostname=req.host
                )
        except TimeoutError:
            raise  # the client's own words: "timeout after ..."
        except ssl.SSLCertVerificationError as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            raise aiohttp.ClientConnectorError(req.connection_key, exc) from exc
        return proto
