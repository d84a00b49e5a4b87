"""Who acts, for the audit trail: the token that authorised the request, and what the client
says about itself.

A named token (``vigil token create alice``) is the identity: ``by`` is ``alice`` whatever the
client sends. The ``X-Vigil-Operator`` header (``user@host``, sent by the CLI and the TUI) then
only adds detail, recorded as ``claimed`` where it differs. The default tokens are shared by
every local user who can read the data dir, so they name no person: there the header remains
the identity (as before named tokens existed), else the token's name (``local-operate``).

Events emitted while a request is handled carry the token's name (``token``) and the claim
through :func:`annotate`, which the agent's ``emit`` applies: the supervisor, the incident
book, silences and deploys record ``by`` from :func:`operator_of` without knowing of tokens.
Only the request's own task is annotated, not work it starts that outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from agent.serve.httpmessages import Request
from agent.serve.tokens import Grant
from storage.records import Event
from storage.text import printable

OPERATOR_HEADER = "X-Vigil-Operator"
MAX_CLAIM = 100
"""Characters of the header kept."""


@dataclass(frozen=True, slots=True)
class Acting:
    """Who a request acts as: ``by`` is what the audit trail records."""

    by: str
    token: str
    claimed: str | None
    task: asyncio.Task[object] | None


_ACTING: ContextVar[Acting | None] = ContextVar("vigil_acting", default=None)


def acting_for(request: Request, grant: Grant) -> Acting:
    """The identity of a request made with ``grant``'s token."""
    header = printable(request.headers.get(OPERATOR_HEADER, "").strip()[:MAX_CLAIM])
    if grant.local:
        by, claimed = header or grant.name, None
    else:
        by, claimed = grant.name, (header if header and header != grant.name else None)
    return Acting(by=by, token=grant.name, claimed=claimed, task=_current_task())


def operator_of(request: Request) -> str:
    """Who acts (``by`` in the audit trail): see the module's docstring."""
    acting: Acting | None = request.get("acting")
    return acting.by if acting is not None else "unknown"


@contextlib.contextmanager
def acting_as(acting: Acting) -> Iterator[None]:
    """Annotate the events emitted in this block (by this task) with ``acting``."""
    reset = _ACTING.set(acting)
    try:
        yield
    finally:
        _ACTING.reset(reset)


def annotate(event: Event) -> Event:
    """``event`` with the acting token's name (``token``) and the client's differing claim
    (``claimed``) in its data, when a request's own task emits it; keys already there win."""
    acting = _ACTING.get()
    if acting is None or acting.task is None or acting.task is not _current_task():
        return event
    extra = {"token": acting.token}
    if acting.claimed:
        extra["claimed"] = acting.claimed
    add = {k: v for k, v in extra.items() if k not in event.data}
    return dataclasses.replace(event, data={**event.data, **add}) if add else event


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no loop in this thread (a worker thread's emit)
        return None
