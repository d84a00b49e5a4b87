"""Serving-environment drift in the fleet view (issue 18): which hosts of a group differ from
the group's majority, and the host x item matrix of what differs.

No Textual here. Two levels, both following ``storage.fleetdrift``'s rules (strict majority,
a tie flags every host of it, unknown hosts left out):

- The flag, cheap enough for every poll of a 1,000-host fleet: only each host's
  ``environment_hash`` (served by ``GET /api/v1/status``) is compared, :func:`hash_drift`.
- The matrix, computed on demand from the hosts' full fingerprints
  (``GET /api/v1/environment``) through ``storage.fleetdrift.group_drift``, :func:`matrix`.

Values come from agents: every cell is a :func:`tui.view.fmt.safe` Text, never markup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rich.text import Text

from storage.environment import Fingerprint
from storage.fleetdrift import GroupDrift, group_drift
from tui.view.fmt import safe

__all__ = [
    "ABSENT",
    "DIFF_STYLE",
    "DRIFT_MARK",
    "MAJORITY_STYLE",
    "MatrixRow",
    "drift_count",
    "hash_drift",
    "matrix",
    "matrix_rows",
]

DRIFT_MARK = "≠env"
"""The note a drifting host gets in the fleet table's problem column."""
ABSENT = "(absent)"
"""How a host without the item shows in the matrix."""
MAJORITY_STYLE = "dim"
DIFF_STYLE = "bold yellow"


def hash_drift(hashes: Mapping[str, str | None]) -> set[str]:
    """The hosts of one group whose environment hash is not the group's majority.

    Args:
        hashes: host -> its ``environment_hash``; None (not known yet, or an agent that does
            not serve one) is left out, as ``storage.fleetdrift`` leaves out unknown hosts.

    Returns:
        The drifting hosts: those off a strict majority, or every known host when the most
        common hashes tie (none can be called the odd one out). Empty when all agree or fewer
        than two hosts are known.
    """
    known = {h: v for h, v in hashes.items() if v is not None}
    ranked = Counter(known.values()).most_common()
    if len(ranked) < 2:
        return set()
    if ranked[0][1] == ranked[1][1]:
        return set(known)
    winner = ranked[0][0]
    return {h for h, v in known.items() if v != winner}


def drift_count(groups: Iterable[Mapping[str, str | None]]) -> int:
    """How many hosts drift over several groups (each a ``hash_drift`` input): the rollup's
    figure."""
    return sum(len(hash_drift(g)) for g in groups)


@dataclass(frozen=True, slots=True)
class MatrixRow:
    """One differing item: its label, one cell per host (in ``hosts`` order), the majority line."""

    key: str
    label: Text
    cells: tuple[Text, ...]
    note: Text


def matrix(fingerprints: Mapping[str, Fingerprint]) -> GroupDrift:
    """The group's drift from the hosts' full fingerprints (unknown hosts left out by the
    caller)."""
    return group_drift(fingerprints)


def _cell(value: str | None, differs: bool) -> Text:
    text = ABSENT if value is None else value
    return safe(text, DIFF_STYLE if differs else MAJORITY_STYLE, max_len=200)


def matrix_rows(drift: GroupDrift) -> list[MatrixRow]:
    """The matrix's rows: one per differing item, cells in ``drift.hosts`` order, the majority
    value dimmed and the differing ones highlighted; the note says the majority (or the tie)."""
    rows: list[MatrixRow] = []
    for d in drift.items:
        differing = set(d.differing)
        cells = tuple(_cell(d.values.get(h), h in differing) for h in drift.hosts)
        label = safe(f"{d.section}/{d.item}", max_len=120)
        if d.tied:
            note = Text("no majority (tie)", style=DIFF_STYLE)
        else:
            note = Text("majority: ")
            note.append_text(safe(ABSENT if d.majority is None else d.majority, max_len=200))
        rows.append(MatrixRow(f"{d.section}\x1f{d.item}", label, cells, note))
    return rows
