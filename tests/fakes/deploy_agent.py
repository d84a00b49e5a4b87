"""The triage fake agent with deploys (issue 16): ``GET /api/v1/deployments[/{id}]``,
``GET /api/v1/models/{name}/versions`` (with each model's ``deploy`` settings) and the deploy,
approve and rollback actions, answering as ``agent/serve/deploy_api.py`` does (the same JSON,
the same refusals: 400 for an artifact that is not there or a strategy not the model's, 409
naming the deploy in flight, 403 when the requester approves their own deploy). What is posted
is recorded in ``actions`` (path, operator header, scope) and ``posted`` (path, JSON body or
None). The fake host's artifacts are the paths in ``artifacts``; any other is missing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from storage.units import parse_duration
from tests.fakes.agent_api import sample_status
from tests.fakes.triage_agent import FIXED_NOW_MS, TriageAgent

MIN = 60_000
HOUR = 60 * MIN


def _hash(n: int) -> str:
    return "sha256:" + f"{n:x}" * 64


def sample_versions(now: int) -> dict[str, list[dict[str, Any]]]:
    """Per model, its versions as ``GET /api/v1/models/{name}/versions`` lists them."""

    def version(vid: int, model: str, created: int, **kw: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "id": vid,
            "model": model,
            "hash": _hash(vid + 9),
            "path": f"/srv/models/{model}/v{vid}",
            "kind": "directory",
            "size_bytes": 4096 * vid,
            "files": 2,
            "created_ms": created,
            "registered_ms": created + MIN,
            "actor": "alice@ci",
            "pipeline_id": f"gh-{100 + vid}",
            "git_sha": f"{vid}" * 40,
            "notes": "",
            "replaced_version_id": vid - 1 if vid > 1 else None,
            "known_good_ms": None,
            "outcome": None,
            "known_good": False,
            "current": False,
        }
        base.update(kw)
        return base

    good = {"known_good": True, "outcome": "promoted"}
    return {
        "llama": [
            version(4, "llama", now - 10 * MIN, notes="int8 quantised"),
            version(3, "llama", now - 3 * HOUR, current=True, known_good_ms=now - HOUR, **good),
            version(2, "llama", now - 5 * HOUR, outcome="rolled_back", actor="bob@ops"),
            version(1, "llama", now - 30 * HOUR, known_good_ms=now - 24 * HOUR, **good),
        ],
        "embedder": [
            version(6, "embedder", now - 20 * MIN, actor="carol@ci"),
            version(5, "embedder", now - 48 * HOUR, current=True, known_good_ms=now, **good),
        ],
    }


def sample_deploy_settings() -> dict[str, dict[str, Any]]:
    """The deploy settings of the models that have a ``[model.deploy]`` link (llama, embedder;
    whisper and fresh have none)."""
    return {
        "llama": {
            "strategy": "in-place",
            "bake_s": 300.0,
            "require_approval": False,
            "approver_must_differ": True,
        },
        "embedder": {
            "strategy": "blue-green",
            "bake_s": 600.0,
            "require_approval": True,
            "approver_must_differ": True,
        },
    }


def sample_deployments(now: int) -> list[dict[str, Any]]:
    """Deployments newest first, as ``GET /api/v1/deployments`` lists them: one baking, one
    awaiting approval, one promoted, one rolled back, one recorded."""

    def dep(did: int, model: str, state: str, to: int, requested: int, **kw: Any) -> dict:
        base: dict[str, Any] = {
            "id": did,
            "model": model,
            "kind": "artifact",
            "strategy": "in-place",
            "state": state,
            "requested_by": "alice@ci",
            "requested_ms": requested,
            "state_since_ms": requested,
            "step": "",
            "process": f"{model}-srv",
            "from_version_id": to - 1 if to > 1 else None,
            "to_version_id": to,
            "rollback_version_id": None,
            "approval_required": False,
            "approved_by": None,
            "approved_ms": None,
            "finished_ms": None,
            "bake_s": 300.0,
            "checks": {},
            "error": None,
            "config_diff": "",
            "pipeline_id": f"gh-{100 + to}",
            "git_sha": f"{to}" * 40,
            "notes": "",
            "addresses": {},
            "incident_id": None,
            "in_flight": state not in ("promoted", "rolled_back", "failed", "cancelled"),
            "version_hash": _hash(to + 9),
        }
        base.update(kw)
        return base

    failed_verdict = {
        "outcome": "fail",
        "checks": [
            {"check": "canaries", "ok": True, "detail": "2 ok"},
            {"check": "golden", "ok": False, "detail": "answer differs from the previous one"},
            {"check": "incidents", "ok": True, "detail": "none"},
            {"check": "drift", "ok": True, "detail": "none"},
        ],
    }
    return [
        dep(7, "llama", "baking", 4, now - 4 * MIN, state_since_ms=now - 3 * MIN),
        dep(
            6,
            "embedder",
            "awaiting_approval",
            6,
            now - 2 * MIN,
            approval_required=True,
            requested_by="carol@ci",
        ),
        dep(
            5,
            "llama",
            "promoted",
            3,
            now - 2 * HOUR,
            approval_required=True,
            approved_by="bob@ops",
            approved_ms=now - 2 * HOUR + MIN,
            finished_ms=now - HOUR,
        ),
        dep(
            4,
            "llama",
            "rolled_back",
            2,
            now - 5 * HOUR,
            finished_ms=now - 5 * HOUR + 6 * MIN,
            rollback_version_id=1,
            error="the canary gate failed: golden: answer differs from the previous one",
            checks={"verdict": failed_verdict},
            incident_id=9,
        ),
        dep(
            3,
            "embedder",
            "promoted",
            5,
            now - 48 * HOUR,
            strategy="record",
            bake_s=0.0,
            finished_ms=now - 48 * HOUR,
        ),
    ]


def sample_progress(now: int) -> dict[str, Any]:
    """The bake of the deploy in flight: 3 of 5 minutes, 2 of 3 good canaries in a row."""
    return {
        "bake_ends_ms": now + 2 * MIN,
        "canaries": 7,
        "good_in_a_row": 2,
        "needed": 3,
        "failed": 1,
        "checks": [
            {"check": "canaries", "ok": None, "detail": "2 of 3 ok in a row"},
            {"check": "golden", "ok": True, "detail": "same answer"},
            {"check": "incidents", "ok": True, "detail": "none"},
            {"check": "drift", "ok": True, "detail": "none"},
        ],
    }


def sample_kpis(now: int) -> dict[str, Any]:
    """``GET /api/v1/deployments/kpi`` over 30 days (the host's keys; models and rows left
    out: the view shows the host's)."""
    return {
        "since_ms": now - 30 * 24 * HOUR,
        "until_ms": now,
        "host": {
            "model": None,
            "changes": 3,
            "promoted": 2,
            "failed_changes": 1,
            "per_day": 2 / 30,
            "lead_time_median_ms": 2.5 * HOUR,
            "change_failure_rate": 1 / 3,
            "time_to_restore_median_ms": 6 * MIN,
        },
        "models": [],
        "deployments": [],
    }


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


@dataclass
class DeployAgent(TriageAgent):
    """The triage fake agent with the deploy routes."""

    deployments: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    posted: list[tuple[str, Any]] = field(default_factory=list)
    """(method and path, JSON body or None) of every deploy action."""
    kpis: dict[str, Any] | None = None
    """The KPI route's answer; None answers 404, as an agent before the route does."""
    deploy_settings: dict[str, dict[str, Any]] = field(default_factory=sample_deploy_settings)
    """Per model with a ``[model.deploy]`` link, its settings (the versions route says them)."""
    settings_known: bool = True
    """False: the versions route has no ``deploy`` key, as an agent before it."""
    artifacts: set[str] = field(default_factory=lambda: {"/srv/models/llama/v5"})
    """The paths a deploy finds on the fake host."""

    def __post_init__(self) -> None:
        super().__post_init__()
        now = self.status.now_ms
        self.deployments = sample_deployments(now)
        self.versions = sample_versions(now)
        self.progress = {7: sample_progress(now)}
        self.kpis = sample_kpis(now)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = unquote(request.path)
        parts = path.removeprefix("/api/v1/").split("/")
        deploys = parts[0] == "deployments" or (
            parts[0] == "models"
            and len(parts) == 3
            and parts[2] in ("versions", "rollback", "deploy")
        )
        if not deploys:
            return await super()._handle(request)
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        scope = self._scope(request)
        if scope is None:
            return _error("token rejected", 401)
        if request.method == "GET":
            return self._read(parts, request.query)
        operator = request.headers.get("X-Vigil-Operator", "")
        self.actions.append((f"POST {path}", operator, scope))
        body = await request.json() if request.can_read_body else None
        self.posted.append((f"POST {path}", body))
        if scope != "operate":
            return _error("this token is read-only; the action needs the operate scope", 403)
        if parts[0] == "deployments":
            return self._approve(parts[1], operator)
        if parts[2] == "deploy":
            return self._deploy(parts[1], body or {}, operator)
        return self._rollback(parts[1], body or {}, operator)

    def _read(self, parts: list[str], query: Any) -> web.Response:
        if parts[0] == "models":
            if parts[1] not in {m.name for m in self.status.models}:
                return _error(f"no model named {parts[1]!r}", 404)
            listed = self.versions.get(parts[1], [])
            current = next((v["id"] for v in listed if v["current"]), None)
            doc = {"model": parts[1], "current_version_id": current, "versions": listed}
            if self.settings_known:
                doc["deploy"] = self.deploy_settings.get(parts[1])
            return web.json_response(doc)
        if parts == ["deployments", "kpi"]:
            if self.kpis is None:
                return _error("expected a deployment id (a number), got 'kpi'", 404)
            self.last_query = dict(query)
            return web.json_response(self.kpis)
        if len(parts) == 1:
            model = query.get("model")
            rows = [d for d in self.deployments if not model or d["model"] == model]
            return web.json_response({"deployments": rows[: int(query.get("limit", "100"))]})
        dep = self._find(parts[1])
        if dep is None:
            return _error(f"no deployment with id {parts[1]}", 404)
        return web.json_response({"deployment": self._show(dep)})

    def _find(self, raw: str) -> dict[str, Any] | None:
        return next((d for d in self.deployments if str(d["id"]) == raw), None)

    def _show(self, dep: dict[str, Any]) -> dict[str, Any]:
        by_id = {v["id"]: v for vs in self.versions.values() for v in vs}
        roles = {
            "from": "from_version_id",
            "to": "to_version_id",
            "rollback": "rollback_version_id",
        }
        versions = {r: by_id.get(dep[k]) for r, k in roles.items() if dep[k] is not None}
        progress = self.progress.get(dep["id"], {}) if dep["state"] == "baking" else {}
        return {**dep, "versions": versions, "progress": progress}

    def _approve(self, raw: str, operator: str) -> web.Response:
        dep = self._find(raw)
        if dep is None:
            return _error(f"no deployment with id {raw}", 404)
        if dep["state"] != "awaiting_approval":
            return _error(f"deployment {raw} is {dep['state']}, not awaiting approval", 409)
        if operator == dep["requested_by"]:
            return _error(
                f"{operator} requested deployment {raw}; approver_must_differ: another "
                "operator must approve it",
                403,
            )
        now = self.status.now_ms
        dep.update(state="requested", approved_by=operator, approved_ms=now, state_since_ms=now)
        return web.json_response({"deployment": self._show(dep)})

    def _in_flight(self, model: str) -> dict[str, Any] | None:
        return next((d for d in self.deployments if d["model"] == model and d["in_flight"]), None)

    def _deploy(self, model: str, body: dict[str, Any], operator: str) -> web.Response:
        """Refused as the agent refuses (in its order), else a new version and deployment."""
        artifact = body.get("artifact")
        if not isinstance(artifact, str) or not artifact.startswith("/"):
            return _error(
                "artifact: expected the absolute path of the model file or directory, "
                f"got {artifact!r}",
                400,
            )
        known = {m.name for m in self.status.models}
        if model not in known:
            return _error(f"no model named {model!r}; known: {', '.join(sorted(known))}", 404)
        settings = self.deploy_settings.get(model)
        asked = body.get("strategy")
        if asked is not None and asked not in ("in-place", "blue-green"):
            return _error(f"strategy: expected in-place or blue-green, got {asked!r}", 400)
        if settings is None:
            return _error(
                f"model {model!r} has no [model.deploy] link: expected the path of the "
                "'current' symlink its process's command reads the model through",
                400,
            )
        if asked is not None and asked != settings["strategy"]:
            return _error(
                f"strategy: model {model!r} deploys {settings['strategy']} (its "
                f'[model.deploy] strategy), not {asked}; a {asked} deploy needs strategy = "'
                f'{asked}" in its config',
                400,
            )
        bake_s = float(settings["bake_s"])
        if body.get("bake") is not None:
            try:
                bake_s = parse_duration(str(body["bake"]))
            except ValueError:
                return _error(
                    f"bake: expected a duration such as '10m' or '90s', got {body['bake']!r}", 400
                )
        flying = self._in_flight(model)
        if flying is not None:
            return _error(
                f"model {model!r} already has deployment {flying['id']} in flight (state "
                f"{flying['state']}, requested by {flying['requested_by']})",
                409,
            )
        if artifact not in self.artifacts:
            return _error(
                f"artifact {artifact}: No such file or directory; expected a readable model "
                "file or directory",
                400,
            )
        now = self.status.now_ms
        listed = self.versions.setdefault(model, [])
        vid = 1 + max((v["id"] for vs in self.versions.values() for v in vs), default=0)
        digest = "sha256:" + hashlib.sha256(artifact.encode()).hexdigest()
        current = next((v for v in listed if v["current"]), None)
        version = dict(
            listed[0] if listed else {},
            id=vid,
            model=model,
            hash=digest,
            path=artifact,
            created_ms=now,
            registered_ms=now,
            actor=operator,
            notes=str(body.get("notes") or ""),
            replaced_version_id=None if current is None else current["id"],
            known_good=False,
            known_good_ms=None,
            outcome=None,
            current=False,
        )
        listed.insert(0, version)
        waits = bool(settings["require_approval"])
        new = dict(self.deployments[0], id=max(d["id"] for d in self.deployments) + 1)
        new.update(
            model=model,
            strategy=settings["strategy"],
            state="awaiting_approval" if waits else "requested",
            approval_required=waits,
            requested_by=operator,
            requested_ms=now,
            state_since_ms=now,
            from_version_id=version["replaced_version_id"],
            to_version_id=vid,
            version_hash=digest,
            bake_s=bake_s,
            notes=version["notes"],
            in_flight=True,
            approved_by=None,
            approved_ms=None,
            finished_ms=None,
            error=None,
            checks={},
            incident_id=None,
            rollback_version_id=None,
        )
        self.deployments.insert(0, new)
        return web.json_response({"deployment": self._show(new)}, status=202)

    def _rollback(self, model: str, body: dict[str, Any], operator: str) -> web.Response:
        if model not in self.versions:
            return _error(f"no model named {model!r}", 404)
        flying = self._in_flight(model)
        to = body.get("to")
        if flying is not None and not to and flying["state"] in ("starting", "baking"):
            flying.update(state="rolling_back")
            return web.json_response({"deployment": self._show(flying)}, status=202)
        if flying is not None:
            return _error(
                f"model {model!r} already has deployment {flying['id']} in flight (state "
                f"{flying['state']}, requested by {flying['requested_by']}); wait for it to "
                "finish, or roll it back",
                409,
            )
        listed = self.versions[model]
        if to:
            found = [v for v in listed if v["hash"].partition(":")[2].startswith(str(to))]
        else:
            found = [v for v in listed if v["known_good"] and not v["current"]][:1]
        if len(found) != 1:
            return _error(f"no version of {model!r} matches {to!r}", 404)
        now = self.status.now_ms
        new = dict(self.deployments[0], id=max(d["id"] for d in self.deployments) + 1)
        new.update(
            model=model,
            state="requested",
            requested_by=operator,
            requested_ms=now,
            state_since_ms=now,
            to_version_id=found[0]["id"],
            version_hash=found[0]["hash"],
            in_flight=True,
            approved_by=None,
            error=None,
        )
        self.deployments.insert(0, new)
        return web.json_response({"deployment": self._show(new)}, status=202)


def fixed_deploy_agent() -> DeployAgent:
    """The deterministic deploy agent of the snapshot tests."""
    return DeployAgent(status=sample_status(now_ms=FIXED_NOW_MS))


__all__ = [
    "DeployAgent",
    "fixed_deploy_agent",
    "sample_deploy_settings",
    "sample_deployments",
    "sample_versions",
]
