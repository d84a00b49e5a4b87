"""How the CLI and the TUI trust an agent's HTTPS certificate.

Verification is always on: the chain up to a trusted CA and the URL's host in the certificate.
The trusted CAs are the system's, or only those in a CA file the user names (``--ca``,
``$VIGIL_CA``, a fleet member's ``ca``), as ``curl --cacert`` does. A local agent found through
its ``api.json`` is trusted by its own certificate instead (pinned: exactly the certificate its
config names, whatever address it listens on, since ``0.0.0.0`` is in no certificate).

Shared by ``agent.cli`` and ``tui.remote``, which may not import each other; nothing here opens
a connection.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

CA_ENV = "VIGIL_CA"
"""A CA file the CLI trusts when ``--ca`` is not given."""

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class TrustError(Exception):
    """A CA or certificate file that cannot be used.

    Attributes:
        path: the file.
        reason: what is wrong with it and what was expected.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def client_context(
    ca_file: Path | str | None = None,
    *,
    pinned_cert: Path | str | None = None,
    pinned_pem: str | None = None,
) -> ssl.SSLContext:
    """A client context that verifies the agent: TLS 1.2 or newer, certificate required.

    Args:
        ca_file: Trust only the CAs in this PEM file (chain and host name checked); None: the
            system's CAs.
        pinned_cert: Trust exactly the first certificate of this PEM file, the agent's own,
            and no CA (the host name is not checked: the pin is stronger than a name).
        pinned_pem: The same from PEM text (the agent's certificate read through ssh).

    Raises:
        TrustError: the file cannot be read or holds no PEM certificate.
    """
    if pinned_cert is not None or pinned_pem is not None:
        where = Path(pinned_cert) if pinned_cert is not None else Path("<the agent's certificate>")
        if pinned_pem is not None:
            found = _PEM_CERT.findall(pinned_pem)
            if not found:
                raise TrustError(where, "the agent's certificate holding no PEM certificate")
            leaf = found[0]
        else:
            leaf = _certificates(where, "the agent's certificate")[0]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        # The pinned certificate is no CA: accept a chain that ends at it.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        _load(ctx, leaf, where)
    else:
        ctx = ssl.create_default_context()
        if ca_file is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname and chain checked
            _load(ctx, "\n".join(_certificates(Path(ca_file), "the CA file")), Path(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def env_ca() -> Path | None:
    """``$VIGIL_CA`` as a path, or None when unset or empty."""
    value = os.environ.get(CA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def tls_failure(exc: BaseException, host: str, hint: str) -> str | None:
    """Why a TLS connection to ``host`` failed, in words, with ``hint`` (what to do) where the
    agent's certificate was not trusted; None when ``exc`` is no TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or str(exc)
        return f"the TLS certificate of {host} is not trusted: {why} ({hint})"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc).lower().replace("_", " ")
        if "wrong version number" in reason or "record layer failure" in reason:
            return f"TLS handshake with {host} failed ({reason}): is it serving plain HTTP?"
        return f"TLS handshake with {host} failed ({reason})"
    return None


def _certificates(path: Path, what: str) -> list[str]:
    try:
        text = path.expanduser().read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise TrustError(path, f"cannot read {what}: {exc.strerror or exc}") from None
    found = _PEM_CERT.findall(text)
    if not found:
        raise TrustError(
            path, f"{what} holding no PEM certificate (expected -----BEGIN CERTIFICATE----- ...)"
        )
    return found


def _load(ctx: ssl.SSLContext, pem: str, path: Path) -> None:
    try:
        ctx.load_verify_locations(cadata=pem)
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc).lower().replace("_", " ")
        raise TrustError(path, f"not a valid PEM certificate ({reason})") from None
