"""Environment drift in a group of hosts: each item's majority value, and who differs from it.

Pure, Textual-free and agent-free, so the TUI's fleet view (``tui`` may import ``storage``) and
the fleet report (``agent.report``) compute the same answer from the same fingerprints.

The rules, item by item (an item is a ``(section, item)`` pair of the hosts' fingerprints,
``storage.environment``):

- A host without the item holds the value "absent" (None), which counts like any other value:
  in a group of three GPU hosts of which one has no ``gpu`` section, that host differs.
- The majority value is the one held by strictly more hosts than any other. It need not be
  more than half: with values held by 2, 1 and 1 hosts, the 2 win.
- A tie for the most hosts (2 against 2, or 1 against 1 between two hosts) has no majority:
  ``majority`` is None, ``tied`` is True, and every host of the item is listed as differing,
  since none can be called the odd one out.
- An item every host agrees on is not drift. A group of one host never drifts.

Hosts whose fingerprint is not known (an agent that did not answer) are left out by the caller:
an unknown environment is neither the majority nor a difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.environment import Fingerprint

__all__ = ["GroupDrift", "ItemDrift", "group_drift"]


@dataclass(frozen=True, slots=True)
class ItemDrift:
    """One item across the group: each host's value (None: absent), the majority, who differs."""

    section: str
    item: str
    values: Mapping[str, str | None]
    majority: str | None
    """The majority value; None when tied, or when the majority is "absent" (see ``tied``)."""
    tied: bool
    differing: tuple[str, ...]
    """Hosts whose value is not the majority's (all of them when tied), sorted."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "section": self.section,
            "item": self.item,
            "majority": self.majority,
            "tied": self.tied,
            "differing": list(self.differing),
            "values": dict(self.values),
        }


@dataclass(frozen=True, slots=True)
class GroupDrift:
    """A group's drift: the majority of every item, the items that differ, by host."""

    hosts: tuple[str, ...]
    majority: Mapping[tuple[str, str], str | None]
    """Every item's majority value (None: absent on most hosts, or tied)."""
    items: tuple[ItemDrift, ...]
    """The items on which the hosts do not all agree, by section and item."""

    @property
    def differing_hosts(self) -> dict[str, list[tuple[str, str]]]:
        """host -> the items on which it differs (only hosts that differ somewhere)."""
        out: dict[str, list[tuple[str, str]]] = {}
        for d in self.items:
            for host in d.differing:
                out.setdefault(host, []).append((d.section, d.item))
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (the majority as ``{section: {item: value}}``)."""
        majority: dict[str, dict[str, str | None]] = {}
        for (section, item), value in sorted(self.majority.items()):
            majority.setdefault(section, {})[item] = value
        return {
            "hosts": list(self.hosts),
            "majority": majority,
            "items": [d.to_json() for d in self.items],
            "differing_hosts": {
                h: [{"section": s, "item": i} for s, i in items]
                for h, items in sorted(self.differing_hosts.items())
            },
        }


def group_drift(fingerprints: Mapping[str, Fingerprint]) -> GroupDrift:
    """The drift of one group of hosts (see the module's rules).

    Args:
        fingerprints: host -> its fingerprint (``{section: {item: value}}``, as
            ``GET /api/v1/environment`` serves under ``sections``).
    """
    hosts = tuple(sorted(fingerprints))
    keys = sorted(
        {(s, i) for fp in fingerprints.values() for s, items in fp.items() for i in items}
    )
    majority: dict[tuple[str, str], str | None] = {}
    drifting: list[ItemDrift] = []
    for section, item in keys:
        values = {h: fingerprints[h].get(section, {}).get(item) for h in hosts}
        ranked = Counter(values.values()).most_common()
        top_count = ranked[0][1]
        tied = len(ranked) > 1 and ranked[1][1] == top_count
        winner = None if tied else ranked[0][0]
        majority[(section, item)] = winner
        if len(ranked) == 1:
            continue
        differing = tuple(h for h in hosts if tied or values[h] != winner)
        drifting.append(ItemDrift(section, item, values, winner, tied, differing))
    return GroupDrift(hosts=hosts, majority=majority, items=tuple(drifting))
