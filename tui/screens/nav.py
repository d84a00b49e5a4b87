"""Where a host's triage starts, as a protocol: what the jump palette (and any view that
moves between a host's views) needs, without importing the host screen.

The host screen imports every triage view; the views share :mod:`tui.screens.base`, whose
palette lists the places to go. Naming the host here, structurally, keeps those arrows
pointing one way (``host -> views -> base -> palette -> nav``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from storage.records import AgentStatus


@runtime_checkable
class HostNavigator(Protocol):
    """A view of one agent that can open any of that agent's views (the host screen).

    Each ``open_*`` shows its view right above the navigator, closing the views between.
    """

    @property
    def status(self) -> AgentStatus | None:
        """The agent's last status (its models and processes), None until it answers."""
        ...

    def go_home(self) -> None:
        """Close the views above the navigator."""
        ...

    def open_model(self, name: str) -> None:
        """The model's view."""
        ...

    def open_process(self, name: str) -> None:
        """The supervised process's view."""
        ...

    def open_incidents(self, state: str | None = None) -> None:
        """The agent's incidents, optionally only those in ``state``."""
        ...

    def open_events(self, kind: str = "", subject: str = "") -> None:
        """The agent's audit trail, optionally filtered."""
        ...

    def open_alerts(self) -> None:
        """The agent's alerts, silences and delivery health."""
        ...

    def open_deployments(self, model: str | None = None) -> None:
        """The agent's deployments (or one model's), their live progress and versions."""
        ...

    def action_export_report(self) -> None:
        """Save the agent's report (confirmed first)."""
        ...
