#!/usr/bin/env python3
"""Verify a Vigil evidence bundle offline: ``python3 verify_bundle.py [DIR or FILE.tar.gz]``.

Needs Python 3.11+ and the ``cryptography`` package, nothing else (not Vigil). Checks, in order:

1. ``MANIFEST.sig`` is the ed25519 signature of ``MANIFEST.json`` by the key in
   ``host-key.pub`` (or by ``--pubkey FILE``: pass a copy of the host's key kept elsewhere, or
   compare the fingerprint printed here with one you trust).
2. Every file the manifest lists has the sha256 it lists; nothing listed is missing.
3. ``events.jsonl`` is an unbroken chain: seq counts up by one from the manifest's
   ``first_seq``, the first event's ``prev_hash`` is the manifest's, each
   ``hash = sha256(prev_hash + "\\n" + canonical)`` (canonical: compact, key-sorted JSON of seq,
   ts, kind, subject, message, data), and it ends at the manifest's ``last_seq``/``last_hash``.
4. Each line of ``checkpoints.txt`` is signed by the same key and names an event of the
   chain with the same hash.
5. The host's own check of its whole chain, when it made the bundle, passed (the manifest's
   ``host_check``: a chain cut off or rewritten is still exported, as evidence, but flagged).

Exits 0 when everything holds, 1 with what does not (2: not a bundle, or an unreadable one).
This file is the bundle's own copy of ``storage/bundle_verify.py`` in Vigil.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

FORMAT = "vigil-evidence/1"
CHECKPOINT = re.compile(r"vigil-checkpoint v1 ([A-Za-z0-9+/]+=*) ([A-Za-z0-9+/]+=*)")


def load(where: Path) -> dict[str, bytes]:
    """The bundle's files by name (relative to its top directory), from a directory or a
    .tar.gz."""
    files: dict[str, bytes] = {}
    if where.is_dir():
        for p in sorted(where.rglob("*")):
            if p.is_file():
                files[p.relative_to(where).as_posix()] = p.read_bytes()
        return files
    with tarfile.open(where, "r:*") as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                files[m.name.split("/", 1)[1] if "/" in m.name else m.name] = f.read()
    return files


def public_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an ed25519 public key")
    return key


def fingerprint(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def signed(key: Any, sig: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(sig, data)
    except InvalidSignature:
        return False
    return True


def canonical(e: dict[str, Any]) -> str:
    body = {k: e[k] for k in ("seq", "ts", "kind", "subject", "message", "data")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_chain(text: str, ev: dict[str, Any], problems: list[str]) -> dict[int, str]:
    """Walk events.jsonl; the hash of each event by seq."""
    hashes: dict[int, str] = {}
    seq: Any = ev.get("first_seq")
    prev: Any = ev.get("prev_hash")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != ev.get("count"):
        problems.append(f"events.jsonl holds {len(lines)} events, the manifest {ev.get('count')}")
    for n, line in enumerate(lines, start=1):
        try:
            e = json.loads(line)
            digest = hashlib.sha256(f"{prev}\n{canonical(e)}".encode()).hexdigest()
        except (ValueError, KeyError, TypeError):
            problems.append(f"events.jsonl line {n} is not an event")
            return hashes
        if e["seq"] != seq:
            problems.append(f"events.jsonl line {n}: seq {e['seq']}, expected {seq}")
            return hashes
        if e["prev_hash"] != prev:
            problems.append(f"event {seq}: prev_hash does not link to the previous event")
            return hashes
        if e["hash"] != digest:
            problems.append(f"event {seq}: content does not match its hash (edited)")
            return hashes
        hashes[seq] = prev = e["hash"]
        seq += 1
    if lines and (seq - 1, prev) != (ev.get("last_seq"), ev.get("last_hash")):
        problems.append(f"the chain ends at {seq - 1}, the manifest says {ev.get('last_seq')}")
    return hashes


def check_checkpoints(text: str, key: Any, hashes: dict[int, str], problems: list[str]) -> int:
    ok = 0
    for n, m in enumerate(CHECKPOINT.finditer(text), start=1):
        try:
            payload = base64.b64decode(m.group(1), validate=True)
            sig = base64.b64decode(m.group(2), validate=True)
            cp = json.loads(payload)
            seq, want = cp["seq"], cp["hash"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            problems.append(f"checkpoint {n} cannot be read")
            continue
        if not signed(key, sig, payload):
            problems.append(f"checkpoint {n} (seq {seq}) is not signed by the host key")
        elif hashes.get(seq) != want:
            problems.append(f"checkpoint {n} covers event {seq}, which the chain does not hold")
        else:
            ok += 1
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Verify a Vigil evidence bundle offline.")
    ap.add_argument("bundle", nargs="?", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--pubkey", type=Path, help="the host's public key, kept apart from the bundle")
    args = ap.parse_args(argv)
    try:
        files = load(args.bundle)
        manifest_bytes = files["MANIFEST.json"]
        manifest = json.loads(manifest_bytes)
        sig = base64.b64decode(files["MANIFEST.sig"].strip(), validate=True)
        pem = args.pubkey.read_bytes() if args.pubkey else files["host-key.pub"]
        key = public_key(pem)
    except (OSError, KeyError, ValueError, tarfile.TarError, binascii.Error) as exc:
        print(f"not a readable Vigil evidence bundle: {args.bundle}: {exc!r}", file=sys.stderr)
        return 2
    if manifest.get("format") != FORMAT:
        print(f"not a {FORMAT} bundle: {args.bundle}", file=sys.stderr)
        return 2
    fp = fingerprint(key)
    if not signed(key, sig, manifest_bytes):
        print(f"BROKEN: MANIFEST.json is not signed by {fp} (altered, or another key)")
        return 1
    problems: list[str] = []
    for name, want in sorted(manifest["files"].items()):
        data = files.get(name)
        if data is None:
            problems.append(f"{name} is missing")
        elif hashlib.sha256(data).hexdigest() != want["sha256"]:
            problems.append(f"{name} does not match its sha256 in the manifest (altered)")
    extra = sorted(set(files) - set(manifest["files"]) - {"MANIFEST.json", "MANIFEST.sig"})
    ev = manifest["events"]
    hashes = check_chain(files.get("events.jsonl", b"").decode("utf-8"), ev, problems)
    checked = check_checkpoints(
        files.get("checkpoints.txt", b"").decode("utf-8"), key, hashes, problems
    )
    host_check = manifest.get("host_check") or {}
    if not host_check.get("ok", True):
        problems.append(f"the host's chain did not verify when this was made: {host_check['text']}")
    print(f"bundle of {manifest['host']}, signed by {fp}")
    for name in extra:
        print(f"note: {name} is not covered by the manifest (ignored)")
    if problems:
        for p in problems:
            print(f"BROKEN: {p}")
        return 1
    span = (
        f"events {ev['first_seq']}..{ev['last_seq']} form an unbroken chain "
        f"from {ev['prev_hash'][:16]}..."
        if ev["count"]
        else "no events in the range"
    )
    print(
        f"ok: {len(manifest['files'])} files match the signed manifest; {span}; "
        f"{checked} checkpoints verified"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
