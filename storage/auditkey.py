"""The host key: an ed25519 key pair that signs audit checkpoints and evidence bundles.

The private key is made on first need (the agent's first checkpoint, or the first bundle) in
the data dir as ``audit-key.pem`` (PKCS#8 PEM, owner-only), with its public half beside it as
``audit-key.pub`` (SubjectPublicKeyInfo PEM, readable by the operators' group, who verify with
it but must not sign). Keep a copy of the public key off the host (``vigil audit pubkey``): a
checkpoint proves something only against a key the attacker could not have swapped.

``cryptography`` is imported inside the functions that sign or verify, so the agent pays for it
only when a checkpoint is due, never at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.private import FILE_MODE, make_dir, open_fd

KEY_FILENAME = "audit-key.pem"
PUBKEY_FILENAME = "audit-key.pub"
PUBKEY_MODE = 0o640
"""Not secret; readable by the data dir's group, which verifies (the private key is 0600)."""


class HostKeyError(ValueError):
    """A key file that cannot be read, or is not what it should be."""


def fingerprint(public_raw: bytes) -> str:
    """A key's short name: ``ed25519:`` and the first 16 hex digits of sha256(raw public key)."""
    return "ed25519:" + hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """A host's public key: verifies what its private half signed."""

    raw: bytes
    """The 32 bytes of the ed25519 public key."""

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(self.raw)

    def pem(self) -> str:
        """SubjectPublicKeyInfo PEM, as ``openssl pkey -pubin`` and ``cryptography`` read it."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        key = Ed25519PublicKey.from_public_bytes(self.raw)
        return key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` is this key's ed25519 signature of ``data``."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


class HostKey:
    """The private key, loaded: signs."""

    def __init__(self, private: Any) -> None:
        from cryptography.hazmat.primitives import serialization

        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(raw)

    def sign(self, data: bytes) -> bytes:
        """The ed25519 signature (64 bytes) of ``data``."""
        sig: bytes = self._private.sign(data)
        return sig


def load_public_pem(text: str | bytes, where: str = "the key") -> PublicKey:
    """A public key from PEM text (a private key's PEM gives its public half too).

    Raises:
        HostKeyError: not an ed25519 key in PEM.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    data = text.encode() if isinstance(text, str) else text
    key: Any
    try:
        if b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None)
            if isinstance(key, Ed25519PrivateKey):
                key = key.public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise HostKeyError(f"{where} is not a PEM key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise HostKeyError(f"{where} is not an ed25519 key; expected the host key of a Vigil agent")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(raw)


def read_public(data_dir: Path) -> PublicKey | None:
    """The host's public key from ``audit-key.pub`` (or the private key); None if neither is
    there yet.

    Raises:
        HostKeyError: a key file is there but unreadable or not a key.
    """
    for name in (PUBKEY_FILENAME, KEY_FILENAME):
        path = data_dir / name
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise HostKeyError(f"cannot read {path}: {exc.strerror or exc}") from None
        return load_public_pem(text, str(path))
    return None


def load_or_create(data_dir: Path) -> HostKey:
    """The host key from ``data_dir``, made there now if there is none.

    Creation is race-free between the agent and a CLI command: the new key is written to a
    temporary file and linked into place, which fails if another process linked its own
    first; that one is then read.

    Raises:
        HostKeyError: the key file is unreadable (permissions: the agent's user owns it) or is not
            an ed25519 private key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = data_dir / KEY_FILENAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = _create(data_dir)
    except OSError as exc:
        raise HostKeyError(
            f"cannot read the host key {path}: {exc.strerror or exc} "
            "(it belongs to the user the agent runs as)"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise HostKeyError(f"{path} is not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise HostKeyError(f"{path} is not an ed25519 private key")
    host = HostKey(key)
    pub = data_dir / PUBKEY_FILENAME
    if not pub.exists():  # removed, or a key from before the .pub file was written
        _write_new(pub, host.public.pem().encode(), PUBKEY_MODE)
    return host


def _create(data_dir: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    make_dir(data_dir)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = data_dir / KEY_FILENAME
    if not _write_new(path, pem, FILE_MODE):
        return path.read_bytes()  # another process made one first: that one is the key
    public = HostKey(key).public
    _write_new(data_dir / PUBKEY_FILENAME, public.pem().encode(), PUBKEY_MODE)
    return pem


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Write ``path`` whole if it does not exist; False if it already did."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = open_fd(tmp, os.O_WRONLY | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
