"""tui.view.envdrift: the fleet's environment-drift flag (hashes) and the host x item matrix."""

from __future__ import annotations

from rich.text import Text

from tui.view.envdrift import (
    ABSENT,
    DIFF_STYLE,
    MAJORITY_STYLE,
    drift_count,
    hash_drift,
    matrix,
    matrix_rows,
)


def test_three_hosts_one_differs_is_flagged() -> None:
    assert hash_drift({"a": "h1", "b": "h1", "c": "h2"}) == {"c"}


def test_all_agree_or_single_host_or_unknown_is_not_drift() -> None:
    assert hash_drift({"a": "h1", "b": "h1", "c": "h1"}) == set()
    assert hash_drift({"a": "h1"}) == set()
    # An agent that has not answered (None) is neither majority nor difference.
    assert hash_drift({"a": "h1", "b": None, "c": "h1"}) == set()
    assert hash_drift({"a": "h1", "b": None}) == set()


def test_tie_flags_every_host_of_it() -> None:
    assert hash_drift({"a": "h1", "b": "h2"}) == {"a", "b"}
    assert hash_drift({"a": "h1", "b": "h1", "c": "h2", "d": "h2"}) == {"a", "b", "c", "d"}
    # A plurality (2 against 1 and 1) is a majority, as in storage.fleetdrift.
    assert hash_drift({"a": "h1", "b": "h1", "c": "h2", "d": "h3"}) == {"c", "d"}


def test_drift_count_sums_groups() -> None:
    groups = [{"a": "h1", "b": "h1", "c": "h2"}, {"d": "x", "e": "y"}, {"f": "z"}]
    assert drift_count(groups) == 3


def test_matrix_rows_dim_majority_and_highlight_difference() -> None:
    fps = {
        "a": {"python": {"torch": "2.3.0"}, "os": {"kernel": "6.1"}},
        "b": {"python": {"torch": "2.3.0"}, "os": {"kernel": "6.1"}},
        "c": {"python": {"torch": "2.4.1"}, "os": {"kernel": "6.1"}},
    }
    drift = matrix(fps)
    assert drift.hosts == ("a", "b", "c")
    rows = matrix_rows(drift)
    assert [r.label.plain for r in rows] == ["python/torch"]
    (row,) = rows
    assert [c.plain for c in row.cells] == ["2.3.0", "2.3.0", "2.4.1"]
    assert [str(c.style) for c in row.cells] == [MAJORITY_STYLE, MAJORITY_STYLE, DIFF_STYLE]
    assert row.note.plain == "majority: 2.3.0"


def test_matrix_tie_and_absent() -> None:
    fps = {"a": {"gpu": {"driver": "550"}}, "b": {}}
    (row,) = matrix_rows(matrix(fps))
    assert [c.plain for c in row.cells] == ["550", ABSENT]
    assert all(str(c.style) == DIFF_STYLE for c in row.cells)
    assert row.note.plain == "no majority (tie)"


def test_hostile_values_stay_literal() -> None:
    evil = "[bold red]pwn[/] \x1b[31mred\x1b[0m\nnext"
    fps = {
        "a": {"python": {"torch": "2.3.0"}},
        "b": {"python": {"torch": "2.3.0"}},
        "c": {"python": {"torch": evil}},
    }
    (row,) = matrix_rows(matrix(fps))
    cell = row.cells[2]
    assert isinstance(cell, Text)
    assert cell.plain == "[bold red]pwn[/] red next"  # no markup parsed, no escapes, one line
    assert cell.spans == []
    fps2 = {"a": {"[x]": {"[/]": "1"}}, "b": {"[x]": {"[/]": "1"}}, "c": {"[x]": {"[/]": evil}}}
    (row2,) = matrix_rows(matrix(fps2))
    assert row2.label.plain == "[x]/[/]"
    assert row2.note.plain == "majority: 1"
    assert row2.cells[2].plain == "[bold red]pwn[/] red next"
