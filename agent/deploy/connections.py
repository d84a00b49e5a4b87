"""Counting the TCP connections to an address on this host: what a drain waits on.

Split from :mod:`agent.deploy.proxy` (which waits on the count) to keep that module small; it
needs only an address's host and port, so it imports nothing of the switch.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path
from typing import Protocol


class Address(Protocol):
    """What this module reads of :class:`agent.deploy.proxy.Address` (a protocol, not an
    import: proxy imports this module, and the deploy room allows no import cycle)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None: ...


def resolved_hosts(address: Address) -> set[str]:
    """The IP addresses ``address``'s host stands for (itself for an IP literal)."""
    ip = address.ip
    if ip is not None:
        return {str(ip)}
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except OSError:
        return {address.host}
    return {str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos}


_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ESTABLISHED = "01"


def _proc_net_ip(hex_ip: str) -> str:
    # /proc/net/tcp* print an address as 32-bit words in the host's byte order.
    raw = b"".join(struct.pack("=I", int(hex_ip[i : i + 8], 16)) for i in range(0, len(hex_ip), 8))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def open_connections(address: Address, hosts: set[str] | None = None) -> int:
    """Established TCP connections from anywhere on this host to ``address``.

    Reads the kernel's socket tables (``/proc/net/tcp``, ``/proc/net/tcp6``), which every user
    may read, so it works whoever the proxy runs as; it counts connections, not their owners
    (and costs one read of each table, not a walk over every process's file descriptors).
    """
    if hosts is None:
        hosts = resolved_hosts(address)
    port_hex = f"{address.port:04X}"
    count = 0
    for table in _TCP_TABLES:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _ESTABLISHED:
                continue
            ip_hex, _, port = fields[2].partition(":")
            if port == port_hex and _proc_net_ip(ip_hex) in hosts:
                count += 1
    return count


def own_connections(address: Address, hosts: set[str] | None = None) -> int:
    """Established TCP connections this very process holds to ``address``.

    The agent's probes keep their connections alive for reuse: after a blue-green switch the
    model's canaries go to the new copy, but the connection the last canary to the old copy
    used may sit idle in the agent's pool for a while. It is not the proxy's traffic, and the
    old copy is not serving anyone through it.
    """
    import psutil

    if hosts is None:
        hosts = resolved_hosts(address)
    try:
        conns = psutil.Process().net_connections(kind="tcp")
    except psutil.Error:
        return 0
    count = 0
    for c in conns:
        if c.status != psutil.CONN_ESTABLISHED or not c.raddr or c.raddr.port != address.port:
            continue
        ip = ipaddress.ip_address(str(c.raddr.ip).split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if str(ip) in hosts:
            count += 1
    return count


def others_connections(address: Address, hosts: set[str]) -> int:
    """Connections to ``address`` from anyone on this host but this process."""
    return max(0, open_connections(address, hosts) - own_connections(address, hosts))
