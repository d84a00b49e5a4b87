"""Fixtures the probe tests share."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from probes.httpclient import HttpClient


@pytest.fixture
async def session() -> AsyncIterator[HttpClient]:
    """An HTTP client, as the agent gives its probes."""
    async with HttpClient() as s:
        yield s


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
