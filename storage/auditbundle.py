"""The compliance evidence pack: ``vigil audit export --format bundle``.

One ``.tar.gz`` whose files all sit in one top directory, signed by the host key and checkable
offline with the script it carries (``verify_bundle.py``, a copy of
:mod:`storage.bundle_verify`: the standard library and ``cryptography``, no Vigil)::

    events.jsonl          the audit events of the range, with their chain fields
    incidents.jsonl       incidents open at any time in the range
    deployments.jsonl     deployments in the range: who asked, approvals, the canary gate's
                          evidence (``checks``), the versions they moved between
    config-changes.jsonl  config deploys and config.* events (reloads, refusals, rollbacks)
    config-changes/       the diff of each config deploy (secrets redacted when recorded)
    checkpoints.txt       the signed checkpoints that fall in the range
    host-key.pub          the host's public key
    README.md             how to verify it offline
    verify_bundle.py      the verifier
    MANIFEST.json         sha256 and size of every file above, the chain's ends and range
    MANIFEST.sig          base64 ed25519 signature of MANIFEST.json by the host key

The range picks events by time, then takes every event between the first and the last picked
by seq, so the exported events are one unbroken stretch of the chain; the hash the first one
chains from is in the manifest (signed), so a range that starts mid-chain verifies on its own.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import sqlite3
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.audit import GENESIS, read_anchor
from storage.auditcheckpoint import Parsed, iso_ms
from storage.deployments import list_deployments
from storage.incidents import list_incidents
from storage.private import write_atomic
from storage.versions import get_version

if TYPE_CHECKING:
    from storage.auditkey import HostKey

FORMAT = "vigil-evidence/1"
_ALL = 1 << 62
"""No limit on rows (the queries' ``limit``)."""
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class BundleRange:
    """Events with ``from_ms <= ts <= to_ms`` (None: from the first event)."""

    from_ms: int | None
    to_ms: int


@dataclass
class BundleSummary:
    """What went into a bundle."""

    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    incidents: int = 0
    deployments: int = 0
    config_changes: int = 0
    checkpoints: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()


def _events(
    conn: sqlite3.Connection, rng: BundleRange
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lo = conn.execute(
        "SELECT min(seq) FROM events WHERE ts >= ?", (rng.from_ms if rng.from_ms else -_ALL,)
    ).fetchone()[0]
    hi = conn.execute("SELECT max(seq) FROM events WHERE ts <= ?", (rng.to_ms,)).fetchone()[0]
    rows: list[dict[str, Any]] = []
    if lo is not None and hi is not None and lo <= hi:
        for seq, ts, kind, subject, message, data, prev_hash, row_hash in conn.execute(
            "SELECT seq, ts, kind, subject, message, data, prev_hash, hash FROM events "
            "WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (lo, hi),
        ):
            rows.append(
                {
                    "seq": seq,
                    "ts": ts,
                    "kind": kind,
                    "subject": subject,
                    "message": message,
                    "data": json.loads(data),
                    "prev_hash": prev_hash,
                    "hash": row_hash,
                }
            )
    anchor = read_anchor(conn) or (0, GENESIS)
    ends = {
        "count": len(rows),
        "first_seq": rows[0]["seq"] if rows else None,
        "prev_hash": rows[0]["prev_hash"] if rows else None,
        "last_seq": rows[-1]["seq"] if rows else None,
        "last_hash": rows[-1]["hash"] if rows else None,
        "anchor": {"seq": anchor[0], "hash": anchor[1]},
    }
    return rows, ends


def _overlaps(start: int | None, end: int | None, rng: BundleRange) -> bool:
    begun = start is None or start <= rng.to_ms
    return begun and (end is None or rng.from_ms is None or end >= rng.from_ms)


def _deployments(conn: sqlite3.Connection, rng: BundleRange) -> list[dict[str, Any]]:
    out = []
    for dep in reversed(list_deployments(conn, limit=_ALL)):
        if not _overlaps(dep.requested_ms, dep.finished_ms, rng):
            continue
        row = dep.to_json()
        versions = {}
        for role, vid in (
            ("from", dep.from_version_id),
            ("to", dep.to_version_id),
            ("rollback", dep.rollback_version_id),
        ):
            v = get_version(conn, vid) if vid is not None else None
            if v is not None:
                versions[role] = v.to_json()
        row["versions"] = versions
        out.append(row)
    return out


def _config_changes(
    deployments: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    changes: list[dict[str, Any]] = []
    diffs: dict[str, bytes] = {}
    for dep in deployments:
        if dep["kind"] != "config":
            continue
        name = f"config-changes/deployment-{dep['id']}-{_SAFE.sub('_', dep['model'])}.diff"
        if dep["config_diff"]:
            diffs[name] = dep["config_diff"].encode()
        changes.append(
            {
                "source": "deployment",
                "deployment": dep["id"],
                "model": dep["model"],
                "ts": dep["requested_ms"],
                "requested_by": dep["requested_by"],
                "approved_by": dep["approved_by"],
                "state": dep["state"],
                "notes": dep["notes"],
                "diff_file": name if dep["config_diff"] else None,
            }
        )
    for e in events:
        if e["kind"].startswith("config."):
            changes.append(
                {
                    "source": "event",
                    "seq": e["seq"],
                    "ts": e["ts"],
                    "kind": e["kind"],
                    "message": e["message"],
                    "data": e["data"],
                }
            )
    changes.sort(key=lambda c: (c["ts"], c.get("seq", 0)))
    return changes, diffs


def build(
    conn: sqlite3.Connection,
    *,
    key: HostKey,
    host: str,
    rng: BundleRange,
    created_ms: int,
    checkpoints: Parsed,
    host_check: dict[str, Any],
) -> tuple[dict[str, bytes], BundleSummary]:
    """The bundle's files by name, read in one transaction.

    Args:
        checkpoints: the host's own, verified; those of events in the range go in.
        host_check: ``{"ok", "text"}``: the whole chain's verification on the host, noted in
            the manifest (a bundle is still made from a broken chain: it is evidence).
    """
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        events, ends = _events(conn, rng)
        incidents = [
            i.to_json()
            for i in reversed(list_incidents(conn, since_ms=rng.from_ms, limit=_ALL))
            if i.opened_ms <= rng.to_ms
        ]
        deployments = _deployments(conn, rng)
    finally:
        if own:
            conn.execute("COMMIT")
    changes, diffs = _config_changes(deployments, events)
    in_range = {e["seq"]: e["hash"] for e in events}
    lines = [
        line
        for cp, line in zip(checkpoints.valid, checkpoints.lines, strict=True)
        if cp.seq in in_range
    ]
    files: dict[str, bytes] = {
        "events.jsonl": _jsonl(events),
        "incidents.jsonl": _jsonl(incidents),
        "deployments.jsonl": _jsonl(deployments),
        "config-changes.jsonl": _jsonl(changes),
        **diffs,
        "checkpoints.txt": "".join(line + "\n" for line in lines).encode(),
        "host-key.pub": key.public.pem().encode(),
        "verify_bundle.py": Path(__file__).with_name("bundle_verify.py").read_bytes(),
    }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "host": host,
        "created_ms": created_ms,
        "created": iso_ms(created_ms),
        "range": {
            "from_ms": rng.from_ms,
            "to_ms": rng.to_ms,
            "from": iso_ms(rng.from_ms) if rng.from_ms is not None else None,
            "to": iso_ms(rng.to_ms),
        },
        "events": ends,
        "key": key.public.fingerprint,
        "host_check": host_check,
    }
    files["README.md"] = readme(manifest).encode()
    manifest["files"] = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        for name, data in sorted(files.items())
    }
    body = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    files["MANIFEST.json"] = body
    files["MANIFEST.sig"] = base64.b64encode(key.sign(body)) + b"\n"
    summary = BundleSummary(
        events=len(events),
        first_seq=ends["first_seq"],
        last_seq=ends["last_seq"],
        incidents=len(incidents),
        deployments=len(deployments),
        config_changes=len(changes),
        checkpoints=len(lines),
        files=manifest["files"],
    )
    return files, summary


def top_dir(host: str, created_ms: int) -> str:
    """The bundle's one top directory: ``vigil-evidence-HOST-20250301T120000Z``."""
    stamp = iso_ms(created_ms).replace("-", "").replace(":", "")
    return f"vigil-evidence-{_SAFE.sub('_', host).strip('_') or 'host'}-{stamp}"


def write_tar(path: Path, files: dict[str, bytes], top: str, mtime_s: int) -> None:
    """Write ``files`` as a .tar.gz under ``top/``, owner-only, whole or not at all."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = mtime_s
            info.mode = 0o755 if name.endswith(".py") else 0o644
            tar.addfile(info, io.BytesIO(data))
    write_atomic(path, buf.getvalue())


def readme(m: dict[str, Any]) -> str:
    """README.md of a bundle, from its manifest (without ``files``)."""
    ev, rng = m["events"], m["range"]
    span = (
        f"events {ev['first_seq']}..{ev['last_seq']} of the host's audit chain "
        f"({ev['count']} events)"
        if ev["count"]
        else "no events (none in the range)"
    )
    return f"""# Vigil evidence bundle: {m["host"]}

Made {m["created"]} by `vigil audit export --format bundle`, for the time from
{rng["from"] or "the first event"} to {rng["to"]}: {span}.

Signed by the host key `{m["key"]}`. Compare this fingerprint with the one you keep for
this host (`vigil audit pubkey` prints it), or verify against that key with `--pubkey FILE`:
the bundle's own `host-key.pub` proves only that the bundle is whole, not whose it is.

## Verify it offline

Python 3.11 or later and the `cryptography` package; nothing from Vigil:

    python3 -m pip install cryptography       # if it is not installed
    python3 verify_bundle.py                  # run in this directory (or pass it, or the .tar.gz)
    python3 verify_bundle.py --pubkey FILE    # against a copy of the host key kept elsewhere

It exits 0 when all of this holds, and 1 naming what does not:

1. `MANIFEST.sig` is the ed25519 signature of `MANIFEST.json` by the host key.
2. Every file listed in the manifest has the sha256 listed there.
3. `events.jsonl` is an unbroken chain: seq counts up by one, each event's
   `hash = sha256(prev_hash + "\\n" + canonical)` where canonical is the compact, key-sorted
   JSON (UTF-8) of its seq, ts, kind, subject, message and data; the first event chains from
   the manifest's `events.prev_hash` (the events before the range are not needed) and the
   last is the manifest's `events.last_seq` and `last_hash`.
4. Every checkpoint in `checkpoints.txt` is signed by the host key and names an event of the
   chain with the same hash.
5. The host's own check of its whole chain passed when it made the bundle (`host_check` in
   the manifest: a chain found cut off or rewritten is still exported, but flagged).

## Files

- `events.jsonl`: the audit events, one JSON object a line, with `seq`, `prev_hash`, `hash`.
- `incidents.jsonl`: incidents open at any time in the range (opened, acknowledged,
  resolved, by whom, cause, evidence).
- `deployments.jsonl`: deployments in the range: who asked (`requested_by`), approval
  (`approval_required`, `approved_by`, `approved_ms`), the canary gate's evidence (`checks`),
  the outcome, and the `versions` moved between.
- `config-changes.jsonl`: config deploys and `config.*` events (reloads, refused reloads,
  rollbacks) in time order; `config-changes/*.diff`: each config deploy's unified diff
  (secret values were redacted when it was recorded).
- `checkpoints.txt`: the host's signed checkpoints of events in the range.
- `host-key.pub`: the host's ed25519 public key (PEM).
- `MANIFEST.json`, `MANIFEST.sig`: the sha256 of every file, the chain's ends, the range;
  its signature.

## What the bundle cannot prove alone

That no events were cut off the end of the host's chain after the range, or before the bundle
was made: for that, hold the chain against checkpoints kept off the host (the systemd journal,
a remote syslog or a webhook receiver), with
`journalctl -t vigil | grep vigil-checkpoint > cps.txt` and
`vigil audit verify --checkpoint cps.txt --pubkey FILE` on the host.
"""
