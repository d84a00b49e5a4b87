"""Signed checkpoints of the audit chain's head: what proves, off the host, that no event was
removed from the end of the chain.

A checkpoint is the host key's signature over the chain's head (seq and hash), the retention
anchor and when it was signed, written as one self-contained text line::

    vigil-checkpoint v1 <base64 of the JSON payload> <base64 of the ed25519 signature>

so it can be grepped out of ``journalctl`` or syslog output whatever each line starts with.
The payload is compact, key-sorted JSON: ``{"v": 1, "host", "seq", "hash", "head_ts", "ts",
"anchor": {"seq", "hash"}, "key"}`` (``ts`` when signed, ``head_ts`` the head event's time,
``key`` the signing key's fingerprint), and the signature covers its exact bytes.

Checked against a chain (:func:`check`): a checkpoint whose seq lies beyond the chain's last
event means the events in between were cut off; one whose event has another hash means the
chain was rewritten. The agent keeps every checkpoint it signs in ``audit-checkpoints.log``
in its data dir too (for exports); that copy proves nothing by itself, since an attacker on
the host can delete lines from it; the copies in the journal, a remote syslog or a webhook's
receiver are the ones that count.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.audit import GENESIS, read_anchor
from storage.private import open_fd

if TYPE_CHECKING:
    from storage.auditkey import HostKey, PublicKey

MARK = "vigil-checkpoint"
VERSION = "v1"
LINE_RE = re.compile(rf"{MARK} {VERSION} ([A-Za-z0-9+/]+=*) ([A-Za-z0-9+/]+=*)")
"""A checkpoint anywhere in a line (after a journal or syslog prefix)."""
ANY_MARK_RE = re.compile(rf"{MARK} (\S+)")
CHECKPOINTS_FILENAME = "audit-checkpoints.log"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a checkpoint signs."""

    host: str
    seq: int
    """The head event's seq (0: the chain was empty)."""
    hash: str
    head_ts_ms: int
    ts_ms: int
    """When it was signed."""
    anchor_seq: int
    anchor_hash: str
    key: str
    """The signing key's fingerprint."""

    def payload(self) -> bytes:
        """The exact bytes signed."""
        obj = {
            "v": 1,
            "host": self.host,
            "seq": self.seq,
            "hash": self.hash,
            "head_ts": self.head_ts_ms,
            "ts": self.ts_ms,
            "anchor": {"seq": self.anchor_seq, "hash": self.anchor_hash},
            "key": self.key,
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def when(self) -> str:
        """When it was signed, ISO 8601 UTC to the second."""
        return iso_ms(self.ts_ms)


def iso_ms(ts_ms: int) -> str:
    """``2025-03-01T12:00:00Z``."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def signed_line(cp: Checkpoint, key: HostKey) -> str:
    """The checkpoint as its text line, signed by ``key``."""
    payload = cp.payload()
    sig = key.sign(payload)
    b64 = base64.b64encode
    return f"{MARK} {VERSION} {b64(payload).decode()} {b64(sig).decode()}"


def head_checkpoint(conn: sqlite3.Connection, host: str, key_fp: str, now_ms: int) -> Checkpoint:
    """A checkpoint (unsigned) of the chain's head as stored now, in one read transaction."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        anchor = read_anchor(conn) or (0, GENESIS)
        row = conn.execute("SELECT seq, hash, ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        if own:
            conn.execute("COMMIT")
    seq, hash_, head_ts = (int(row[0]), str(row[1]), int(row[2])) if row else (*anchor, 0)
    return Checkpoint(host, seq, hash_, head_ts, now_ms, anchor[0], anchor[1], key_fp)


# --- reading checkpoint lines ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parsed:
    """The checkpoints found in some text, verified against one key."""

    valid: list[Checkpoint]
    """Signed by the key, oldest signed first, duplicates (the same line twice) dropped."""
    lines: list[str]
    """Each valid checkpoint's line (without what came before it on its line), in order."""
    problems: list[str]
    """Lines that claim to be checkpoints by this key but do not verify, or cannot be read."""
    other_keys: dict[str, int]
    """Checkpoints signed by other keys (other hosts in a shared log), by fingerprint."""


def parse(lines: Iterable[str], key: PublicKey) -> Parsed:
    """Find and verify the checkpoint lines in ``lines`` (a file, ``journalctl`` output)."""
    valid: dict[bytes, tuple[Checkpoint, str]] = {}
    problems: list[str] = []
    others: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if MARK not in line:
            continue
        matches = list(LINE_RE.finditer(line))
        if not matches:
            mark = ANY_MARK_RE.search(line)
            version = mark.group(1) if mark else ""
            problems.append(
                f"line {lineno}: a {MARK} line this Vigil cannot read "
                f"(expected '{MARK} {VERSION} PAYLOAD SIGNATURE', got version {version!r})"
            )
            continue
        for m in matches:
            try:
                payload = base64.b64decode(m.group(1), validate=True)
                sig = base64.b64decode(m.group(2), validate=True)
                cp = _checkpoint(json.loads(payload))
            except (binascii.Error, ValueError, KeyError, TypeError):
                problems.append(f"line {lineno}: a {MARK} line whose payload cannot be read")
                continue
            if cp.key != key.fingerprint:
                others[cp.key] = others.get(cp.key, 0) + 1
                continue
            if not key.verify(sig, payload):
                problems.append(
                    f"line {lineno}: checkpoint seq {cp.seq} of {cp.when} does not verify "
                    f"with key {key.fingerprint} (forged or altered)"
                )
                continue
            valid[payload] = (cp, m.group(0))
    ordered = sorted(valid.values(), key=lambda c: (c[0].ts_ms, c[0].seq))
    return Parsed([c for c, _ in ordered], [line for _, line in ordered], problems, others)


def _checkpoint(obj: Any) -> Checkpoint:
    if not isinstance(obj, dict) or obj.get("v") != 1:
        raise ValueError("not a v1 checkpoint")
    anchor = obj["anchor"]
    cp = Checkpoint(
        host=str(obj["host"]),
        seq=obj["seq"],
        hash=str(obj["hash"]),
        head_ts_ms=obj["head_ts"],
        ts_ms=obj["ts"],
        anchor_seq=anchor["seq"],
        anchor_hash=str(anchor["hash"]),
        key=str(obj["key"]),
    )
    for n in (cp.seq, cp.head_ts_ms, cp.ts_ms, cp.anchor_seq):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError("not a v1 checkpoint")
    return cp


# --- checking a chain against checkpoints ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One checkpoint held against the chain."""

    checkpoint: Checkpoint
    ok: bool
    text: str


def check(
    checkpoints: Iterable[Checkpoint],
    *,
    head_seq: int,
    anchor: tuple[int, str],
    hash_at: Callable[[int], str | None],
) -> list[Finding]:
    """Hold each checkpoint against a chain that ends at ``head_seq`` (0 if empty) and starts
    after ``anchor`` (0 and :data:`GENESIS` if nothing was removed); ``hash_at(seq)`` is the
    chain's hash of event ``seq`` (None when there is no such event).
    """
    out: list[Finding] = []
    anchor_seq, anchor_hash = anchor
    for cp in checkpoints:
        covers = f"checkpoint of {cp.when} covers {cp.seq}"
        if cp.seq > head_seq:
            ends = f"the chain ends at {head_seq}" if head_seq else "the chain holds no events"
            gone = (
                f"event {cp.seq}" if cp.seq == head_seq + 1 else f"events {head_seq + 1}..{cp.seq}"
            )
            out.append(Finding(cp, False, f"{gone} missing: {ends}, {covers}"))
        elif cp.seq == 0:
            out.append(Finding(cp, True, f"checkpoint of {cp.when}: the chain was empty"))
        elif cp.seq < anchor_seq:
            out.append(
                Finding(
                    cp,
                    True,
                    f"{covers}, since removed by retention (events 1..{anchor_seq}); not checked",
                )
            )
        else:
            have = anchor_hash if cp.seq == anchor_seq else hash_at(cp.seq)
            if have is None:
                out.append(Finding(cp, False, f"event {cp.seq} missing: {covers}"))
            elif have != cp.hash:
                out.append(
                    Finding(
                        cp,
                        False,
                        f"event {cp.seq} differs from the {covers}: its hash is {have[:16]}..., "
                        f"the checkpoint signed {cp.hash[:16]}... (the chain was rewritten "
                        "at or before it)",
                    )
                )
            else:
                out.append(Finding(cp, True, f"{covers}: matches ({cp.hash[:16]}...)"))
    return out


# --- the agent's own copy --------------------------------------------------------------------


def append_local(data_dir: Path, line: str) -> None:
    """Append a signed line to ``audit-checkpoints.log`` (owner-only), for exports."""
    fd = open_fd(data_dir / CHECKPOINTS_FILENAME, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_local(data_dir: Path) -> list[str]:
    """The signed lines kept in ``data_dir`` (none if the file is missing)."""
    try:
        text = (data_dir / CHECKPOINTS_FILENAME).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [m.group(0) for m in LINE_RE.finditer(text)]
