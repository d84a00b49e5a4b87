"""Table cells for the triage views: probe runs, incidents, events, deployments, log lines.

Pure functions from records to ``rich.text.Text`` cells (never ``str``: DataTable parses a plain
string as markup and these hold agent data), so they are tested without an app. Colours carry
meaning: red for down, failed and open, yellow for degraded and waiting, green for fine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text

from storage.records import Event, Incident, ProbeRun
from storage.text import short_artifact
from tui.view.fmt import clean, format_age, format_clock, format_duration, format_ms, safe

CATEGORY_STYLES = {"ok": "green", "slow": "yellow"}
"""Probe run categories; any other (timeout, refused, wrong_output...) is an error: red."""
INCIDENT_STATE_STYLES = {"open": "bold red", "acknowledged": "yellow", "resolved": "green"}
SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow", "info": "dim"}

DETAIL_LEN = 120


def category_style(category: str) -> str:
    """Green for ``ok``, yellow for ``slow``, red for every failure."""
    return CATEGORY_STYLES.get(category, "red")


def outcomes_text(outcomes: Mapping[str, int], availability: float | None) -> Text:
    """``1h: 96.0% available · ok 120 · slow 3 · timeout 2``: the error breakdown."""
    out = Text("1h: ", style="bold")
    if availability is None:
        out.append("no runs", style="dim")
        return out
    style = "green" if availability >= 0.99 else "yellow" if availability >= 0.9 else "bold red"
    out.append(f"{availability * 100:.1f}% available", style=style)
    # ok first, then the rest by count: the biggest problem reads first.
    ordered = sorted(outcomes.items(), key=lambda kv: (kv[0] != "ok", -kv[1], kv[0]))
    for category, count in ordered:
        out.append(" · ", style="dim")
        out.append_text(safe(category, style=category_style(category), max_len=24))
        out.append(f" {count}")
    return out


def run_row(run: ProbeRun, now_ms: int) -> list[Text]:
    """age, result, HTTP status, e2e, ttft, itl, error."""
    error = run.error or ""
    return [
        Text(format_age(now_ms, run.ts_ms), style="dim", justify="right"),
        safe(run.category, style=category_style(run.category), max_len=16),
        Text("-" if run.status is None else str(run.status), justify="right"),
        Text(format_ms(run.e2e_ms), justify="right"),
        Text(format_ms(run.ttft_ms), justify="right"),
        Text(format_ms(run.itl_ms), justify="right"),
        safe(error or "-", style="red" if error else "dim", max_len=DETAIL_LEN),
    ]


def incident_row(inc: Incident, now_ms: int) -> list[Text]:
    """id, state, severity, subject, opened (age), cause, who took it, kind: what matters
    first, as 80 columns show only the first ones."""
    by = inc.resolved_by or inc.acknowledged_by or ""
    return [
        Text(f"#{inc.id}", justify="right"),
        safe(inc.state, style=INCIDENT_STATE_STYLES.get(inc.state, ""), max_len=14),
        safe(inc.severity, style=SEVERITY_STYLES.get(inc.severity, ""), max_len=10),
        safe(inc.subject, style="bold", max_len=32),
        Text(format_age(now_ms, inc.opened_ms), style="dim", justify="right"),
        safe(inc.cause, max_len=48),
        safe(by or "-", style="" if by else "dim", max_len=32),
        safe(inc.kind, max_len=28),
    ]


def incident_detail(inc: Incident, now_ms: int) -> Text:
    """The whole story of one incident: cause, who acted and when, evidence."""
    out = Text()
    out.append(f"#{inc.id} ", style="bold")
    out.append_text(safe(inc.state, style=INCIDENT_STATE_STYLES.get(inc.state, "")))
    out.append(" · opened ")
    out.append(f"{format_clock(inc.opened_ms)} ({format_age(now_ms, inc.opened_ms)} ago)")
    if inc.acknowledged_ms is not None:
        out.append(" · acknowledged by ")
        out.append_text(safe(inc.acknowledged_by or "?", style="bold", max_len=64))
    if inc.resolved_ms is not None:
        out.append(" · resolved by ")
        out.append_text(safe(inc.resolved_by or "?", style="bold", max_len=64))
        if inc.ttr_ms is not None:
            out.append(f" after {format_duration(inc.ttr_ms / 1000)}")
    if inc.root_id is not None:
        out.append(f" · follows #{inc.root_id}", style="yellow")
    out.append("\n")
    out.append_text(safe(inc.cause, max_len=400))
    if inc.evidence:
        out.append("\n")
        out.append(data_text(inc.evidence), style="dim")
    return out


def data_text(data: Mapping[str, Any], max_len: int = 600) -> str:
    """Evidence or event data as one line of JSON; ASCII only, so escapes stay escaped."""
    try:
        text = json.dumps(data, sort_keys=True, ensure_ascii=True, default=str)
    except (TypeError, ValueError):
        text = repr(data)
    return clean(text, max_len)


def event_row(event: Event) -> list[Text]:
    """time, kind, subject, message."""
    return [
        Text(format_clock(event.ts_ms, short=True), style="dim"),
        safe(event.kind, style=event_style(event.kind), max_len=32),
        safe(event.subject, style="bold", max_len=40),
        safe(event.message, max_len=DETAIL_LEN),
    ]


def history_row(event: Event) -> list[Text]:
    """time, kind, message: an event in a view about its one subject."""
    time_cell, kind, _subject, message = event_row(event)
    return [time_cell, kind, message]


def event_style(kind: str) -> str:
    """Red for what went wrong, yellow for what an operator or the agent changed."""
    if kind.endswith(
        (
            "exited",
            "hung",
            "quarantined",
            "spawn_failed",
            "start_timeout",
            "failing",
            "reload_refused",
            "opened",
        )
    ):
        return "red"
    if kind.endswith(("action", "acknowledged", "probe_requested", "exported", "released")):
        return "yellow"
    return ""


def event_matches(event: Event, needle: str) -> bool:
    """Whether ``needle`` (case-folded) occurs in the event's kind, subject, message or data."""
    if not needle:
        return True
    hay = " ".join((event.kind, event.subject, event.message, data_text(event.data, 2000)))
    return needle in clean(hay, 4000).casefold()


def event_detail(event: Event) -> Text:
    """seq, kind, subject, message and the data of one event, for the detail line."""
    out = Text()
    out.append(f"#{event.seq} " if event.seq is not None else "", style="dim")
    out.append(format_clock(event.ts_ms), style="dim")
    out.append(" ")
    out.append_text(safe(event.kind, style=event_style(event.kind) or "bold", max_len=64))
    out.append(" ")
    out.append_text(safe(event.subject, style="bold", max_len=64))
    out.append("\n")
    out.append_text(safe(event.message, max_len=400))
    if event.data:
        out.append("\n")
        out.append(data_text(event.data), style="dim")
    return out


def deployment_row(event: Event) -> list[Text]:
    """A ``model.artifact`` event: when, new artifact, previous artifact, the run's category."""
    data = event.data

    def short(*keys: str) -> Text:
        # Events from agents before artifact kinds carry sha256 / previous_sha256 only.
        value = next((data[k] for k in keys if data.get(k)), None)
        return safe(short_artifact(value), max_len=24) if value else Text("-", style="dim")

    run = data.get("run")
    category = str((run.get("category") if isinstance(run, dict) else None) or "")
    category = category or str(data.get("category") or "")
    return [
        Text(format_clock(event.ts_ms, short=True), style="dim"),
        short("artifact", "sha256"),
        short("previous_artifact", "previous_sha256"),
        safe(category or "-", style=category_style(category) if category else "dim", max_len=16),
    ]


def tail_update(shown: Sequence[str], fetched: Sequence[str]) -> tuple[bool, list[str]]:
    """What to do to a log view showing ``shown`` now that the tail is ``fetched``.

    The tail is a window that slides as the process writes: find where the lines shown end
    inside it and append only what follows.

    Returns:
        ``(reset, lines)``: when ``reset`` is false, append ``lines``; when true (no overlap:
        the log rotated or scrolled past the window), clear the view and write ``lines``.
    """
    if list(shown) == list(fetched):
        return False, []
    if not shown:
        return True, list(fetched)
    # The longest suffix of what is shown that is a prefix of what was fetched.
    for size in range(min(len(shown), len(fetched)), 0, -1):
        if list(shown[-size:]) == list(fetched[:size]):
            return False, list(fetched[size:])
    return True, list(fetched)
