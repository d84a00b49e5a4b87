"""The API routes a pipeline step asks before and around a deploy.

- ``POST /api/v1/models/{name}/canary`` (``operate``; body ``{"count": N}``, default 5, at most
  100): runs the model's canary now, N times one after another, through the agent's own probe
  of the model, so each run is recorded, judged and fed to a deploy's gate as any scheduled
  run; answers with the verdict and the figures (:mod:`agent.deploy.canarycheck`). Audited as
  ``model.canary_run`` with who asked. ``vigil canary MODEL`` calls it.
- ``GET /api/v1/config``: the config that runs against the file's, per process and model:
  a config deploy rolled back (the file still holds the change that was rolled back), or a
  change held while a deploy of the model is in flight (:mod:`agent.deploy.configdeploy`).

:func:`register` adds them to the API's route table (one line in ``build_app``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from agent.health.monitor import ModelMonitor
from agent.serve.httpmessages import Request, Response, json_response
from agent.serve.routing import Router
from probes.base import now_ms
from storage.records import Event

if TYPE_CHECKING:  # canary checks load statistics and more: only when one is asked for
    from agent.deploy.canarycheck import CanaryRun

__all__ = ["DEFAULT_COUNT", "register"]

DEFAULT_COUNT = 5


class CanaryHost(Protocol):
    """What the canary route needs of the agent (:class:`agent.runtime.daemon.Agent`)."""

    monitors: dict[str, ModelMonitor]

    def emit(self, event: Event) -> None:
        """Record an audit event."""

    async def probe(self, name: str) -> None:
        """Probe one model now (joining a run already out), and record the run."""


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status=status)


async def _count(request: Request) -> int:
    """The body's ``count``; ValueError names what was wrong."""
    body: Any = {}
    if request.body.strip():
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ValueError('body: expected a JSON object such as {"count": 5}')
    from agent.deploy.canarycheck import MAX_COUNT

    raw = body.get("count", DEFAULT_COUNT)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_COUNT:
        raise ValueError(f"count: expected a whole number from 1 to {MAX_COUNT}, got {raw!r}")
    return raw


async def _fresh_run(host: CanaryHost, name: str) -> CanaryRun | None:
    """One run of the model sent after this call began (a run already out when it was asked
    for measured the server before the request: it is waited for, and another is sent)."""
    asked = now_ms()
    from agent.deploy.canarycheck import CanaryRun

    for _ in range(3):
        mon = host.monitors.get(name)
        if mon is None:
            return None
        await host.probe(name)
        run = mon.last_run
        if run is not None and run.ts_ms >= asked:
            return CanaryRun(run, mon.probe.last_output if run.ok else None)
    return None


def register(app: Router, agent: object, operator_of: Callable[[Request], str]) -> None:
    """Add the routes to ``app``; ``operator_of`` names who acts (the API's own rule)."""

    async def canary(request: Request) -> Response:
        name = request.match_info["name"]
        host: CanaryHost = agent  # type: ignore[assignment]  # checked below
        monitors = getattr(agent, "monitors", None)
        if not isinstance(monitors, dict) or not hasattr(agent, "probe"):
            return _error(503, "this agent cannot run canaries")
        mon = monitors.get(name)
        if mon is None:
            known = ", ".join(sorted(monitors)) or "none"
            return _error(404, f"no model named {name!r}; known: {known}")
        try:
            count = await _count(request)
        except ValueError as exc:
            return _error(400, str(exc))
        by = operator_of(request)
        runs: list[CanaryRun] = []
        for _ in range(count):
            got = await _fresh_run(host, name)
            if got is None:
                return _error(409, f"model {name!r} was removed by a config reload meanwhile")
            runs.append(got)
        from agent.deploy.canarycheck import judge

        cfg = host.monitors[name].config
        report = judge(name, cfg.protocol, cfg.url, runs)
        host.emit(
            Event(
                ts_ms=now_ms(),
                kind="model.canary_run",
                subject=f"model:{name}",
                message=f"canary run {count} times by {by}: {report.verdict} "
                f"({report.ok}/{count} ok)",
                data={
                    "by": by,
                    "count": count,
                    "verdict": report.verdict,
                    "ok": report.ok,
                    "failures": [f.to_json() for f in report.failures],
                },
            )
        )
        return json_response({"report": report.to_json()})

    async def config(request: Request) -> Response:
        # The deploy engine's config deploys (agent.deploy.configdeploy), through the agent
        # (which answers without making the engine when it has none); a stand-in agent in a
        # test may have neither.
        state = getattr(agent, "config_state", None)
        if not callable(state):
            return _error(503, "this agent runs no config deploys")
        return json_response(state())

    app.add_post("/api/v1/models/{name}/canary", canary)
    app.add_get("/api/v1/config", config)
