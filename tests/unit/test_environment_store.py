"""The serving-environment fingerprint's pure parts (merge, diff, hash), its table on a real
SQLite database, and fleet drift (majority per item, who differs, ties)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from storage import environment as env
from storage.db import migrate
from storage.environment import Collected, EnvChange
from storage.fleetdrift import group_drift

OLD = {
    "host": {"kernel": "6.1.0", "os": "Debian GNU/Linux 12"},
    "process:vllm": {"python": "3.11.7", "pkg:torch": "2.3.0", "pkg:vllm": "0.6.2"},
    "model:llama": {"server.version": "0.6.2", "served": "/models/llama"},
}


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:", isolation_level=None)
    migrate(c)
    return c


def test_diff_lists_added_changed_and_removed_items_in_order() -> None:
    new = {
        "host": {"kernel": "6.1.0", "os": "Debian GNU/Linux 12"},
        "process:vllm": {"python": "3.11.7", "pkg:torch": "2.4.0", "pkg:numpy": "2.0.1"},
        "gpu": {"driver": "550.54.15"},
    }
    assert env.diff(OLD, new) == [
        EnvChange("gpu", "driver", None, "550.54.15"),
        EnvChange("model:llama", "served", "/models/llama", None),
        EnvChange("model:llama", "server.version", "0.6.2", None),
        EnvChange("process:vllm", "pkg:numpy", None, "2.0.1"),
        EnvChange("process:vllm", "pkg:torch", "2.3.0", "2.4.0"),
        EnvChange("process:vllm", "pkg:vllm", "0.6.2", None),
    ]
    assert env.diff(OLD, OLD) == []
    assert EnvChange("p", "pkg:torch", "2.3.0", "2.4.0").describe() == "p pkg:torch 2.3.0 -> 2.4.0"
    assert EnvChange("p", "x", None, "1").describe() == "p x (none) -> 1"


def test_merge_keeps_unknown_items_and_drops_sections_no_longer_there() -> None:
    # The model server did not answer (its server.* items unknown); the process is not
    # running and says nothing (the whole section unknown); the host was read.
    collected = Collected(
        sections={
            "host": {"kernel": "6.1.1", "os": "Debian GNU/Linux 12"},
            "model:llama": {"served": "/models/llama"},
        },
        unknown=frozenset({("model:llama", "server"), ("process:vllm", "")}),
    )
    merged = env.merge(OLD, collected)
    assert merged == {
        "host": {"kernel": "6.1.1", "os": "Debian GNU/Linux 12"},
        "process:vllm": OLD["process:vllm"],
        "model:llama": {"server.version": "0.6.2", "served": "/models/llama"},
    }
    # A section neither collected nor unknown (its model removed from the config) is gone.
    assert "model:llama" not in env.merge(OLD, Collected(sections={"host": {"kernel": "x"}}))
    # An unknown section with nothing known before stays absent, not an empty section.
    assert env.merge({}, Collected({}, frozenset({("process:new", "")}))) == {}


def test_hash_is_compact_and_independent_of_order() -> None:
    h = env.fingerprint_hash(OLD)
    assert h.startswith("sha256:") and len(h) == len("sha256:") + 16
    reordered = {k: dict(reversed(list(v.items()))) for k, v in reversed(list(OLD.items()))}
    assert env.fingerprint_hash(reordered) == h
    changed = {**OLD, "process:vllm": {**OLD["process:vllm"], "pkg:torch": "2.4.0"}}
    assert env.fingerprint_hash(changed) != h


def test_store_current_and_history_read_back_the_changes(conn: sqlite3.Connection) -> None:
    assert env.current(conn) == {}
    first = env.diff({}, OLD)
    assert env.store(conn, 1000, first) == len(first)
    assert env.current(conn) == OLD
    new = {**OLD, "process:vllm": {"python": "3.11.7", "pkg:torch": "2.4.0"}}
    changes = env.diff(OLD, new)
    env.store(conn, 2000, changes)
    assert env.current(conn) == new
    assert env.current(conn, at_ms=1500) == OLD  # the environment as it was then
    hist = env.history(conn, limit=2)
    assert [ts for ts, _ in hist] == [2000, 2000]
    assert {c for _, c in hist} == {
        EnvChange("process:vllm", "pkg:torch", "2.3.0", "2.4.0"),
        EnvChange("process:vllm", "pkg:vllm", "0.6.2", None),
    }
    assert env.store(conn, 3000, []) == 0


def test_last_change_reads_the_newest_event(conn: sqlite3.Connection) -> None:
    assert env.last_change(conn) is None
    changes = [EnvChange("gpu", "driver", "535.1", "550.54.15").to_json()]
    for seq, ts in ((1, 10), (2, 20)):
        conn.execute(
            "INSERT INTO events (seq, ts, kind, subject, message, data, prev_hash, hash) "
            "VALUES (?, ?, 'environment.changed', 'gpu', 'm', ?, '', '')",
            (seq, ts, json.dumps({"changes": changes})),
        )
    assert env.last_change(conn) == {"ts_ms": 20, "message": "m", "changes": changes}


def _host(torch: str, driver: str | None = "550.54.15") -> dict[str, dict[str, str]]:
    fp = {
        "host": {"kernel": "6.1.0", "cpu.model": "AMD EPYC 7763"},
        "process:vllm": {"python": "3.11.7", "pkg:torch": torch},
    }
    if driver is not None:
        fp["gpu"] = {"driver": driver, "device.0": "NVIDIA H100 80GB HBM3"}
    return fp


def test_three_hosts_one_differs() -> None:
    drift = group_drift({"a": _host("2.4.0"), "b": _host("2.4.0"), "c": _host("2.3.0")})
    assert drift.hosts == ("a", "b", "c")
    assert drift.majority[("process:vllm", "pkg:torch")] == "2.4.0"
    assert drift.majority[("host", "kernel")] == "6.1.0"
    assert [(d.section, d.item, d.differing, d.tied) for d in drift.items] == [
        ("process:vllm", "pkg:torch", ("c",), False)
    ]
    assert drift.items[0].values == {"a": "2.4.0", "b": "2.4.0", "c": "2.3.0"}
    assert drift.differing_hosts == {"c": [("process:vllm", "pkg:torch")]}
    doc = drift.to_json()
    assert doc["differing_hosts"] == {"c": [{"section": "process:vllm", "item": "pkg:torch"}]}
    assert doc["majority"]["process:vllm"]["pkg:torch"] == "2.4.0"
    json.dumps(doc)


def test_an_absent_item_is_a_value_and_can_be_the_odd_one_out() -> None:
    drift = group_drift({"a": _host("2.4.0"), "b": _host("2.4.0"), "cpu": _host("2.4.0", None)})
    assert drift.differing_hosts == {
        "cpu": [("gpu", "device.0"), ("gpu", "driver")],
    }
    # ... and the majority when most hosts lack it.
    drift = group_drift({"a": _host("2.4.0", None), "b": _host("2.4.0", None), "g": _host("2.4.0")})
    assert drift.majority[("gpu", "driver")] is None
    assert {d.item: d.differing for d in drift.items} == {"device.0": ("g",), "driver": ("g",)}


def test_ties_have_no_majority_and_flag_every_host() -> None:
    drift = group_drift({"a": _host("2.4.0"), "b": _host("2.3.0")})
    (item,) = drift.items
    assert item.tied and item.majority is None and item.differing == ("a", "b")
    # 2 against 2 ties too; 2 against 1 against 1 does not (a plurality is enough).
    four = group_drift({"a": _host("1"), "b": _host("1"), "c": _host("2"), "d": _host("2")}).items[
        0
    ]
    assert four.tied and four.differing == ("a", "b", "c", "d")
    plural = group_drift(
        {"a": _host("1"), "b": _host("1"), "c": _host("2"), "d": _host("3")}
    ).items[0]
    assert not plural.tied and plural.majority == "1" and plural.differing == ("c", "d")


def test_one_host_or_none_never_drifts() -> None:
    assert group_drift({"a": _host("2.4.0")}).items == ()
    empty = group_drift({})
    assert empty.items == () and empty.hosts == () and empty.majority == {}
