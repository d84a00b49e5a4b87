"""Labels in the fleet view: filtering by them, grouping by one, and each group's rollup row.

No Textual here. A member's labels are those its agent serves (``[agent] labels`` in its
status) with the fleet file's over them (:func:`storage.labels.merge_labels`). A filter is
words, as before, plus ``name=value`` terms: a host matches a term when it has that label and
its value starts with the given text (both case-insensitive), so ``region=eu`` matches
``eu-west`` and ``eu-north``; every term and every word must match. Grouping by a label puts a
header row over each group's hosts (value A-Z, hosts without the label last), with the group's
rollup: hosts by state, models up and down, firing alerts, open incidents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from weakref import WeakKeyDictionary

from rich.text import Text

from storage.labels import Labels, merge_labels
from tui.view.fleetcells import STATE_LABELS, STATE_STYLES, alerts_text
from tui.view.fleetsummary import HostAlerts
from tui.view.fleetview import STATE_SEVERITY, FleetMember, filter_words
from tui.view.fmt import format_percent, format_used_total, level_style, safe

GROUP_PREFIX = "#group:"
"""Row keys of group headers: ``#`` is in no fleet name, so they never clash with a host's."""
NO_LABEL_KEY = "#nolabel"
"""The row key of the group of hosts without the label."""

FLEET_HELP = Text.assemble(
    ("\n\nFilter and groups\n", "bold underline"),
    ("  /", "bold"),
    "  words in the name, address, host, state or problem, and\n",
    "     label terms: ",
    ("region=eu", "bold"),
    " is a host whose label region starts with eu\n",
    "     (case-insensitive); every word and term must match\n",
    ("  b", "bold"),
    "  group by each label in turn (none, then A-Z), a rollup row\n",
    "     over each group; remembered for the fleet file\n",
)
"""The fleet's help, after its keys: the filter syntax and grouping (our own words only)."""

_TERM = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)=(.*)")


_MERGED: WeakKeyDictionary[FleetMember, tuple[Labels, dict[str, str], dict[str, str]]] = (
    WeakKeyDictionary()
)
"""Per member: the labels its agent served, and the merged labels as given and lower-cased.
Each render filters and groups every member, and a poll's summary carries the same labels
nearly always: merged again only when they change (at 1,000 agents, 3.5 ms a render less)."""


def _merged(member: FleetMember) -> tuple[dict[str, str], dict[str, str]]:
    served = member.summary.labels if member.summary is not None else ()
    known = _MERGED.get(member)
    if known is not None and known[0] == served:
        return known[1], known[2]
    merged = merge_labels(dict(served), member.entry.labels)
    lower = {k.lower(): v.lower() for k, v in merged.items()}
    _MERGED[member] = (served, merged, lower)
    return merged, lower


def member_labels(member: FleetMember) -> dict[str, str]:
    """The member's labels: its agent's (as last served), the fleet file's over them.

    The dict is shared by later calls: read it, do not change it.
    """
    return _merged(member)[0]


def label_keys(members: Iterable[FleetMember]) -> list[str]:
    """Every label name some member has, A-Z: what grouping can cycle through."""
    keys: set[str] = set()
    for member in members:
        keys.update(member_labels(member))
    return sorted(keys)


def next_grouping(current: str, keys: Sequence[str]) -> str:
    """The grouping after ``current`` in the cycle none -> each key -> none (``""``: none).

    A remembered key that no member has (yet) is followed by the first key.
    """
    if current not in keys:
        return keys[0] if keys else ""
    index = keys.index(current) + 1
    return keys[index] if index < len(keys) else ""


@dataclass(frozen=True, slots=True)
class FleetFilter:
    """What the filter bar asks for.

    Attributes:
        words: Lower-case words, each of which must be in a host's name, address, host, state
            or problem (:func:`tui.view.fleetview.matches`).
        terms: ``(name, value prefix)`` pairs, lower case, each a label the host must have.
    """

    words: list[str] = field(default_factory=list)
    terms: list[tuple[str, str]] = field(default_factory=list)

    def matches_labels(self, member: FleetMember) -> bool:
        """Whether the member has every label of :attr:`terms` (value by prefix)."""
        if not self.terms:
            return True
        labels = _merged(member)[1]
        return all(
            name in labels and labels[name].startswith(prefix) for name, prefix in self.terms
        )


def parse_filter(text: str) -> FleetFilter:
    """Split the filter bar's text into words and ``name=value`` label terms."""
    words: list[str] = []
    terms: list[tuple[str, str]] = []
    for word in filter_words(text):
        m = _TERM.fullmatch(word)
        if m:
            terms.append((m.group(1), m.group(2)))
        else:
            words.append(word)
    return FleetFilter(words, terms)


@dataclass(slots=True)
class Rollup:
    """One group's numbers.

    Attributes:
        hosts: Hosts in the group (those the filter shows).
        states: Hosts by state word (``ok``, ``degraded``, ``failing``, ``unreachable`` ...;
            a timeout counts as unreachable).
        models_up: Models up, over the hosts that have answered.
        models_down: Models down.
        models_total: Models configured.
        firing: Alerts firing and not muted, over the hosts answering now (an unreachable
            host's last counts are not news of now, as in the summary line).
        critical: How many of ``firing`` are critical.
        muted: Alerts firing but silenced or in maintenance.
        incidents: Open incidents, over the hosts that said.
        incidents_unknown: Hosts that could not say (older agents, failed requests).
    """

    hosts: int = 0
    states: dict[str, int] = field(default_factory=dict)
    models_up: int = 0
    models_down: int = 0
    models_total: int = 0
    firing: int = 0
    critical: int = 0
    muted: int = 0
    incidents: int = 0
    incidents_unknown: int = 0
    cpu: list[float] = field(default_factory=list)
    gpu_util: list[float] = field(default_factory=list)
    gpu_used: float = 0.0
    gpu_total: float = 0.0

    def add(self, member: FleetMember, now: float) -> None:
        """Count one host."""
        self.hosts += 1
        state = member.state(now)
        state = "unreachable" if state == "timeout" else state
        self.states[state] = self.states.get(state, 0) + 1
        s = member.summary
        if s is None:
            return
        self.models_up += s.models_up
        self.models_down += s.models_down
        self.models_total += s.models_total
        if s.open_incidents is None:
            self.incidents_unknown += 1
        else:
            self.incidents += s.open_incidents
        if member.error is None and s.alerts is not None:
            self.firing += s.alerts.firing
            self.critical += s.alerts.critical
            self.muted += s.alerts.muted
        if member.error is None:
            if s.cpu_percent is not None:
                self.cpu.append(s.cpu_percent)
            if s.gpu_util_percent is not None:
                self.gpu_util.append(s.gpu_util_percent)
            if s.gpu_mem_used_bytes is not None and s.gpu_mem_total_bytes:
                self.gpu_used += s.gpu_mem_used_bytes
                self.gpu_total += s.gpu_mem_total_bytes

    def state_words(self) -> str:
        """``3 ok, 1 degraded, 1 unreachable``, worst last, in the summary line's order."""
        parts = []
        for state in STATE_STYLES:
            if self.states.get(state):
                parts.append(f"{self.states[state]} {STATE_LABELS.get(state, state)}")
        return ", ".join(parts)


def rollup(members: Iterable[FleetMember], now: float) -> Rollup:
    """The numbers of a group of members."""
    out = Rollup()
    for member in members:
        out.add(member, now)
    return out


@dataclass(slots=True)
class Group:
    """The hosts sharing one value of the grouping label.

    Attributes:
        value: The label's value; None for the hosts without the label.
        members: In display order.
    """

    value: str | None
    members: list[FleetMember] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The header row's key."""
        return NO_LABEL_KEY if self.value is None else GROUP_PREFIX + self.value


def group_members(ordered: Iterable[FleetMember], label: str) -> list[Group]:
    """Members split by their value of ``label``, each group in the given order: groups by
    value A-Z (case-insensitive), the hosts without the label last."""
    groups: dict[str | None, Group] = {}
    for member in ordered:
        value = member_labels(member).get(label)
        group = groups.get(value)
        if group is None:
            group = groups[value] = Group(value)
        group.members.append(member)
    named = sorted((g for v, g in groups.items() if v is not None), key=_value_order)
    rest = [groups[None]] if None in groups else []
    return [*named, *rest]


def _value_order(group: Group) -> tuple[str, str]:
    value = group.value or ""
    return (value.lower(), value)


def grouped_rows(
    ordered: Sequence[FleetMember], label: str, now: float
) -> tuple[list[str], dict[str, list[Text]]]:
    """The table's row keys with a header row over each group, and the headers' cells.

    Args:
        ordered: The members shown, sorted (the order holds within each group).
        label: The label grouped by.
        now: The members' clock's now.

    Returns:
        Row keys in display order, and the cells of every header row.
    """
    keys: list[str] = []
    cells: dict[str, list[Text]] = {}
    for group in group_members(ordered, label):
        keys.append(group.key)
        cells[group.key] = group_cells(label, group.value, rollup(group.members, now))
        keys.extend(m.name for m in group.members)
    return keys, cells


def group_cells(label: str, value: str | None, r: Rollup) -> list[Text]:
    """A group header's cells, in :data:`tui.view.fleetcells.COLUMNS` order.

    The name cell says the group (``▾ region=eu-west``); status the host count, coloured by the
    worst state in the group; the measures are the group's (models up/total, alerts as a host's
    cell shows them, incidents summed, CPU and GPU averaged over the hosts answering); the
    problem cell spells the rollup out in words.
    """
    right: Literal["right"] = "right"
    title = f"▾ {label}={value}" if value is not None else f"▾ no {label}"
    name = safe(title, style="bold", max_len=64)
    worst = min(r.states, key=lambda s: STATE_SEVERITY.get(s, 2), default="ok")
    status = Text(f"{r.hosts} host{'s' if r.hosts != 1 else ''}", style="bold " + _style(worst))
    alerts = alerts_text(HostAlerts(firing=r.firing, critical=r.critical, silenced=r.muted))
    if r.models_total:
        style = "red" if r.models_down else "yellow" if r.models_up < r.models_total else "green"
        models = Text(f"{r.models_up}/{r.models_total}", style="bold " + style, justify=right)
    else:
        models = Text("-", style="dim", justify=right)
    incidents = Text(
        str(r.incidents) + ("?" if r.incidents_unknown else ""),
        style="bold yellow" if r.incidents else "dim",
        justify=right,
    )
    cpu_mean = sum(r.cpu) / len(r.cpu) if r.cpu else None
    gpu_mean = sum(r.gpu_util) / len(r.gpu_util) if r.gpu_util else None
    cpu = Text(format_percent(cpu_mean), style=level_style(cpu_mean), justify=right)
    if gpu_mean is None:
        gpu = Text("-", style="dim", justify=right)
    else:
        gpu = Text(format_percent(gpu_mean), style=level_style(gpu_mean), justify=right)
    if r.gpu_total:
        percent = r.gpu_used / r.gpu_total * 100
        gpumem = Text(
            format_used_total(r.gpu_used, r.gpu_total), style=level_style(percent), justify=right
        )
    else:
        gpumem = Text("-", style="dim", justify=right)
    blank = Text("", justify=right)
    return [
        name,
        status,
        alerts,
        models,
        blank,  # p95 TTFT: a worst of many hosts' worsts says little; the rows have theirs
        gpu,
        gpumem,
        incidents,
        cpu,
        Text(""),
        blank,
        Text(rollup_words(r), style="bold"),
    ]


def _style(state: str) -> str:
    return STATE_STYLES.get(state, "").replace("bold ", "")


def rollup_words(r: Rollup) -> str:
    """The rollup in words: ``3 ok, 1 failing; models 10 up, 2 down; 3 alerts firing (1
    critical); 4 incidents open``."""
    parts = [r.state_words()]
    if r.models_total:
        parts.append(f"models {r.models_up} up, {r.models_down} down")
    if r.firing:
        critical = f" ({r.critical} critical)" if r.critical else ""
        parts.append(f"{r.firing} alert{'s' if r.firing != 1 else ''} firing{critical}")
    if r.incidents:
        parts.append(f"{r.incidents} incident{'s' if r.incidents != 1 else ''} open")
    return "; ".join(p for p in parts if p)
