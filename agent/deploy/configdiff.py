"""What a config deploy records of the change: its tables as TOML, their diff and their hash.

A config deploy changes one ``[[process]]`` (command, environment, ...) and/or one model's
``[model.canary]``. Each table is rendered as TOML from the running config's records (the
fields that differ from their defaults, ``name`` first, the environment as its own
``[process.env]`` table so each variable is its own line of the diff), and the deployment keeps
the unified diff of the old and the new rendering.

Secrets never reach the diff, the database or the audit trail: the model's API key is never
rendered (its ``api_key_env`` / ``api_key_file`` name where it is, not what it is), and a value
under a key that names a secret (``HF_TOKEN``, ``API_KEY``, ``password``, ``Authorization``, ...)
is shown as ``"(secret)"``, or ``"(secret, changed)"`` on the new side when it changed, so a
rotated key is a visible change without its value. The hash that tells a resuming agent whether
the new table is what runs is taken over the same redacted text. Pure.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config import ProcessConfig

__all__ = [
    "REDACTED",
    "SECRET_KEY",
    "canary_toml",
    "diff_tables",
    "process_toml",
    "table_hash",
]

SECRET_KEY = re.compile(
    r"(?i)(token|secret|passw|pwd|api[_-]?key|access[_-]?key|private|credential|auth|cookie|"
    r"session|signature|bearer|^key$|_key$)"
)
"""Keys whose values are secrets: shown as :data:`REDACTED`, never as they are."""
REDACTED = "(secret)"
CHANGED = "(secret, changed)"
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if _BARE.fullmatch(name) else json.dumps(name)


def _value(value: Any, before: Any = None, *, secret: bool = False, new_side: bool = False) -> str:
    """One TOML value; on the new side of a diff (``new_side``), ``before`` is the same key's
    value on the old side (a secret that differs from it reads ``(secret, changed)``)."""
    if secret:
        return json.dumps(CHANGED if new_side and before != value else REDACTED)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # escapes control characters: the diff is printed
    if isinstance(value, Mapping):
        theirs = before if isinstance(before, Mapping) else {}
        inner = ", ".join(
            f"{_key(str(k))} = "
            + _value(v, theirs.get(k), secret=bool(SECRET_KEY.search(str(k))), new_side=new_side)
            for k, v in value.items()
        )
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if value is None:
        return '""'
    return json.dumps(str(value))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def process_toml(p: ProcessConfig, before: ProcessConfig | None = None) -> str:
    """``p`` as a ``[[process]]`` table (only its fields that are not their defaults).

    Args:
        before: given when ``p`` is the new side of a diff, the old side: a secret that
            differs from its value there reads ``(secret, changed)``. None renders ``p`` as it
            is (the old side, or a table alone for its hash).
    """
    lines = ["[[process]]", f"name = {_value(p.name)}"]
    for f in dataclasses.fields(p):
        if f.name in ("name", "env"):
            continue
        value = getattr(p, f.name)
        if value == _default(f):
            continue
        lines.append(f"{f.name} = {_value(value)}")
    if p.env:
        theirs = before.env if before is not None else {}
        lines += ["", "[process.env]"]
        for k, v in p.env.items():
            secret = bool(SECRET_KEY.search(k))
            shown = _value(v, theirs.get(k), secret=secret, new_side=before is not None)
            lines.append(f"{_key(k)} = {shown}")
    return "\n".join(lines) + "\n"


def canary_toml(
    model: str, canary: Mapping[str, Any], before: Mapping[str, Any] | None = None
) -> str:
    """A model's ``[model.canary]`` table (``before``: as for :func:`process_toml`)."""
    theirs = before or {}
    lines = [f"[model.canary]  # of model {json.dumps(model)}"]
    for k, v in canary.items():
        secret = bool(SECRET_KEY.search(str(k)))
        shown = _value(v, theirs.get(k), secret=secret, new_side=before is not None)
        lines.append(f"{_key(str(k))} = {shown}")
    return "\n".join(lines) + "\n"


def table_hash(text: str) -> str:
    """``sha256:<hex>`` of a rendered table (redacted: the hash holds no secret either)."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def diff_tables(old: str, new: str, what: str, where: str) -> str:
    """The unified diff of two renderings of ``what`` (``process srv``): the running table
    against the one in ``where`` (the config file)."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{what} (running)",
            tofile=f"{what} ({where})",
        )
    )
