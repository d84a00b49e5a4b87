"""The token store: the API's named tokens, kept as hashes in ``<data_dir>/tokens.json`` (0600).

``vigil token create|rotate|revoke`` edit the store (one at a time, under an ``flock`` on
``tokens.lock``); the agent only reads it, and reloads it when the file changes
(:class:`agent.serve.tokens.TokenRegistry`). A token's value is printed once when it is made
and never stored: the store holds its SHA-256 (a token is 32 random bytes, so a plain hash is
as good as a slow one), its name, scope, creation and expiry, and, for a rotated token, the
previous value's hash with the end of its grace period.

The agent's two default tokens stay plain files (``api-token``, ``api-token.read``), because
local tools read them; in the store they are ``local-operate`` and ``local-read``, entries
without a hash that only remember a rotation's grace and when the value was last changed.

Every change is also appended to the store's ``changes`` journal, which the agent turns into
audit events (``token.created``, ``token.rotated``, ``token.revoked``) when it sees them,
whether it was running at the time or starts later.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec

from storage import private

STORE_FILE = "tokens.json"
LOCK_FILE = "tokens.lock"
OPERATE_FILE = "api-token"
READ_FILE = "api-token.read"
LOCAL_NAMES = {"operate": "local-operate", "read": "local-read"}
"""The default tokens' names, by scope."""
LOCAL_FILES = {"local-operate": OPERATE_FILE, "local-read": READ_FILE}
SCOPES = ("read", "operate")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
NAME_EXPECTED = (
    "1-64 characters of letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
)
CHANGES_KEPT = 500
"""The journal keeps this many changes: those an agent that was down for long never saw go
unaudited beyond it (the store itself is still right)."""

Scope = Literal["read", "operate"]


class TokenError(Exception):
    """A token command that cannot be done, or a store that cannot be read: the message says
    what was wrong and what was expected."""


class TokenFileError(TokenError):
    """A file of the store that cannot be read or written (a failure, not a usage error)."""


class Previous(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A rotated-away value that still works until ``until_ms`` (the grace period)."""

    sha256: str
    until_ms: int


class Entry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One token in the store; ``sha256`` is None for the default (local) tokens, whose value
    is in their file."""

    name: str
    scope: Scope
    created_ms: int
    created_by: str = ""
    sha256: str | None = None
    expires_ms: int | None = None
    rotated_ms: int | None = None
    previous: tuple[Previous, ...] = ()

    @property
    def local(self) -> bool:
        """One of the agent's default tokens (``local-operate``, ``local-read``)."""
        return self.name in LOCAL_FILES


class Change(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of the journal: what ``vigil token`` did, by whom; never a token's value."""

    seq: int
    at_ms: int
    action: Literal["created", "rotated", "revoked"]
    name: str
    scope: Scope
    by: str
    expires_ms: int | None = None
    grace_until_ms: int | None = None


class Store(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The whole of ``tokens.json``. ``store_id`` tells the agent a store made afresh (after
    the file was deleted) from the one whose changes it has audited."""

    version: int = 1
    store_id: str
    next_seq: int = 1
    tokens: tuple[Entry, ...] = ()
    changes: tuple[Change, ...] = ()

    def get(self, name: str) -> Entry | None:
        """The entry named ``name``, if any."""
        return next((e for e in self.tokens if e.name == name), None)


def digest(value: str) -> str:
    """The stored form of a token: its SHA-256, in hex."""
    return hashlib.sha256(value.encode("ascii")).hexdigest()


def new_value() -> str:
    """A fresh token: 32 random bytes, URL-safe base64 (as the default tokens are made)."""
    return secrets.token_urlsafe(32)


def read_store(data_dir: Path) -> Store | None:
    """The store in ``data_dir``; None when there is none yet.

    Raises:
        TokenError: the file cannot be read or is not a store (naming the file and why).
    """
    path = data_dir / STORE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TokenFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return msgspec.json.decode(raw, type=Store)
    except msgspec.ValidationError as exc:
        raise TokenFileError(f"{path} is not a token store: {exc}") from None
    except msgspec.DecodeError as exc:
        raise TokenFileError(f"{path} is not valid JSON: {exc}") from None


def check_name(name: str) -> str:
    """``name`` if it is a valid token name.

    Raises:
        TokenError: it is not (saying what a name may hold).
    """
    if not NAME_PATTERN.fullmatch(name):
        raise TokenError(f"token name {name!r}: expected {NAME_EXPECTED}")
    return name


def _owner(data_dir: Path) -> tuple[int, int] | None:
    """Whom files written here should belong to: root editing the data dir of an agent that
    runs as another user gives them to that user, or the agent could no longer read them."""
    if os.geteuid() != 0:
        return None
    st = data_dir.stat()
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[tuple[int, int] | None]:
    """Hold the store's lock (one ``vigil token`` edit at a time); yields the files' owner."""
    if not data_dir.is_dir():
        raise TokenError(
            f"no data dir {data_dir} (has the agent run with this config yet? pass --config "
            "with the agent's config)"
        )
    owner = _owner(data_dir)
    try:
        fd = private.open_fd(data_dir / LOCK_FILE, os.O_RDWR)
    except OSError as exc:
        hint = " (run it as the agent's user, or root)" if isinstance(exc, PermissionError) else ""
        raise TokenFileError(f"cannot open {data_dir / LOCK_FILE}: {exc.strerror}{hint}") from None
    try:
        if owner is not None:
            with contextlib.suppress(OSError):
                os.fchown(fd, *owner)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield owner
    finally:
        os.close(fd)  # releases the lock


def _write(data_dir: Path, store: Store, owner: tuple[int, int] | None) -> None:
    try:
        private.write_atomic(data_dir / STORE_FILE, msgspec.json.encode(store) + b"\n", owner=owner)
    except OSError as exc:
        raise TokenFileError(f"cannot write {data_dir / STORE_FILE}: {exc.strerror}") from None


def _changed(store: Store, now_ms: int, tokens: list[Entry], **change: Any) -> Store:
    """``store`` with ``tokens`` and ``change`` journalled; rotated-away values past their
    grace are dropped."""
    kept = [
        msgspec.structs.replace(e, previous=tuple(p for p in e.previous if p.until_ms > now_ms))
        for e in tokens
    ]
    entry = Change(seq=store.next_seq, at_ms=now_ms, **change)
    return msgspec.structs.replace(
        store,
        next_seq=store.next_seq + 1,
        tokens=tuple(kept),
        changes=(*store.changes, entry)[-CHANGES_KEPT:],
    )


def _current(data_dir: Path) -> Store:
    return read_store(data_dir) or Store(store_id=secrets.token_hex(8))


def create(
    data_dir: Path,
    name: str,
    scope: str,
    *,
    by: str,
    now_ms: int,
    expires_s: float | None = None,
) -> str:
    """Add a named token; its value (shown once: only its hash is kept).

    Raises:
        TokenError: a bad name or scope, a name in use or reserved, or the store cannot be
            read or written.
    """
    check_name(name)
    if scope not in SCOPES:
        raise TokenError(f"scope {scope!r}: expected read or operate")
    if name.startswith("local-"):
        raise TokenError(f"token name {name!r}: names starting with 'local-' are the agent's own")
    with _locked(data_dir) as owner:
        store = _current(data_dir)
        if store.get(name) is not None:
            raise TokenError(f"a token named {name!r} exists; rotate or revoke it")
        value = new_value()
        expires = None if expires_s is None else now_ms + round(expires_s * 1000)
        entry = Entry(
            name=name,
            scope=scope,  # type: ignore[arg-type]  # checked above
            created_ms=now_ms,
            created_by=by,
            sha256=digest(value),
            expires_ms=expires,
        )
        tokens = [*store.tokens, entry]
        changed = _changed(
            store,
            now_ms,
            tokens,
            action="created",
            name=name,
            scope=scope,
            by=by,
            expires_ms=expires,
        )
        _write(data_dir, changed, owner)
    return value


def rotate(data_dir: Path, name: str, *, grace_s: float, by: str, now_ms: int) -> str | None:
    """Give a token a new value; the old one works for ``grace_s`` more seconds.

    Returns the new value of a named token (shown once); None for a default token, whose new
    value is written to its file (``api-token``, ``api-token.read``) for local tools to read.

    Raises:
        TokenError: no such token, or its files cannot be read or written.
    """
    local_file = LOCAL_FILES.get(name)
    with _locked(data_dir) as owner:
        store = _current(data_dir)
        entry = store.get(name)
        if local_file is not None:
            old_sha = digest(_read_local(data_dir / local_file))
            if entry is None:
                entry = _local_entry(name, data_dir / local_file)
        elif entry is None:
            known = ", ".join(sorted({*LOCAL_FILES, *(e.name for e in store.tokens)}))
            raise TokenError(f"no token named {name!r}; known: {known}")
        else:
            assert entry.sha256 is not None
            old_sha = entry.sha256
        value = new_value()
        until = now_ms + round(grace_s * 1000)
        previous = entry.previous
        if grace_s > 0:
            previous = (*previous, Previous(sha256=old_sha, until_ms=until))
        rotated = msgspec.structs.replace(
            entry,
            sha256=None if local_file else digest(value),
            rotated_ms=now_ms,
            previous=previous,
        )
        tokens = [e for e in store.tokens if e.name != name] + [rotated]
        changed = _changed(
            store,
            now_ms,
            tokens,
            action="rotated",
            name=name,
            scope=entry.scope,
            by=by,
            grace_until_ms=until,
        )
        # The store first: an agent that read the new file before the store would refuse the
        # old value for that moment; this way round the old value is merely valid twice.
        _write(data_dir, changed, owner)
        if local_file is not None:
            try:
                private.write_atomic(
                    data_dir / local_file, (value + "\n").encode("ascii"), owner=owner
                )
            except OSError as exc:
                raise TokenFileError(
                    f"cannot write {data_dir / local_file}: {exc.strerror}"
                ) from None
            return None
    return value


def revoke(data_dir: Path, name: str, *, by: str, now_ms: int) -> Entry:
    """Remove a named token (and any rotated-away value of it in its grace period) now.

    Raises:
        TokenError: no such token, a default token (rotate those), or the store cannot be
            read or written.
    """
    if name in LOCAL_FILES:
        raise TokenError(
            f"{name} is one of the agent's own tokens and cannot be revoked; give it a new "
            f"value now with `vigil token rotate {name} --grace 0s`"
        )
    with _locked(data_dir) as owner:
        store = _current(data_dir)
        entry = store.get(name)
        if entry is None:
            known = ", ".join(sorted(e.name for e in store.tokens if not e.local)) or "none"
            raise TokenError(f"no token named {name!r}; named tokens: {known}")
        tokens = [e for e in store.tokens if e.name != name]
        changed = _changed(
            store, now_ms, tokens, action="revoked", name=name, scope=entry.scope, by=by
        )
        _write(data_dir, changed, owner)
    return entry


def list_tokens(data_dir: Path) -> list[Entry]:
    """Every token: the default ones whose file exists (created when the value was last
    written), then the named ones by name. Never a value.

    Raises:
        TokenError: the store cannot be read.
    """
    store = read_store(data_dir)
    out: list[Entry] = []
    for scope in ("operate", "read"):
        name = LOCAL_NAMES[scope]
        path = data_dir / LOCAL_FILES[name]
        if not path.exists():
            continue
        entry = store.get(name) if store else None
        out.append(entry if entry is not None else _local_entry(name, path))
    named = [e for e in store.tokens if not e.local] if store else []
    return out + sorted(named, key=lambda e: e.name)


def _read_local(path: Path) -> str:
    try:
        value = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise TokenError(
            f"no token file {path}: the agent creates it when it first starts"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {path}: {exc}") from None
    if not value:
        raise TokenFileError(f"the token file {path} is empty")
    return value


def _local_entry(name: str, path: Path) -> Entry:
    """A default token the store has no entry for yet: made when its file was written."""
    try:
        made_ms = path.stat().st_mtime_ns // 1_000_000
    except OSError:
        made_ms = 0
    scope: Scope = "operate" if name == LOCAL_NAMES["operate"] else "read"
    return Entry(name=name, scope=scope, created_ms=made_ms, created_by="the agent")
