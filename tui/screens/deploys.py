"""The host's deployments (issue 16): each deploy's state, who asked and approved, the live
progress of one in flight, and the versions of its model (which serves, which are known-good);
start a deploy, approve one waiting for it, or roll a model back."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from tui.remote.client import AgentClient, AgentError
from tui.screens.base import ActionFinished, FilteredListScreen
from tui.screens.deployform import DeployScreen
from tui.view.actions import OperatorAction
from tui.view.deployform import DeployDraft, deploy_choices
from tui.view.deploys import (
    DeploysData,
    deploy_matches,
    deployment_detail,
    deployment_key,
    deployment_row,
    in_flight,
    kpi_text,
    last_known_good,
    models_of,
    short_hash,
    sort_versions,
    summary_text,
    version_key,
    version_row,
)
from tui.view.fmt import clean, safe
from tui.widgets.filterbar import FilterInput
from tui.widgets.tables import KeyedTable


class DeploymentsTable(KeyedTable):
    """Deployments, newest first."""

    COLUMNS = (
        ("id", "id"),
        ("model", "model"),
        ("state", "state"),
        ("version", "version"),
        ("age", "age"),
        ("by", "requested by"),
        ("strategy", "strategy"),
        ("approved", "approved by"),
        ("took", "took"),
        ("error", "error"),
    )


class VersionsTable(KeyedTable):
    """One model's versions, newest first: ``▶`` serves now, ``✓`` known-good."""

    COLUMNS = (
        ("mark", ""),
        ("id", "id"),
        ("hash", "hash"),
        ("created", "created"),
        ("actor", "actor"),
        ("pipeline", "pipeline"),
        ("git", "git sha"),
        ("outcome", "outcome"),
        ("notes", "notes"),
    )


async def _versions(client: AgentClient, model: str) -> dict[str, Any] | None:
    """A model's versions; None for a model the agent no longer knows (a deploy of a model
    since removed from its config stays listed)."""
    try:
        return await client.versions(model)
    except AgentError as exc:
        if exc.status == 404:
            return None
        raise


class DeploymentsScreen(FilteredListScreen):
    """Deployments newest first, the one under the cursor in detail (live while in flight),
    and the versions of its model.

    Args:
        client: The agent's client.
        refresh_s: Seconds between fetches (a deploy in flight moves on each).
        model: Only this model's deployments; None for all.
    """

    DEFAULT_CSS = """
    DeploymentsScreen #summary {
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    DeploymentsScreen KeyedTable {
        height: 1fr;
        min-height: 5;
    }
    DeploymentsScreen #detail {
        max-height: 5;
    }
    """

    AUTO_FOCUS = "#deployments-table"

    BINDINGS = [
        Binding("N", "new_deploy", "Deploy"),
        Binding("A", "approve", "Approve"),
        Binding("B", "rollback", "Roll back"),
        # Out of the footer, which is full at 80 columns with N: ``/`` filters in every list
        # (the help's conventions say so) and ``?`` lists it here.
        Binding("slash", "filter", "Filter", show=False),
    ]
    OPERATE = frozenset({"new_deploy", "approve", "rollback"})

    def __init__(
        self, client: AgentClient, refresh_s: float = 1.0, model: str | None = None
    ) -> None:
        super().__init__(client, refresh_s)
        self.model = model
        self._data: DeploysData | None = None
        self._deploys: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, dict[str, Any]] = {}
        self._versions_of = ""
        self._kpis_missing = False
        self._select: str | None = None
        """The row to put the cursor on once it is listed (a deploy just started here)."""

    def compose(self) -> ComposeResult:
        """Title, problem line, summary, filter, deployments, detail, versions, footer."""
        yield Static(Text("deployments"), classes="title", id="title")
        yield Static(classes="problem", id="problem")
        yield Static(Text("…", style="dim"), id="summary")
        yield FilterInput("filter by model, state, person, version, error…", id="filter")
        deploys = DeploymentsTable(id="deployments-table")
        deploys.add_class("boxed")
        deploys.border_title = "deployments"
        yield deploys
        yield Static(Text("no deployment selected", style="dim"), id="detail")
        versions = VersionsTable(id="versions-table")
        versions.add_class("boxed")
        versions.border_title = "versions"
        yield versions
        yield Footer()

    async def gather(self) -> DeploysData:
        """The agent's clock and host and its deployments; then, at once, each listed model's
        versions and the progress of each deploy in flight."""
        status, deployments, kpis = await asyncio.gather(
            self.client.status(), self.client.deployments(self.model), self._kpis()
        )
        models = models_of(deployments)
        flying = [int(d["id"]) for d in deployments if in_flight(d) and isinstance(d["id"], int)]
        listed, live = await asyncio.gather(
            asyncio.gather(*(_versions(self.client, m) for m in models)),
            asyncio.gather(*(self.client.deployment(i) for i in flying)),
        )
        versions = {m: v for m, v in zip(models, listed, strict=True) if v is not None}
        details = dict(zip(flying, live, strict=True))
        return DeploysData(status.now_ms, status.host, deployments, details, versions, kpis)

    async def _kpis(self) -> dict[str, Any] | None:
        """The DORA keys, unless the agent said it has no such route (asked once, then not)."""
        if self._kpis_missing:
            return None
        try:
            kpis = await self.client.deploy_kpis(self.model)
        except AgentError as exc:
            if exc.status is None:
                raise
            return None  # a KPI route that fails leaves the list's own summary, not the view
        self._kpis_missing = kpis is None
        return kpis

    def show(self, data: Any) -> None:
        """Rows for the deployments that pass the filter; the detail and versions follow the
        cursor."""
        assert isinstance(data, DeploysData)
        self._data = data
        title = Text("deployments", style="bold")
        title.append(" · ", style="dim")
        title.append_text(safe(data.host, max_len=48))
        if self.model:
            title.append(" · model ", style="dim")
            title.append_text(safe(self.model, style="bold", max_len=48))
        self.query_one("#title", Static).update(title)
        summary = (
            kpi_text(data.kpis)
            if data.kpis is not None
            else summary_text(data.deployments, data.now_ms)
        )
        self.query_one("#summary", Static).update(summary)
        needle = self.query_one("#filter", FilterInput).value.casefold()
        shown = [d for d in data.deployments if deploy_matches(d, needle)]
        self._deploys = {deployment_key(d): d for d in shown}
        table = self.query_one("#deployments-table", DeploymentsTable)
        table.sync_rows([(deployment_key(d), deployment_row(d, data.now_ms)) for d in shown])
        if self._select is not None and self._select in self._deploys:
            table.move_cursor(row=list(self._deploys).index(self._select), animate=False)
            table.focus()
            self._select = None
        if not shown:
            table.border_subtitle = Text(
                "no deployments matching the filter"
                if needle
                else "no deployments: N (or vigil deploy MODEL --artifact PATH) starts one"
            )
        else:
            flying = sum(1 for d in shown if in_flight(d))
            table.border_subtitle = Text(f"{flying} in flight") if flying else ""
        self.show_detail()

    # --- what is under the cursor --------------------------------------------------------

    def selected_deploy(self) -> dict[str, Any] | None:
        """The deployment under the cursor."""
        key = self.query_one("#deployments-table", DeploymentsTable).selected_key
        return None if key is None else self._deploys.get(key)

    def selected_model(self) -> str | None:
        """The model of the deployment under the cursor (the one ``B`` rolls back)."""
        dep = self.selected_deploy()
        if dep is not None and dep.get("model"):
            return str(dep["model"])
        return self.model

    def selected_version(self) -> dict[str, Any] | None:
        """The version under the cursor, when the versions table has the focus."""
        if self.focused is None or self.focused.id != "versions-table":
            return None
        key = self.query_one("#versions-table", VersionsTable).selected_key
        return None if key is None else self._versions.get(key)

    def show_detail(self) -> None:
        """The deploy under the cursor in detail, and its model's versions."""
        dep = self.selected_deploy()
        detail = self.query_one("#detail", Static)
        data = self._data
        if dep is None or data is None:
            detail.update(Text("no deployment selected", style="dim"))
        else:
            live = data.details.get(dep["id"]) if isinstance(dep.get("id"), int) else None
            detail.update(deployment_detail(dep, live, data.now_ms))
        self.show_versions(self.selected_model())
        self.refresh_bindings()

    def show_versions(self, model: str | None) -> None:
        """``model``'s versions in the lower table."""
        table = self.query_one("#versions-table", VersionsTable)
        doc = None if model is None or self._data is None else self._data.versions.get(model)
        listed = sort_versions(doc.get("versions", [])) if doc else []
        self._versions = {version_key(v): dict(v) for v in listed}
        if model != self._versions_of:
            table.clear()  # another model: its versions, cursor at the top
            self._versions_of = model or ""
        table.sync_rows([(version_key(v), version_row(v)) for v in listed])
        title = Text("versions")
        if model:
            title.append(" · ")
            title.append(clean(model, 40))
        table.border_title = title
        table.border_subtitle = "" if listed else Text("no versions recorded")

    @on(DataTable.RowHighlighted)
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Follow the cursor: a deploy shows its detail and its model's versions."""
        if event.data_table.id == "deployments-table":
            self.show_detail()
        else:
            self.refresh_bindings()

    def on_descendant_focus(self) -> None:
        """What ``B`` rolls back to follows the focused table."""
        self.refresh_bindings()

    # --- actions --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Approve only a deploy awaiting approval; roll back only with a model chosen (dimmed
        otherwise)."""
        if super().check_action(action, parameters) is False:
            return False
        if not self.is_mounted:
            return True
        if action == "approve":
            dep = self.selected_deploy()
            return (dep is not None and dep.get("state") == "awaiting_approval") or None
        if action == "rollback":
            return self.selected_model() is not None or None
        return True

    def action_new_deploy(self) -> None:
        """``N``: ask what to deploy, confirm it with a summary, send it (the host's models
        that have a ``[model.deploy]``, or from a model's view that model)."""
        if self.client.read_only:
            # Refused with the read-only message, as the hidden key's other ways in are.
            self.request_action(OperatorAction("deploy", self.selected_model() or ""))
            return
        self.open_deploy_form()

    @work(exclusive=True, group="deploy-form")
    async def open_deploy_form(self) -> None:
        """Ask the agent which models may be deployed (their versions document says their
        deploy settings), then open the dialog on the model in view or under the cursor."""
        try:
            status = await self.client.status()
            names = [self.model] if self.model else [m.name for m in status.models]
            docs = await asyncio.gather(*(_versions(self.client, n) for n in names))
        except AgentError as exc:
            self.notify(
                clean(exc.message, 300),
                title="New deploy failed",
                severity="error",
                timeout=8,
                markup=False,
            )
            return
        offered, left_out = deploy_choices(names, dict(zip(names, docs, strict=True)))
        if not offered:
            which = f"model {clean(self.model, 48)} has" if self.model else "no model has"
            self.notify(
                f"Nothing to deploy: {which} a [model.deploy] link on {clean(status.host, 48)} "
                "(see docs/deploy.md)",
                title="New deploy",
                severity="warning",
                markup=False,
            )
            return
        form = DeployScreen(offered, self.selected_model(), status.host, left_out)
        self.app.push_screen(form, self.deploy_drafted)

    def deploy_drafted(self, draft: DeployDraft | None) -> None:
        """The dialog's answer: confirm and send it, or say it was cancelled."""
        if draft is None:
            self.notify("New deploy cancelled", timeout=2, markup=False)
            return
        self.request_action(OperatorAction("deploy", draft.model, deploy=draft))

    @on(ActionFinished)
    def select_new_deploy(self, message: ActionFinished) -> None:
        """A deploy or rollback accepted: its row gets the cursor once listed, so its detail
        (and live progress) shows."""
        if message.deployment_id is not None:
            self._select = deployment_key({"id": message.deployment_id})

    def action_approve(self) -> None:
        """``A``: approve the deploy under the cursor (confirmed)."""
        dep = self.selected_deploy()
        if dep is None or dep.get("state") != "awaiting_approval":
            return
        about = (
            f"{clean(dep.get('model'), 40)}: version {short_hash(dep.get('version_hash'))} "
            f"({clean(dep.get('strategy'), 12)}), requested by {clean(dep.get('requested_by'), 48)}"
        )
        self.request_action(OperatorAction("approve", str(dep.get("id")), about=about))

    def action_rollback(self) -> None:
        """``B``: roll the model back: to the version under the cursor when the versions table
        has the focus, else to its last known-good version (confirmed)."""
        model = self.selected_model()
        if model is None:
            return
        chosen = self.selected_version()
        if chosen is not None:
            about = (
                f"version {clean(chosen.get('id'), 12)} {short_hash(chosen.get('hash'))}"
                f"{' (known-good)' if chosen.get('known_good') else ' (never promoted)'}, "
                f"by {clean(chosen.get('actor') or '-', 48)}"
            )
            # The full hash, not the id: the agent matches ``to`` against ids and hash
            # prefixes alike, so id 3 could also match a hash starting with 3.
            full = clean(chosen.get("hash"), 200)
            version = full.partition(":")[2] or full
            self.request_action(OperatorAction("rollback", model, version=version, about=about))
            return
        self.request_action(OperatorAction("rollback", model, about=self._rollback_about(model)))

    def _rollback_about(self, model: str) -> str:
        """What ``B`` without a version would do now, as far as this view knows."""
        flying = next(
            (d for d in self._deploys.values() if d.get("model") == model and in_flight(d)), None
        )
        if flying is not None:
            return f"deploy #{clean(flying.get('id'), 12)} is {clean(flying.get('state'), 20)}"
        doc = self._data.versions.get(model) if self._data is not None else None
        good = last_known_good(doc.get("versions", [])) if doc else None
        if good is None:
            return "no known-good version other than the current one is listed"
        return (
            f"last known-good: version {clean(good.get('id'), 12)} {short_hash(good.get('hash'))}"
        )
