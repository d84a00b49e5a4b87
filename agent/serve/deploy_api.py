"""The deploy routes of the API: deploy, approve, roll back, record; list and show.

Changes need the ``operate`` scope (the API's bearer check says so by method), reads ``read``.
Who acts is the ``X-Vigil-Operator`` header, as for every other action. A refused request
answers with the engine's :class:`~agent.deploy.errors.DeployError` status and message (400 bad
input, 403 not allowed, 404 unknown, 409 in flight or in the wrong state), and nothing was
switched. :func:`register` adds :data:`ROUTES` to the API's route table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import ModelConfig
from agent.deploy.errors import DeployError
from agent.serve.httpmessages import Request, Response, json_response, whole_number
from agent.serve.routing import Router
from probes.base import now_ms
from storage.text import printable
from storage.units import parse_duration

if TYPE_CHECKING:
    from agent.deploy.engine import DeployEngine

__all__ = ["ROUTES", "Call", "DeployApi", "register"]

DEPLOY_STRATEGIES = ("in-place", "blue-green")
"""What a deploy may ask for (``record`` is ``/record``'s, not a deploy's)."""
KPI_SINCE = "30d"
"""The KPI route's window when it names none."""
MAX_TEXT = 2000
"""Longest free text (notes) kept from a request; an id or a sha at most 200."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request, as the deploy handlers see it (whatever server carried it)."""

    params: Mapping[str, str]
    query: Mapping[str, str]
    body: Mapping[str, Any]
    operator: str


Answer = tuple[int, dict[str, Any]]


def _text(body: Mapping[str, Any], key: str, limit: int = 200) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DeployError(f"{key}: expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise DeployError(f"{key}: expected at most {limit} characters, got {len(value)}")
    return printable(value)


def _bake(body: Mapping[str, Any]) -> float | None:
    raw = body.get("bake")
    if raw is None:
        return None
    try:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError
        seconds = parse_duration(raw) if isinstance(raw, str) else float(raw)
    except (ValueError, OverflowError):  # OverflowError: an integer too large for a float
        raise DeployError(
            f"bake: expected a duration such as '10m' or '90s', got {raw!r}"
        ) from None
    if not 0 < seconds <= 7 * 86400:
        raise DeployError(f"bake: expected a duration above 0 and at most 7d, got {raw!r}")
    return seconds


def _check_strategy(model: ModelConfig, asked: str | None) -> None:
    """A deploy that names its strategy must name the model's own: the strategy is the
    model's ``[model.deploy]`` (blue-green needs its ports and switch there), so a request
    can only confirm it, and one that expects otherwise is refused before anything is hashed."""
    if asked is None:
        return
    if asked not in DEPLOY_STRATEGIES:
        raise DeployError(f"strategy: expected in-place or blue-green, got {asked!r}")
    if model.deploy is None:
        return  # the engine refuses the model with its own reason (no [model.deploy] link)
    if model.deploy.strategy != asked:
        raise DeployError(
            f"strategy: model {model.name!r} deploys {model.deploy.strategy} (its "
            f"[model.deploy] strategy), not {asked}; a {asked} deploy needs strategy = "
            f'"{asked}" in its config'
        )


def _deploy_settings(model: ModelConfig) -> dict[str, Any] | None:
    """What a client offering a deploy needs to know of the model's ``[model.deploy]``; None
    for a model that cannot be deployed (no table, or no link)."""
    dc = model.deploy
    if dc is None or dc.link is None:
        return None
    return {
        "strategy": dc.strategy,
        "bake_s": dc.bake_s,
        "require_approval": dc.require_approval,
        "approver_must_differ": dc.approver_must_differ,
    }


def _lineage(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "actor": _text(body, "actor"),
        "pipeline_id": _text(body, "pipeline_id"),
        "git_sha": _text(body, "git_sha"),
        "notes": _text(body, "notes", MAX_TEXT) or "",
    }


def _deployment_id(params: Mapping[str, str]) -> int:
    raw = params.get("id", "")
    number = whole_number(raw)
    if number is None:
        raise DeployError(f"expected a deployment id (a number), got {raw!r}", 404)
    return number


class DeployApi:
    """The handlers, bound to one agent."""

    def __init__(self, agent: object) -> None:
        self.agent = agent

    @property
    def engine(self) -> DeployEngine:
        """The agent's deploy engine (a stand-in agent in a test may have none: 503). The
        real agent makes it on first need (agent.runtime.deploying), so it, and the modules
        these handlers use, are imported here, not with the API."""
        from agent.deploy.engine import DeployEngine

        engine = getattr(self.agent, "deploys", None)
        if not isinstance(engine, DeployEngine):
            raise DeployError("this agent runs no deploy engine", 503)
        return engine

    async def deploy(self, call: Call) -> Answer:
        """``POST /api/v1/models/{name}/deploy``: ``{"artifact": PATH, "strategy"?, "bake"?,
        "actor"?, "pipeline_id"?, "git_sha"?, "notes"?}``."""
        from agent.deploy.engine import DeployRequest

        artifact = _text(call.body, "artifact", 4096)
        if artifact is None or not Path(artifact).is_absolute():
            raise DeployError(
                f"artifact: expected the absolute path of the model file or directory, "
                f"got {artifact!r}"
            )
        _check_strategy(self.engine.model(call.params["name"]), _text(call.body, "strategy", 20))
        dep = await self.engine.request(
            DeployRequest(
                model=call.params["name"],
                artifact=Path(artifact),
                operator=call.operator,
                bake_s=_bake(call.body),
                **_lineage(call.body),
            )
        )
        return 202, {"deployment": await self._show(dep.id)}

    async def approve(self, call: Call) -> Answer:
        """``POST /api/v1/deployments/{id}/approve``."""
        dep = await self.engine.approve(_deployment_id(call.params), call.operator)
        return 200, {"deployment": await self._show(dep.id)}

    async def rollback(self, call: Call) -> Answer:
        """``POST /api/v1/models/{name}/rollback``: ``{"to"?: VERSION, "bake"?, ...}``."""
        lineage = _lineage(call.body)
        lineage["bake_s"] = _bake(call.body)
        dep = await self.engine.rollback(
            call.params["name"], _text(call.body, "to"), call.operator, **lineage
        )
        return 202, {"deployment": await self._show(dep.id)}

    async def record(self, call: Call) -> Answer:
        """``POST /api/v1/models/{name}/record``: ``{"artifact": PATH | "version_hash": H,
        "actor"?, "pipeline_id"?, "git_sha"?, "notes"?}``."""
        artifact = _text(call.body, "artifact", 4096)
        if artifact is not None and not Path(artifact).is_absolute():
            raise DeployError(f"artifact: expected an absolute path, got {artifact!r}")
        dep = await self.engine.record(
            call.params["name"],
            call.operator,
            artifact=Path(artifact) if artifact else None,
            version_hash=_text(call.body, "version_hash"),
            **_lineage(call.body),
        )
        return 201, {"deployment": await self._show(dep.id)}

    async def list(self, call: Call) -> Answer:
        """``GET /api/v1/deployments[?model=NAME&limit=N]``, newest first."""
        from agent.deploy.queries import deployments_json

        model = call.query.get("model") or None
        raw = call.query.get("limit") or "100"
        limit = whole_number(raw)
        if limit is None or not 1 <= limit <= 1000:
            raise DeployError(f"limit: expected a whole number 1-1000, got {raw!r}")
        rows = await self.engine.store.read(lambda c: deployments_json(c, model, limit))
        return 200, {"deployments": rows}

    async def kpi(self, call: Call) -> Answer:
        """``GET /api/v1/deployments/kpi[?model=NAME&since=30d]``: the DORA four keys over the
        window ending now, for the host and per model, and the window's deploys
        (:mod:`storage.deploykpi`, as reports and ``/metrics`` compute them)."""
        from storage.deploykpi import load_kpis

        model = call.query.get("model") or None
        if model is not None:
            self.engine.model(model)  # 404 for an unknown model
        raw = call.query.get("since") or KPI_SINCE
        try:
            span_s = parse_duration(raw)
        except ValueError:
            span_s = 0.0
        if span_s <= 0 or raw.strip().startswith("-"):
            raise DeployError(f"since: expected a duration such as '30d' or '24h', got {raw!r}")
        until = now_ms()
        since = until - int(span_s * 1000)
        kpis = await self.engine.store.read(
            lambda c: load_kpis(c, since_ms=since, until_ms=until, model=model)
        )
        return 200, {
            "since_ms": kpis.since_ms,
            "until_ms": kpis.until_ms,
            "host": asdict(kpis.host),
            "models": [asdict(k) for k in kpis.models],
            "deployments": [asdict(r) for r in kpis.rows],
        }

    async def show(self, call: Call) -> Answer:
        """``GET /api/v1/deployments/{id}``: with its versions and, while baking, progress."""
        return 200, {"deployment": await self._show(_deployment_id(call.params))}

    async def versions(self, call: Call) -> Answer:
        """``GET /api/v1/models/{name}/versions``."""
        from agent.deploy.queries import versions_json

        name = call.params["name"]
        model = self.engine.model(name)  # 404 for an unknown model
        doc = await self.engine.store.read(lambda c: versions_json(c, name))
        return 200, {**doc, "deploy": _deploy_settings(model)}

    async def _show(self, deployment_id: int) -> dict[str, Any]:
        from agent.deploy.queries import deployment_json

        dep = await self.engine.get(deployment_id)
        runner = self.engine.active.get(dep.model)
        progress = runner.progress() if runner is not None and runner.dep.id == dep.id else {}
        return await self.engine.store.read(lambda c: deployment_json(c, dep, progress))


Handler = Callable[[DeployApi, Call], Awaitable[Answer]]

ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/api/v1/models/{name}/deploy", DeployApi.deploy),
    ("POST", "/api/v1/models/{name}/rollback", DeployApi.rollback),
    ("POST", "/api/v1/models/{name}/record", DeployApi.record),
    ("GET", "/api/v1/models/{name}/versions", DeployApi.versions),
    ("GET", "/api/v1/deployments", DeployApi.list),
    ("GET", "/api/v1/deployments/kpi", DeployApi.kpi),
    ("GET", "/api/v1/deployments/{id}", DeployApi.show),
    ("POST", "/api/v1/deployments/{id}/approve", DeployApi.approve),
)
"""Method, path pattern and handler of every deploy route."""


async def answer(api: DeployApi, handler: Handler, call: Call) -> Answer:
    """Run a handler; a refusal becomes ``{"error": ...}`` with its status."""
    try:
        return await handler(api, call)
    except DeployError as exc:
        return exc.status, {"error": str(exc)}


def register(app: Router, agent: object, operator_of: Callable[[Request], str]) -> None:
    """Add the deploy routes to ``app``; ``operator_of`` names who acts (the API's own rule)."""
    api = DeployApi(agent)

    def route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            body: Any = {}
            if request.method == "POST" and request.body.strip():
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    return json_response({"error": "body: expected a JSON object"}, status=400)
            call = Call(dict(request.match_info), request.query, body, operator_of(request))
            status, doc = await answer(api, handler, call)
            return json_response(doc, status=status)

        return serve

    for method, path, handler in ROUTES:
        app.add_route(method, path, route(handler))
