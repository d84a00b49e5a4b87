"""The alerts view's model, without Textual: which alerts to list and in what order, their
cells, the counts in the title, the silence matchers for an alert and the delivery-failures
line (issue 15).

Everything here is agent data (labels, summaries, channel errors): it goes through
:func:`tui.view.fmt.safe`/:func:`~tui.view.fmt.clean`, never through markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from tui.view.fmt import clean, format_age, safe

SEVERITY_ORDER = {"critical": 0, "warning": 1}
"""Worse first; unknown severities after these."""

GROUP_ORDER = ("firing", "silenced", "pending", "resolved")
"""How the list is grouped, most urgent first: a silenced alert still fires, but somebody
already knows about it."""

GROUP_STYLES = {
    "firing": "bold red",
    "silenced": "magenta",
    "pending": "yellow",
    "resolved": "green",
}
SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow", "info": "dim"}


@dataclass(frozen=True, slots=True)
class AlertsData:
    """What one fetch of the alerts view brings: the agent's clock and host, its alerts
    (pending, firing, resolved recently), silences and channel health."""

    now_ms: int
    host: str
    alerts: list[dict[str, Any]] = field(default_factory=list)
    silences: list[dict[str, Any]] = field(default_factory=list)
    channels: list[dict[str, Any]] = field(default_factory=list)


def group_of(alert: Mapping[str, Any]) -> str:
    """``firing``, ``silenced`` (firing but muted by a silence), ``pending`` or ``resolved``."""
    state = str(alert.get("state", ""))
    if state == "firing" and alert.get("silenced_by"):
        return "silenced"
    return state


def sort_alerts(alerts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Firing first, then silenced, pending, resolved; within each, worse severity first,
    then the newest."""

    def key(a: Mapping[str, Any]) -> tuple[int, int, int]:
        group = group_of(a)
        rank = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
        sev = SEVERITY_ORDER.get(str(a.get("severity", "")), len(SEVERITY_ORDER))
        return (rank, sev, -_since_ms(a))

    return sorted(alerts, key=key)


def _since_ms(alert: Mapping[str, Any]) -> int:
    """When the alert entered its current state (its age in the list)."""
    for name in ("resolved_ms", "firing_ms", "pending_ms", "updated_ms"):
        value = alert.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def counts(alerts: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many alerts in each group of :data:`GROUP_ORDER` (all present, zeros included)."""
    out = dict.fromkeys(GROUP_ORDER, 0)
    for a in alerts:
        group = group_of(a)
        if group in out:
            out[group] += 1
    return out


def counts_text(alerts: Sequence[Mapping[str, Any]]) -> Text:
    """``2 firing · 1 silenced · 0 pending · 3 resolved``, coloured where not zero."""
    out = Text()
    for n, (group, count) in enumerate(counts(alerts).items()):
        if n:
            out.append(" · ", style="dim")
        out.append(f"{count} {group}", style=GROUP_STYLES[group] if count else "dim")
    return out


def labels_text(labels: Mapping[str, Any], max_len: int = 60) -> str:
    """``model=llama severity=critical``, cleaned and cut."""
    return clean(" ".join(f"{k}={v}" for k, v in sorted(labels.items())), max_len)


def alert_key(alert: Mapping[str, Any]) -> str:
    """The table row key: the alert's id (fingerprints repeat once resolved and fired again)."""
    return f"alert:{alert.get('id')}"


def alert_row(alert: Mapping[str, Any], now_ms: int) -> list[Text]:
    """state, severity, rule, subject, age, summary, labels: what matters first, as 80
    columns show only the first ones."""
    group = group_of(alert)
    state = group
    if alert.get("flapping"):
        state += "~"
    if alert.get("maintenance") and group != "resolved":
        state += " (maint)"
    labels = alert.get("labels")
    return [
        safe(state, style=GROUP_STYLES.get(group, ""), max_len=20),
        safe(
            alert.get("severity"),
            style=SEVERITY_STYLES.get(str(alert.get("severity")), ""),
            max_len=10,
        ),
        safe(alert.get("rule"), style="bold", max_len=28),
        safe(alert.get("subject"), max_len=32),
        Text(format_age(now_ms, _since_ms(alert) or None), style="dim", justify="right"),
        safe(alert.get("summary"), max_len=80),
        safe(labels_text(labels if isinstance(labels, Mapping) else {}), style="dim"),
    ]


def alert_detail(alert: Mapping[str, Any], now_ms: int) -> Text:
    """The alert under the cursor: summary, value, labels, silence, maintenance, runbook."""
    out = Text()
    out.append_text(safe(alert.get("rule"), style="bold", max_len=64))
    out.append(" on ")
    out.append_text(safe(alert.get("subject"), max_len=64))
    out.append(f" — {clean(group_of(alert), 20)}", style=GROUP_STYLES.get(group_of(alert), ""))
    if alert.get("flapping"):
        out.append(" (flapping)", style="yellow")
    value = alert.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        out.append(f"  value {value:g}", style="dim")
    out.append("\n")
    out.append_text(safe(alert.get("summary") or "-", max_len=200))
    labels = alert.get("labels")
    if isinstance(labels, Mapping) and labels:
        out.append("\nlabels ", style="dim")
        out.append(labels_text(labels, 200))
    if alert.get("silenced_by"):
        out.append(f"\nmuted by silence #{clean(alert['silenced_by'], 12)}", style="magenta")
    if alert.get("maintenance"):
        out.append("\nin maintenance window ", style="dim")
        out.append_text(safe(alert["maintenance"], max_len=64))
    if alert.get("runbook_url"):
        out.append("\nrunbook ", style="dim")
        out.append_text(safe(alert["runbook_url"], max_len=200))
    return out


def silence_matchers(alert: Mapping[str, Any]) -> list[str]:
    """The matchers that silence exactly this alert's labels: ``label="value"`` each (quoted,
    so values with spaces or ``~`` survive the agent's parser)."""
    labels = alert.get("labels")
    if not isinstance(labels, Mapping):
        return []
    return [f'{k}="{v}"' for k, v in sorted(labels.items()) if str(k)]


def silence_key(silence: Mapping[str, Any]) -> str:
    """The silences table's row key."""
    return f"silence:{silence.get('id')}"


def silence_row(silence: Mapping[str, Any], now_ms: int) -> list[Text]:
    """id, state, ends in, matchers, author, comment."""
    ends = silence.get("ends_ms")
    left = ""
    if isinstance(ends, int) and not isinstance(ends, bool) and ends > now_ms:
        left = format_age(ends, now_ms)
    matchers = silence.get("matchers")
    shown = " ".join(str(m) for m in matchers) if isinstance(matchers, list) else ""
    state = str(silence.get("state", ""))
    return [
        Text(f"#{clean(silence.get('id'), 12)}", justify="right"),
        safe(state, style="magenta" if state == "active" else "dim", max_len=10),
        Text(left or "-", style="dim", justify="right"),
        safe(shown, max_len=60),
        safe(silence.get("author"), max_len=32),
        safe(silence.get("comment"), max_len=80),
    ]


def live_silences(silences: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The silences that can still be expired (active or starting later)."""
    return [s for s in silences if s.get("state") in ("active", "pending")]


def failing_channels(channels: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Channels whose delivery health shows a problem: not ok, or notifications given up."""
    return [
        c
        for c in channels
        if c.get("ok") is False
        or _positive(c.get("given_up"))
        or (c.get("ok") is None and c.get("last_error"))
    ]


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def delivery_line(channels: Sequence[Mapping[str, Any]]) -> Text:
    """``✖ delivery failing: slack (HTTP 500: …), pager (2 given up)``, or a dim all-clear
    (``deliveries ok on 3 channels``); empty when no channel is configured."""
    if not channels:
        return Text("no notification channels configured", style="dim")
    bad = failing_channels(channels)
    if not bad:
        return Text(f"deliveries ok on {len(channels)} channel(s)", style="dim green")
    out = Text("✖ delivery failing: ", style="bold red")
    for n, c in enumerate(bad):
        if n:
            out.append(", ")
        out.append_text(safe(c.get("name"), style="bold", max_len=32))
        why: list[str] = []
        if c.get("last_error"):
            why.append(clean(c["last_error"], 80))
        if _positive(c.get("given_up")):
            why.append(f"{c['given_up']} given up")
        if why:
            out.append(f" ({'; '.join(why)})", style="red")
    return out


def alert_matches(alert: Mapping[str, Any], needle: str) -> bool:
    """Whether ``needle`` (case-folded) is in the alert's rule, subject, summary or labels."""
    if not needle:
        return True
    labels = alert.get("labels")
    hay = " ".join(
        (
            str(alert.get("rule", "")),
            str(alert.get("subject", "")),
            str(alert.get("summary", "")),
            str(alert.get("severity", "")),
            group_of(alert),
            labels_text(labels, 2000) if isinstance(labels, Mapping) else "",
        )
    )
    return needle in clean(hay, 4000).casefold()
