"""``E`` on the fleet: the serving-environment differences of one group of hosts, host x item.

Fetches ``GET /api/v1/environment`` from every connected host of the group (at once), runs
``storage.fleetdrift.group_drift`` over the fingerprints (through :mod:`tui.view.envdrift`) and
shows the items on which the hosts do not all agree: a row per item, a column per host, the
majority value dimmed and the differing ones highlighted, and the majority in the last column.
Hosts that did not answer are named under the table and left out of the majority.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from storage.fleetdrift import GroupDrift
from tui.remote.client import AgentError
from tui.view.envdrift import matrix, matrix_rows
from tui.view.fleetgroups import GROUP_PREFIX, NO_LABEL_KEY, member_labels
from tui.view.fleetview import FleetMember
from tui.view.fmt import safe

__all__ = ["EnvDriftScreen", "fetch_fingerprints", "group_of"]


def group_of(
    members: list[FleetMember], group_by: str, key: str | None
) -> tuple[str, list[FleetMember]]:
    """The group the fleet table's selected row (a host, or a group's header) belongs to, and
    its title: the whole fleet when not grouped (or nothing is selected)."""
    if not group_by or key is None:
        return "whole fleet", list(members)
    if key == NO_LABEL_KEY:
        value: str | None = None
    elif key.startswith(GROUP_PREFIX):
        value = key[len(GROUP_PREFIX) :]
    else:
        host = next((m for m in members if m.name == key), None)
        value = None if host is None else member_labels(host).get(group_by)
    group = [m for m in members if member_labels(m).get(group_by) == value]
    title = f"{group_by}={value}" if value is not None else f"no {group_by} label"
    return title, group


async def fetch_fingerprints(
    members: list[FleetMember],
) -> tuple[dict[str, dict[str, dict[str, str]]], dict[str, str]]:
    """Each member's fingerprint (``sections`` of ``/api/v1/environment``), and why not for
    those that did not give one (not connected, an error, a malformed answer)."""
    fingerprints: dict[str, dict[str, dict[str, str]]] = {}
    failures: dict[str, str] = {}

    async def one(member: FleetMember) -> None:
        client = member.client
        if client is None:
            failures[member.name] = "not connected"
            return
        try:
            doc: Any = await client.get_json("/api/v1/environment")
        except AgentError as exc:
            failures[member.name] = exc.message
            return
        sections = doc.get("sections") if isinstance(doc, dict) else None
        if not isinstance(sections, dict):
            failures[member.name] = "no fingerprint (sections missing)"
            return
        fingerprints[member.name] = {
            str(s): {str(k): str(v) for k, v in items.items()}
            for s, items in sections.items()
            if isinstance(items, dict)
        }

    await asyncio.gather(*(one(m) for m in members))
    return fingerprints, failures


class EnvDriftScreen(Screen[None]):
    """The environment matrix of one group of hosts.

    Args:
        members: The group's hosts.
        title: What the group is (``region=eu``, or ``whole fleet``).
    """

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, members: list[FleetMember], title: str) -> None:
        super().__init__()
        self.members = members
        self.group_title = title
        self.drift: GroupDrift | None = None
        """The last computed drift (tests read it); None until fetched."""
        self.failures: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="envdrift-title")
        yield DataTable(id="envdrift-table", zebra_stripes=True)
        yield Static(id="envdrift-status")
        yield Footer()

    def on_mount(self) -> None:
        title = Text("Environment drift: ", style="bold")
        title.append_text(safe(self.group_title, max_len=120))
        title.append(f" ({len(self.members)} hosts)")
        self.query_one("#envdrift-title", Static).update(title)
        self.query_one("#envdrift-status", Static).update(Text("Fetching environments…"))
        self.run_worker(self._load(), exclusive=True)

    async def _load(self) -> None:
        fingerprints, failures = await fetch_fingerprints(self.members)
        self.failures = failures
        self.show(matrix(fingerprints))

    def show(self, drift: GroupDrift) -> None:
        """Fill the table from ``drift``."""
        table = self.query_one("#envdrift-table", DataTable)
        table.clear(columns=True)
        table.add_column("item", key="item")
        for host in drift.hosts:
            table.add_column(safe(host, max_len=40), key="host:" + host)
        table.add_column("majority", key="majority")
        for row in matrix_rows(drift):
            table.add_row(row.label, *row.cells, row.note, key=row.key)
        status = Text()
        if not drift.items:
            status.append(f"No differences among the {len(drift.hosts)} hosts that answered.")
        else:
            flagged = len(drift.differing_hosts)
            status.append(
                f"{len(drift.items)} items differ; {flagged} of {len(drift.hosts)} hosts differ."
            )
        for host, why in sorted(self.failures.items()):
            status.append("\n")
            status.append_text(safe(host, "yellow", max_len=60))
            status.append(": ")
            status.append_text(safe(why, max_len=200))
        self.query_one("#envdrift-status", Static).update(status)
        self.drift = drift
