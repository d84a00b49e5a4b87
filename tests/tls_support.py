"""Throwaway certificates (trustme) for the API's TLS tests, and what a client sees of them."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pair:
    """A certificate chain and its key on disk, as ``[agent.tls]`` names them."""

    cert: Path
    key: Path
    sha256: str
    """The fingerprint of the leaf certificate, as a client sees it."""


def write_pair(ca: trustme.CA, directory: Path, name: str = "api", *hosts: str) -> Pair:
    """Issue a certificate for ``hosts`` (default 127.0.0.1 and localhost) and write the chain
    and the owner-only key to ``directory/NAME.crt`` and ``NAME.key``, atomically."""
    issued = ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")))
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    write_atomic(cert, chain, 0o644)
    write_atomic(key, issued.private_key_pem.bytes(), 0o600)
    leaf = ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())
    return Pair(cert, key, hashlib.sha256(leaf).hexdigest())


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` the way renewals do: a temp file renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_ca(ca: trustme.CA, path: Path) -> Path:
    """The CA's certificate, the file a client trusts."""
    ca.cert_pem.write_to_path(str(path))
    return path


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_file`` (None: the system's CAs)."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def peer_sha256(host: str, port: int, ca_file: Path) -> str:
    """A new connection's view of the server: the fingerprint of the certificate it got."""
    ctx = client_context(ca_file)
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()
