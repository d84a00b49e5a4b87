"""The client's deploy calls (issue 16): deployments, versions, the DORA keys and a deploy's
live progress; start a deploy, approve one, roll a model back.

A mixin of :class:`tui.remote.client.AgentClient`, which supplies the transport
(:meth:`DeployCalls._get_json`, :meth:`DeployCalls._post_json`: every failure an
:class:`~tui.remote.errors.AgentError`, every action sent with ``X-Vigil-Operator``), so the
deploy routes live beside each other and the client stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tui.remote.errors import AgentError, decode, seg

__all__ = ["DeployCalls"]


class DeployCalls:
    """``/api/v1/deployments...`` and ``/api/v1/models/{name}/{deploy,rollback,versions}``."""

    async def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        raise NotImplementedError  # the client's transport

    async def _post_json(self, path: str, body: Any = None) -> Any:
        raise NotImplementedError  # the client's transport, naming the operator

    async def deployments(self, model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """``GET /api/v1/deployments``, newest first (each with ``version_hash``)."""
        params = {"limit": str(limit), **({"model": model} if model else {})}
        data = await self._get_json("/api/v1/deployments", params)
        return decode(lambda: [dict(d) for d in data["deployments"]], "deployments")

    async def deployment(self, deployment_id: int) -> dict[str, Any]:
        """``GET /api/v1/deployments/{id}``: with its versions and, while it bakes, progress."""
        data = await self._get_json(f"/api/v1/deployments/{int(deployment_id)}")
        return decode(lambda: dict(data["deployment"]), "deployment")

    async def versions(self, model: str) -> dict[str, Any]:
        """``GET /api/v1/models/{name}/versions``: ``{"current_version_id", "versions"}``, and
        from an agent that says so, ``deploy``: the model's deploy settings (``strategy``,
        ``bake_s``, ``require_approval``), null for a model without ``[model.deploy]``."""
        data = await self._get_json(f"/api/v1/models/{seg(model)}/versions")
        return decode(lambda: {**data, "versions": [dict(v) for v in data["versions"]]}, "versions")

    async def deploy_kpis(
        self, model: str | None = None, since: str = "30d"
    ) -> dict[str, Any] | None:
        """``GET /api/v1/deployments/kpi``: the DORA four keys of the window (``host`` and per
        model); None from an agent that predates the route (404)."""
        params = {"since": since, **({"model": model} if model else {})}
        try:
            data = await self._get_json("/api/v1/deployments/kpi", params)
        except AgentError as exc:
            if exc.status == 404:
                return None
            raise
        return decode(lambda: {**data, "host": dict(data["host"])}, "deployment KPIs")

    async def deploy_model(
        self,
        model: str,
        artifact: str,
        *,
        strategy: str | None = None,
        bake: str | None = None,
        notes: str | None = None,
    ) -> dict[str, Any]:
        """``POST /api/v1/models/{name}/deploy`` (operate): hash ``artifact`` (a path on the
        agent's host), register it and start its deploy, or hold it for approval.

        Args:
            model: The model to deploy.
            artifact: The absolute path of the model file or directory, on the agent's host.
            strategy: ``in-place`` or ``blue-green``: the agent refuses one its model is not
                configured for; None leaves the model's own.
            bake: A duration (``10m``); None for the model's ``bake``.
            notes: Free text kept with the version's lineage.

        Returns:
            The deployment as the agent stored it (``requested`` or ``awaiting_approval``).

        Raises:
            AgentError: ``http`` 400 for a missing or unreadable artifact, a bad bake or
                strategy; 404 unknown model; 409 a deploy of the model in flight (named).
        """
        body: dict[str, str] = {"artifact": artifact}
        extra = {"strategy": strategy, "bake": bake, "notes": notes}
        body.update({k: v for k, v in extra.items() if v})
        data = await self._post_json(f"/api/v1/models/{seg(model)}/deploy", body)
        return decode(lambda: dict(data["deployment"]), "deploy")

    async def approve_deployment(self, deployment_id: int) -> dict[str, Any]:
        """``POST /api/v1/deployments/{id}/approve`` (operate): 409 when it is not waiting,
        403 when the requester approves their own deploy (``approver_must_differ``)."""
        data = await self._post_json(f"/api/v1/deployments/{int(deployment_id)}/approve")
        return decode(lambda: dict(data["deployment"]), "approve")

    async def rollback_model(self, model: str, to: str | None = None) -> dict[str, Any]:
        """``POST /api/v1/models/{name}/rollback`` (operate): to version ``to`` (an id or a
        hash prefix), else the last known-good one; 409 names a deploy in flight."""
        path = f"/api/v1/models/{seg(model)}/rollback"
        data = await self._post_json(path, {"to": to} if to else None)
        return decode(lambda: dict(data["deployment"]), "rollback")
