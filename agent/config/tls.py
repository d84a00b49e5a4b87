"""TLS for the agent's API: which addresses are loopback, and the certificate and key loaded.

An API that other hosts reach must not carry its bearer tokens in clear text, so a ``listen``
address beyond loopback needs ``[agent.tls]`` (or ``allow_insecure_listen = true``, for a TLS
proxy in front or a network the operator trusts). The certificate and key are loaded when the
config is, so ``check-config`` and a reload refuse a missing, unreadable, world-readable or
mismatched pair, naming the field; the server builds its contexts with :func:`server_context`
too, so what the check accepted is what serves.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
import stat
from pathlib import Path

from agent.config.records import TlsConfig
from agent.config.schema import TlsTable
from storage.tomlschema import Invalid

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_PEM_CERT = "-----BEGIN CERTIFICATE-----"


class TlsFileError(Exception):
    """The certificate (``key`` is ``cert``) or the key (``key``) cannot be served.

    Attributes:
        key: the ``[agent.tls]`` key naming the file at fault.
        reason: what is wrong and what was expected.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"agent.tls.{key}: {reason}")
        self.key = key
        self.reason = reason


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a ``listen`` address's host) is reachable from this machine only:
    ``127.0.0.0/8``, ``::1`` (also IPv4-mapped) or ``localhost``. Any other name counts as
    reachable from other hosts, since what it resolves to can change."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_tls(t: TlsTable) -> TlsConfig:
    """``[agent.tls]`` as a record, once its files load as a working certificate and key.

    Raises:
        Invalid: a relative path, or a file that cannot serve (see :func:`server_context`).
    """
    tls = TlsConfig(
        cert_file=_path(t.cert, "cert"), key_file=_path(t.key, "key"), min_version=t.min_version
    )
    for key, path in (("cert", tls.cert_file), ("key", tls.key_file)):
        if not path.is_absolute():
            # The agent runs from / under systemd: a relative path would name another file.
            raise Invalid(("agent", "tls", key), f"expected an absolute path, got {str(path)!r}")
    try:
        server_context(tls)
    except TlsFileError as exc:
        raise Invalid(("agent", "tls", exc.key), exc.reason) from None
    return tls


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context holding the certificate chain and key, TLS ``min_version`` or newer.

    Raises:
        TlsFileError: a file missing or unreadable, not PEM, an encrypted or world-readable
            key, or a key that does not belong to the certificate.
    """
    cert_text = _read(tls.cert_file, "cert")
    if _PEM_CERT not in cert_text:
        raise TlsFileError(
            "cert", f"{tls.cert_file} holds no PEM certificate (expected {_PEM_CERT} ...)"
        )
    try:
        # Parses every certificate of the chain, so a damaged one is blamed on the cert file
        # rather than surfacing as a key error from load_cert_chain below.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_text)
    except ssl.SSLError as exc:
        raise TlsFileError(
            "cert", f"{tls.cert_file}: not a valid PEM certificate chain ({_why(exc)})"
        ) from None
    key_text = _read(tls.key_file, "key")
    if "PRIVATE KEY-----" not in key_text:
        raise TlsFileError(
            "key", f"{tls.key_file} holds no PEM private key (expected -----BEGIN PRIVATE KEY-----)"
        )
    if "ENCRYPTED" in key_text:
        raise TlsFileError(
            "key",
            f"{tls.key_file} is encrypted with a passphrase, which the agent cannot be given; "
            "expected an unencrypted key in an owner-only file (chmod 600)",
        )
    mode = os.stat(tls.key_file).st_mode
    if mode & stat.S_IROTH:
        raise TlsFileError(
            "key",
            f"{tls.key_file} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
            "expected an owner-only or group-only file (chmod 600)",
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    try:
        # A password callback that gives none: OpenSSL would otherwise prompt on the terminal.
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsFileError(
                "key",
                f"{tls.key_file} is not the key of the certificate in {tls.cert_file} "
                "(expected the private key the certificate was issued for)",
            ) from None
        raise TlsFileError(
            "key", f"{tls.key_file}: not a usable private key ({_why(exc)})"
        ) from None
    except OSError as exc:  # the file went away between the reads
        raise TlsFileError("cert", f"cannot load {tls.cert_file}: {exc.strerror}") from None
    return ctx


def leaf_sha256(cert_file: Path) -> str:
    """The SHA-256 fingerprint (hex) of the first certificate in ``cert_file``: the one served,
    as a client sees it (``getpeercert(binary_form=True)``).

    Raises:
        OSError, ValueError: the file cannot be read or holds no PEM certificate.
    """
    text = cert_file.read_text(encoding="ascii", errors="replace")
    start = text.index(_PEM_CERT)
    end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text[start:end])).hexdigest()


def _path(value: str, key: str) -> Path:
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~user of a user that does not exist
        raise Invalid(
            ("agent", "tls", key), f"expected an absolute path, got {value!r} (no such user)"
        ) from None


def _read(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="ascii")
    except OSError as exc:
        raise TlsFileError(key, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TlsFileError(key, f"{path} is not a PEM text file (expected PEM, not DER)") from None


def _why(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words: ``KEY_VALUES_MISMATCH`` -> ``key values mismatch``."""
    if exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)
