"""API bearer tokens: generated on first start into the data dir, mode 0600.

Two scopes: ``operate`` (may act: restart, acknowledge, ...) implies ``read``. The operate token
lives in ``api-token`` (the file local tools read), a read-only one in ``api-token.read`` for
dashboards and fleet views that must not act.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from storage import private

OPERATE_FILE = "api-token"
READ_FILE = "api-token.read"


@dataclass(frozen=True, slots=True)
class Tokens:
    """The agent's tokens; :meth:`scope_of` maps a presented token to its scope."""

    operate: str
    read: str

    def scope_of(self, presented: str) -> str | None:
        """``operate``, ``read`` or None; constant-time comparisons.

        A presented token that is not ASCII is no token of ours (they are ``token_urlsafe``):
        None, not an exception. A header's non-UTF-8 bytes reach here as lone surrogates,
        which ``str.encode()`` refuses; that was an unauthenticated 500 and a logged traceback
        per request.
        """
        try:
            given = presented.encode("ascii")
        except UnicodeEncodeError:
            return None
        if hmac.compare_digest(given, self.operate.encode()):
            return "operate"
        if hmac.compare_digest(given, self.read.encode()):
            return "read"
        return None


def _ensure(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # tighten a token someone loosened
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    # O_EXCL + mode at creation: the token is never readable by others, not even briefly.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.replace(tmp, path)
    return token


def load_or_create(data_dir: Path) -> Tokens:
    """Read the tokens from the data dir, creating any that are missing."""
    private.make_dir(data_dir)
    return Tokens(operate=_ensure(data_dir / OPERATE_FILE), read=_ensure(data_dir / READ_FILE))
