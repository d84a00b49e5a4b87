"""API bearer tokens as the agent checks them, reloaded when their files change.

Two default tokens are generated on first start into the data dir, mode 0600: ``api-token``
(scope ``operate``, which implies ``read``: the file local tools read) and ``api-token.read``
(for dashboards and fleet views that must not act); they are named ``local-operate`` and
``local-read``. Named tokens (``vigil token create``) live as hashes in the token store
(:mod:`.tokenfile`). A rotated token's old value keeps working until its grace period ends.

The agent never keeps a value it does not need: it holds the SHA-256 of every valid value and
compares the presented token's hash with each in constant time. Each check first compares the
three files' ``stat`` with the last one seen (a few microseconds), so a token made, rotated or
revoked by ``vigil token`` counts from the next request, without a restart; a periodic
:meth:`TokenRegistry.check` turns the store's journal into audit events even when no request
comes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.serve.tokenfile import (
    LOCAL_FILES,
    LOCAL_NAMES,
    OPERATE_FILE,
    READ_FILE,
    STORE_FILE,
    Change,
    Store,
    TokenError,
    read_store,
)
from probes.base import now_ms
from storage import private
from storage.records import Event
from storage.text import printable
from storage.units import format_duration

__all__ = ["OPERATE_FILE", "READ_FILE", "Grant", "TokenRegistry", "load_or_create"]

log = logging.getLogger("vigil.tokens")

AUDITED_FILE = "tokens.audited"
"""The last journal entry of the store the agent has recorded as an event."""
CHECK_EVERY_S = 2.0
"""How often the agent looks for token changes when no request does."""


@dataclass(frozen=True, slots=True)
class Grant:
    """Who a presented token is. ``local``: one of the default tokens, which every local user
    who can read the data dir shares, so it names no person."""

    name: str
    scope: str
    local: bool


@dataclass(frozen=True, slots=True)
class _Valid:
    sha256: bytes
    grant: Grant
    until_ms: int | None
    """Refused from this time on (expiry, or the end of a rotation's grace); None: no end."""


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


def load_or_create(
    data_dir: Path,
    emit: Callable[[Event], None] | None = None,
    clock_ms: Callable[[], int] = now_ms,
) -> TokenRegistry:
    """Create the default tokens where missing, and load every token of the data dir.

    Args:
        emit: where the store's changes go as audit events (the agent's); None records none.
        clock_ms: now, in epoch milliseconds (tests step it to end a grace period).
    """
    private.make_dir(data_dir)
    _ensure(data_dir / OPERATE_FILE)
    _ensure(data_dir / READ_FILE)
    return TokenRegistry(data_dir, emit, clock_ms)


class TokenRegistry:
    """Every token the agent accepts now; :meth:`identify` maps a presented one to its grant."""

    def __init__(
        self,
        data_dir: Path,
        emit: Callable[[Event], None] | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.data_dir = data_dir
        self._emit = emit
        self._clock_ms = clock_ms
        self._key: tuple[object, ...] | None = None
        self._valid: tuple[_Valid, ...] = ()
        self._local: dict[str, str] = {}
        """The default tokens' last good values: kept while a file is briefly unreadable."""
        self._audited: tuple[str, int] | None = None
        # Joined once: a Path join per file per request cost more than the stat itself.
        self._watched = [os.fspath(data_dir / n) for n in (STORE_FILE, OPERATE_FILE, READ_FILE)]
        self.check()

    def identify(self, presented: str) -> Grant | None:
        """The grant of a presented token; None for no valid token.

        A presented token that is not ASCII is no token of ours (they are ``token_urlsafe``):
        None, not an exception. A header's non-UTF-8 bytes reach here as lone surrogates,
        which ``str.encode()`` refuses; that was an unauthenticated 500 and a logged
        traceback per request.
        """
        self.check()
        try:
            given = hashlib.sha256(presented.encode("ascii")).digest()
        except UnicodeEncodeError:
            return None
        now = self._clock_ms()
        found: Grant | None = None
        for valid in self._valid:
            # Every entry is compared, each in constant time; expiry is checked after.
            matched = hmac.compare_digest(given, valid.sha256)
            if matched and found is None and (valid.until_ms is None or now < valid.until_ms):
                found = valid.grant
        return found

    def scope_of(self, presented: str) -> str | None:
        """``operate``, ``read`` or None: the presented token's scope."""
        grant = self.identify(presented)
        return grant.scope if grant else None

    def check(self) -> None:
        """Reload the tokens if a file changed since the last look (one ``stat`` each)."""
        key = self._stat_key()
        if key != self._key:
            self._key = key  # first: a broken store is reported once, not at every request
            self._load()

    async def check_job(self) -> None:
        """:meth:`check`, as a scheduler job."""
        self.check()

    def _stat_key(self) -> tuple[object, ...]:
        out: list[object] = []
        for path in self._watched:
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
                continue
            # The inode as well: a file replaced within one mtime tick is still a new file.
            out.append((st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size))
        return tuple(out)

    def _load(self) -> None:
        valid: list[_Valid] = []
        for name, file in LOCAL_FILES.items():
            value = _read_value(self.data_dir / file)
            if value:
                self._local[name] = value
            if name in self._local:
                scope = "operate" if name == LOCAL_NAMES["operate"] else "read"
                grant = Grant(name, scope, local=True)
                valid.append(_Valid(_sha256(self._local[name]), grant, None))
        store: Store | None = None
        try:
            store = read_store(self.data_dir)
        except TokenError as exc:
            # Refuse the named tokens rather than keep ones that may have been revoked since.
            log.error("token store refused; named tokens refused until it is fixed: %s", exc)
        if store is not None:
            valid.extend(_store_values(store))
        self._valid = tuple(valid)
        if store is not None:
            self._audit(store)

    def _audit(self, store: Store) -> None:
        """Record the journal's changes not recorded yet as events, then remember the last."""
        if self._emit is None:
            return
        if self._audited is None:
            self._audited = _read_audited(self.data_dir / AUDITED_FILE)
        seen = self._audited[1] if self._audited[0] == store.store_id else 0
        new = [c for c in store.changes if c.seq > seen]
        if not new:
            return
        for change in new:
            self._emit(change_event(change))
        self._audited = (store.store_id, new[-1].seq)
        doc = {"store_id": store.store_id, "seq": new[-1].seq}
        try:
            private.write_atomic(self.data_dir / AUDITED_FILE, json.dumps(doc).encode() + b"\n")
        except OSError as exc:
            # The events are recorded; the next agent may record them again, never lose them.
            log.warning("cannot write %s: %s", self.data_dir / AUDITED_FILE, exc.strerror)


def _store_values(store: Store) -> list[_Valid]:
    out: list[_Valid] = []
    for e in store.tokens:
        grant = Grant(e.name, e.scope, local=e.local)
        try:
            if e.sha256 is not None and not e.local:
                out.append(_Valid(bytes.fromhex(e.sha256), grant, e.expires_ms))
            for p in e.previous:
                ends = p.until_ms if e.expires_ms is None else min(p.until_ms, e.expires_ms)
                out.append(_Valid(bytes.fromhex(p.sha256), grant, ends))
        except ValueError:
            log.error("token store: token %r has a hash that is not hex; refused", e.name)
    return out


def change_event(change: Change) -> Event:
    """The audit event of one change to the tokens; it names the token, never its value."""
    data: dict[str, object] = {
        "name": change.name,
        "scope": change.scope,
        "by": change.by,
        "seq": change.seq,
    }
    detail = ""
    if change.expires_ms is not None:
        data["expires_ms"] = change.expires_ms
        detail = f", expires in {format_duration((change.expires_ms - change.at_ms) / 1000)}"
    if change.grace_until_ms is not None:
        data["grace_until_ms"] = change.grace_until_ms
        grace_s = (change.grace_until_ms - change.at_ms) / 1000
        detail = f", old value valid {format_duration(grace_s)} more" if grace_s > 0 else ""
    return Event(
        ts_ms=change.at_ms,
        kind=f"token.{change.action}",
        subject=f"token:{change.name}",
        message=printable(
            f"{change.scope} token {change.name} {change.action} by {change.by}{detail}"
        ),
        data=data,
    )


def _sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode("ascii")).digest()


def _read_value(path: Path) -> str | None:
    try:
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def _read_audited(path: Path) -> tuple[str, int]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return str(doc["store_id"]), int(doc["seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", 0
