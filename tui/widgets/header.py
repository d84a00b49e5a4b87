"""The host screen's top line: which agent, how long it has run, and whether we reach it."""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from storage.records import AgentStatus
from tui.view.fmt import clean, format_duration, safe

CONNECTED = "connected"
CONNECTING = "connecting"
"""Connection states besides the failure kinds of :class:`tui.remote.client.AgentError`."""

# A timeout is, to the person watching, the agent being unreachable; the message says which.
_LABELS = {
    "unreachable": "unreachable",
    "timeout": "unreachable",
    "rejected": "token rejected",
    "forbidden": "forbidden",
    "http": "agent error",
    "protocol": "bad answer",
    "config": "bad configuration",
}


class ConnectionHeader(Widget):
    """Host, agent version, uptime and the connection state, on one to three lines: it
    wraps rather than hide the reason of a failure at 80 columns.

    When the agent cannot be reached the last data stays on screen and this line says so in
    red, with the age of that data, which it re-renders every second by itself.
    """

    DEFAULT_CSS = """
    ConnectionHeader {
        height: auto;
        max-height: 3;
        padding: 0 1;
        background: $panel;
    }
    """

    url: reactive[str] = reactive("", layout=True)
    """The agent's URL, shown until it first answers."""
    status: reactive[AgentStatus | None] = reactive(None, layout=True)
    """The last status the agent sent (None until it first answers)."""
    connection: reactive[str] = reactive(CONNECTING, layout=True)
    """``connected``, ``connecting`` or an :data:`tui.remote.client.ErrorKind`
    (``unreachable``...)."""
    problem: reactive[str] = reactive("", layout=True)
    """The last failure's message; empty while connected."""
    last_ok_at: reactive[float | None] = reactive(None)
    """``time.monotonic()`` of the last good answer, to say how old the data on screen is."""

    def on_mount(self) -> None:
        """Start the clock that keeps "last data 12s ago" honest between fetches."""
        # layout=True: the line may wrap differently as the age grows a digit.
        self.set_interval(1.0, lambda: self.refresh(layout=True))

    def render(self) -> Text:
        """The header line, every agent-supplied part escaped."""
        out = Text(no_wrap=False, overflow="fold")
        status = self.status
        if status is None:
            out.append("vigil ", style="bold")
            out.append_text(safe(self.url, style="dim"))
        else:
            out.append_text(safe(status.host, style="bold", max_len=64))
            out.append("  agent ", style="dim")
            out.append_text(safe(status.version, max_len=32))
            out.append("  up ", style="dim")
            out.append(format_duration(status.uptime_s))
            if not status.storage_ok:
                out.append("  storage degraded", style="bold yellow")
        out.append("  ")
        out.append_text(self.state_text())
        return out

    def state_text(self) -> Text:
        """The connection state alone, e.g. ``unreachable: ... — last data 12s ago``."""
        if self.connection == CONNECTED:
            return Text("● connected", style="green")
        if self.connection == CONNECTING:
            return Text("○ connecting…", style="dim")
        label = _LABELS.get(self.connection, self.connection)
        problem = clean(self.problem, max_len=160)
        msg = label if problem in ("", label) else f"{label}: {problem}"
        if self.last_ok_at is not None:
            age = time.monotonic() - self.last_ok_at
            # Whole seconds: "last data 950ms ago" would flicker with every fetch.
            msg += f" — last data {format_duration(max(1.0, float(int(age))))} ago"
        return Text(f"✖ {msg}", style="bold red")
