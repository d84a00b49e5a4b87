"""The cells of a fleet row, built from a :class:`~tui.view.fleetview.FleetMember` without Textual.

Every cell is a ``rich.text.Text`` made by :func:`tui.view.fmt.safe` or from our own words: names,
hosts and errors come from the fleet file and the agents, and are data, never markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from rich.text import Text

from tui.view.fleetsummary import HostAlerts
from tui.view.fleetview import FleetMember
from tui.view.fmt import (
    format_duration,
    format_ms,
    format_percent,
    format_used_total,
    level_style,
    safe,
)

COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "agent"),
    ("status", "status"),
    ("alerts", "alerts"),
    ("models", "models"),
    ("ttft", "p95 ttft"),
    ("gpu", "gpu"),
    ("gpumem", "gpu mem"),
    ("incidents", "inc"),
    ("cpu", "cpu"),
    ("spark", "cpu history"),
    ("age", "data"),
    ("problem", "problem"),
)
"""(key, label) of each column."""

SORTABLE_COLUMNS = {
    "name": "name",
    "status": "status",
    "alerts": "alerts",
    "ttft": "ttft",
    "gpu": "gpu",
    "gpumem": "gpu",
    "incidents": "incidents",
    "cpu": "cpu",
    "spark": "cpu",
    "age": "age",
}
"""Column key -> sort key, for sorting by a click on a column header."""

STATE_STYLES = {
    "ok": "green",
    "degraded": "yellow",
    "failing": "bold red",
    "slow": "bold yellow",
    "connecting": "dim",
    "unreachable": "bold red",
    "timeout": "bold red",
    "rejected": "red",
    "forbidden": "red",
    "http": "red",
    "protocol": "red",
    "config": "red",
}
STATE_LABELS = {
    "timeout": "unreachable",
    "rejected": "token rejected",
    "http": "agent error",
    "protocol": "bad answer",
    "config": "not found",
}
"""Failure kinds as words; a timeout is, to the person watching, the agent being unreachable."""

SPARK_WIDTH = 16
_BLOCKS = "▁▂▃▄▅▆▇█"
PROBLEM_LEN = 80


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> Text:
    """The last ``width`` percentages as block characters on a fixed 0-100 scale (hosts are
    comparable at a glance), right-aligned, coloured by the latest value."""
    recent = list(values)[-width:]
    chars = "".join(
        _BLOCKS[min(len(_BLOCKS) - 1, max(0, int(v / 100 * len(_BLOCKS))))] for v in recent
    )
    return Text(
        chars.rjust(width), style=level_style(recent[-1]) if recent else "dim", no_wrap=True
    )


CRITICAL_STYLE = "bold white on red"
"""The critical count's badge: the one thing on a fleet screen that must be seen at 3 a.m."""
MUTED_STYLE = "dim"
"""Muted (silenced, in maintenance) alerts page nobody: dim, not a colour (Textual's default
ANSI theme, Monokai, draws magenta as the same red as critical)."""


def alerts_text(alerts: HostAlerts | None) -> Text:
    """A host's alerts cell: ``2 !1 +1`` is two alerts firing and not muted, one of them
    critical (a red badge), and one more firing but muted (silenced or in maintenance), set
    apart and dim because it pages nobody. ``0`` when nothing fires; ``?`` when the agent
    does not count its alerts (older than alerting). Seven cells for the usual case, so that
    80 columns still show the incidents column."""
    if alerts is None:
        return Text("?", style="dim", justify="right")
    if not alerts.firing and not alerts.muted:
        return Text("0", style="dim", justify="right")
    style = "bold red" if alerts.critical else "bold yellow" if alerts.firing else "dim"
    # Each part styled on its own: a style for the whole cell would colour the muted part too.
    out = Text(justify="right", no_wrap=True)
    out.append(str(alerts.firing), style=style)
    if alerts.critical:
        out.append(" ")
        out.append(f"!{alerts.critical}", style=CRITICAL_STYLE)
    if alerts.muted:
        out.append(f" +{alerts.muted}", style=MUTED_STYLE)
    return out


def alerting_text(members: Iterable[FleetMember]) -> Text:
    """The summary line's ``  3 alerting (1 critical)``: hosts answering now with alerts
    firing and not muted, and how many of them have a critical one; empty when none. An
    unreachable host's last counts are not news of now: its state is counted already."""
    paging = critical = 0
    for m in members:
        a = m.summary.alerts if m.summary is not None and m.error is None else None
        if a is not None and a.firing:
            paging += 1
            critical += 1 if a.critical else 0
    if not paging:
        return Text()
    out = Text("  ")
    out.append(f"{paging} alerting", style="bold red" if critical else "bold yellow")
    if critical:
        out.append(" (")
        out.append(f"{critical} critical", style=CRITICAL_STYLE)
        out.append(")")
    return out


def age_text(member: FleetMember, now: float, stale_after_s: float) -> Text:
    """How old the row's data is: ``now`` while fresh, else ``12s``; ``never`` before any."""
    age = member.data_age(now)
    if age is None:
        return Text("never" if member.error is not None else "-", style="dim", justify="right")
    if age < stale_after_s:
        return Text("now", style="dim", justify="right")
    style = "bold red" if member.error is not None else "yellow"
    return Text(format_duration(float(int(age))), style=style, justify="right")


def row_cells(member: FleetMember, now: float, stale_after_s: float) -> list[Text]:
    """The cells of one agent's row, in :data:`COLUMNS` order.

    Args:
        member: The agent.
        now: The member clock's now.
        stale_after_s: Data older than this shows its age.

    Returns:
        One Text per column; the values of an agent we cannot reach are its last ones, dimmed.
    """
    state = member.state(now)
    status = Text(STATE_LABELS.get(state, state), style=STATE_STYLES.get(state, ""))
    s = member.summary
    right: Literal["right"] = "right"
    if s is None:
        blank = [Text("-", style="dim", justify=right) for _ in range(8)]
        alerts, models, ttft, gpu, gpumem, incidents, cpu, spark = blank
    else:
        alerts = alerts_text(s.alerts)
        if s.models_total == 0:
            models = Text("-", style="dim", justify=right)
        else:
            style = (
                "red" if s.models_down else "yellow" if s.models_up < s.models_total else "green"
            )
            models = Text(f"{s.models_up}/{s.models_total}", style=style, justify=right)
        if s.ttft_p95_ms is not None:
            ttft = Text(format_ms(s.ttft_p95_ms), justify=right)
        elif s.e2e_p95_ms is not None:
            # No streaming probe on this host: its end-to-end p95, marked as such.
            ttft = Text(f"e2e {format_ms(s.e2e_p95_ms)}", style="dim", justify=right)
        else:
            ttft = Text("-", style="dim", justify=right)
        if s.gpu_count:
            gpu = Text(
                format_percent(s.gpu_util_percent),
                style=level_style(s.gpu_util_percent),
                justify=right,
            )
            gpumem = (
                Text(
                    format_used_total(s.gpu_mem_used_bytes, s.gpu_mem_total_bytes),
                    style=level_style(s.gpu_mem_percent),
                    justify=right,
                )
                if s.gpu_mem_used_bytes is not None and s.gpu_mem_total_bytes is not None
                else Text("-", style="dim", justify=right)
            )
        else:
            gpu = Text("no gpu", style="dim", justify=right)
            gpumem = Text("-", style="dim", justify=right)
        if s.open_incidents is None:
            incidents = Text("?", style="dim", justify=right)
        else:
            incidents = Text(
                str(s.open_incidents),
                style="bold yellow" if s.open_incidents else "dim",
                justify=right,
            )
        cpu = Text(format_percent(s.cpu_percent), style=level_style(s.cpu_percent), justify=right)
        spark = sparkline(member.cpu_history)
    if member.error is not None:
        problem = safe(member.error.message, style="red", max_len=PROBLEM_LEN)
    elif s is not None and s.reasons:
        problem = safe("; ".join(s.reasons), style="yellow", max_len=PROBLEM_LEN)
    else:
        problem = Text("")
    data = [alerts, models, ttft, gpu, gpumem, incidents, cpu, spark]
    if member.error is not None:
        # The last known values, kept on screen but visibly not current.
        data = [Text(t.plain, style="dim", justify=t.justify) for t in data]
    return [
        safe(member.name, style="bold", max_len=64),
        status,
        *data,
        age_text(member, now, stale_after_s),
        problem,
    ]
