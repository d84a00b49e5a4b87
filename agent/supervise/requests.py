"""What a managed process is asked to do: a :class:`Request` from an operator (start, stop,
restart, release) or from the process's own hang detection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = ["OPERATOR_REQUESTS", "Request", "RequestKind"]


class RequestKind(StrEnum):
    """What the state machine is asked to do. Everything but ``hang`` is an operator's."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RELEASE = "release"
    HANG = "hang"


OPERATOR_REQUESTS = frozenset(
    {RequestKind.START, RequestKind.STOP, RequestKind.RESTART, RequestKind.RELEASE}
)


@dataclass(frozen=True, slots=True)
class Request:
    """One request to a managed process's state machine.

    Attributes:
        kind: What is asked.
        by: Who asked (an operator's name), or, for a hang, why it was decided.
        decided_ms: When a hang was decided (the deciding probe's answer), UTC epoch ms.
        began_ms: When the fault behind a hang began (the first unanswered request).
        evidence: More for the audit event (key -> JSON value).
    """

    kind: RequestKind
    by: str
    decided_ms: int | None = None
    began_ms: int | None = None
    evidence: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def planned(self) -> bool:
        """Whether it is an operator's: planned from the moment it is made."""
        return self.kind in OPERATOR_REQUESTS
