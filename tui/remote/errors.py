"""How the TUI's client words what went wrong, and decodes what the agent answered.

Every failure talking to an agent becomes one :class:`AgentError` whose message is fit to show
a person. The helpers here turn an agent's JSON (or error body) into data or such an error, so
the client's request methods (:mod:`tui.remote.client`, :mod:`tui.remote.deploycalls`) stay
one line of path and one of decoding each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal, TypeVar
from urllib.parse import quote

__all__ = [
    "AgentError",
    "ErrorKind",
    "decode",
    "error_text",
    "parse_json",
    "scope_refusal",
    "seg",
]

ErrorKind = Literal["unreachable", "timeout", "rejected", "forbidden", "http", "protocol", "config"]
"""Why a request failed, for screens that colour or word states differently."""

T = TypeVar("T")


class AgentError(Exception):
    """Any failure talking to an agent, with a message fit to show a person.

    Attributes:
        message: What went wrong, e.g. ``"token rejected"`` or ``"timeout after 3.0s"``.
        kind: The failure's class (see :data:`ErrorKind`).
    """

    def __init__(
        self, message: str, kind: ErrorKind = "protocol", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.status = status
        """The HTTP status when the agent answered with an error (404, 409...)."""


def seg(value: str) -> str:
    """One path segment, percent-encoded: names come from the agent and may hold anything."""
    return quote(value, safe="")


def parse_json(body: bytes, path: str) -> Any:
    """``body`` decoded, or an :class:`AgentError` naming ``path``."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentError(f"bad JSON from {path}: {exc}", "protocol") from exc


def scope_refusal(scope: str | None, body: bytes) -> bool:
    """Whether a 403 is about the token's scope, or the action's own refusal (a requester
    approving their own deploy) that leaves the token's other actions as they were."""
    if scope == "operate":
        return False
    reason = error_text(body)
    return not reason or "scope" in reason or "read-only" in reason


def error_text(body: bytes) -> str:
    """The ``error`` field of a JSON error body, or a short prefix of a non-JSON one."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return ""


def decode(build: Callable[[], T], what: str) -> T:
    """Run ``build`` over decoded JSON, turning a wrong shape into an :class:`AgentError`."""
    try:
        return build()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AgentError(
            f"bad JSON from agent ({what}): {exc.__class__.__name__}: {exc}", "protocol"
        ) from exc
