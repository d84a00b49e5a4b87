"""Host labels: the rules (storage.labels), ``[agent] labels`` in the config, ``labels`` in the
fleet file ([defaults] and per agent, over the agent's own), and the fleet view's pure parts
(filter terms, the grouping cycle, the rollup, the remembered grouping)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from storage.labels import (
    MAX_LABELS,
    LabelError,
    check_labels,
    merge_labels,
    read_labels,
)
from storage.records import AgentStatus
from tests.fakes.fleet_agents import labelled_status
from tui.fleet import FleetEntry, FleetError, parse_fleet
from tui.view.fleetgroups import (
    group_members,
    label_keys,
    member_labels,
    next_grouping,
    parse_filter,
    rollup,
)
from tui.view.fleetsummary import summarize
from tui.view.fleetview import FleetMember
from tui.view.uistate import load_group_by, save_group_by, state_path

# --- the rules --------------------------------------------------------------------------------


def test_check_labels_sorts_and_accepts_prometheus_names() -> None:
    got = check_labels({"team": "search", "region": "eu-west", "_x9": "GPU A100 (80 GB)"})
    assert got == (("_x9", "GPU A100 (80 GB)"), ("region", "eu-west"), ("team", "search"))


@pytest.mark.parametrize(
    ("raw", "name", "words"),
    [
        ({"9lives": "x"}, "9lives", "label name"),
        ({"bad-name": "x"}, "bad-name", "label name"),
        ({"__name__": "x"}, "__name__", "'__'"),
        ({"a" * 65: "x"}, "a" * 65, "1-64"),
        ({"région": "x"}, "région", "label name"),
        ({"region": ""}, "region", "1-128 printable"),
        ({"region": "   "}, "region", "printable"),
        ({"region": "x" * 129}, "region", "1-128"),
        ({"region": "eu\x1b[31mwest"}, "region", "control characters"),
        ({"region": "eu\nwest"}, "region", "line breaks"),
        ({"region": "eu\u202ewest"}, "region", "invisible"),
        ({"gpu": 8}, "gpu", "got an integer 8"),
        ({"gpu": ["a100"]}, "gpu", "got an array"),
        ({f"l{i}": "x" for i in range(MAX_LABELS + 1)}, None, f"at most {MAX_LABELS}"),
    ],
)
def test_check_labels_refuses(raw: dict[str, object], name: str | None, words: str) -> None:
    with pytest.raises(LabelError) as info:
        check_labels(raw)
    assert info.value.name == name
    assert words in info.value.reason


def test_empty_value_only_where_it_removes() -> None:
    assert check_labels({"env": ""}, allow_empty=True) == (("env", ""),)
    assert merge_labels({"env": "prod", "gpu": "a100"}, (("env", ""), ("region", "eu"))) == {
        "gpu": "a100",
        "region": "eu",
    }


def test_read_labels_keeps_only_what_obeys_the_rules() -> None:
    served = {"region": "eu", "bad name": "x", "gpu": 8, "esc": "\x1b]0;pwned\x07", "e": ""}
    assert read_labels(served) == {"region": "eu"}
    assert read_labels(["region", "eu"]) == {}
    assert read_labels(None) == {}


def test_status_carries_labels_through_json() -> None:
    status = AgentStatus("h", "1", 0, 1, labels=(("env", "prod"), ("region", "eu")))
    body = status.to_json()
    assert body["labels"] == {"env": "prod", "region": "eu"}
    assert AgentStatus.from_json(json.loads(json.dumps(body))) == status
    del body["labels"]  # an agent older than labels
    assert AgentStatus.from_json(body).labels == ()


# --- [agent] labels ---------------------------------------------------------------------------


def _config(tmp_path: Path, agent: str) -> Path:
    path = tmp_path / "vigil.toml"
    path.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n{agent}\n', encoding="utf-8")
    return path


def test_agent_labels_in_the_config(tmp_path: Path) -> None:
    cfg = load_config(
        _config(tmp_path, 'labels = { region = "eu-west", team = "search", gpu = "a100" }')
    )
    assert cfg.agent.labels == (("gpu", "a100"), ("region", "eu-west"), ("team", "search"))
    assert load_config(_config(tmp_path, "")).agent.labels == ()
    table = '\n[agent.labels]\nregion = "eu-west"\nenv = "prod"'
    assert load_config(_config(tmp_path, table)).agent.labels == (
        ("env", "prod"),
        ("region", "eu-west"),
    )


@pytest.mark.parametrize(
    ("agent", "where", "words"),
    [
        ('labels = { "bad-name" = "x" }', ":3: agent.labels.bad-name: ", "label name"),
        ('\n[agent.labels]\nregion = "eu"\ngpu = 8', ":6: agent.labels.gpu: ", "an integer 8"),
        ('labels = { region = "" }', ":3: agent.labels.region: ", "1-128 printable"),
        ('labels = "eu-west"', ":3: agent.labels: ", "a table of label names to strings"),
    ],
)
def test_agent_labels_refused_with_file_line_field(
    tmp_path: Path, agent: str, where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, agent))
    assert where in str(info.value)
    assert words in str(info.value)


# --- the fleet file ---------------------------------------------------------------------------

FLEET = """
[defaults]
token = "t"
labels = { team = "search", env = "prod" }

[[agent]]
name = "a"
url = "http://127.0.0.1:1"
labels = { env = "", region = "eu-west" }

[[agent]]
name = "b"
url = "http://127.0.0.1:2"
"""


def test_fleet_labels_defaults_then_agent(tmp_path: Path) -> None:
    a, b = parse_fleet(FLEET, tmp_path / "fleet.toml")
    assert a.labels == (("env", ""), ("region", "eu-west"), ("team", "search"))
    assert b.labels == (("env", "prod"), ("team", "search"))


def test_fleet_labels_win_over_the_agents(tmp_path: Path) -> None:
    a, b = parse_fleet(FLEET, tmp_path / "fleet.toml")
    served = {"env": "staging", "region": "us-east", "gpu": "h100"}
    members = []
    for entry in (a, b):
        member = FleetMember(entry)
        member.summary = summarize(labelled_status(entry.name, served).to_json())
        members.append(member)
    # a: env removed by "", region and team from the file, gpu from the agent.
    assert member_labels(members[0]) == {"region": "eu-west", "team": "search", "gpu": "h100"}
    assert member_labels(members[1]) == {
        "env": "prod",
        "region": "us-east",
        "team": "search",
        "gpu": "h100",
    }
    assert label_keys(members) == ["env", "gpu", "region", "team"]


DEFAULTS = 'labels = { team = "search", env = "prod" }'
AGENT_A = 'labels = { env = "", region = "eu-west" }'


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        ((DEFAULTS, 'labels = { "1x" = "y" }'), ":4: defaults.labels.1x", "label name"),
        ((AGENT_A, "labels = { region = 3 }"), ":9: agent[0].labels.region", "an integer 3"),
        ((AGENT_A, 'labels = ["eu"]'), ":9: agent[0].labels", "a table of label names"),
    ],
)
def test_fleet_labels_refused(
    tmp_path: Path, change: tuple[str, str], where: str, words: str
) -> None:
    with pytest.raises(FleetError) as info:
        parse_fleet(FLEET.replace(*change), tmp_path / "fleet.toml")
    assert where in str(info.value)
    assert words in str(info.value)


def test_fleet_labels_bounded_with_defaults(tmp_path: Path) -> None:
    many = ", ".join(f'd{i} = "x"' for i in range(MAX_LABELS))
    text = FLEET.replace('labels = { team = "search", env = "prod" }', f"labels = {{ {many} }}")
    with pytest.raises(FleetError, match=r"agent\[0\]\.labels: expected at most 32 labels"):
        parse_fleet(text, tmp_path / "fleet.toml")


# --- the fleet view's pure parts --------------------------------------------------------------


def test_parse_filter_words_and_terms() -> None:
    f = parse_filter("  gpu-0 Region=EU team=  slow x=y=z 9a=b ")
    assert f.words == ["gpu-0", "slow", "9a=b"]
    assert f.terms == [("region", "eu"), ("team", ""), ("x", "y=z")]


def test_next_grouping_cycles() -> None:
    keys = ["env", "region", "team"]
    seen = [""]
    for _ in range(4):
        seen.append(next_grouping(seen[-1], keys))
    assert seen == ["", "env", "region", "team", ""]
    assert next_grouping("zone", keys) == "env"  # remembered, no host has it (yet)
    assert next_grouping("", []) == ""


def _member(name: str, labels: dict[str, str], **status: int) -> FleetMember:
    member = FleetMember(FleetEntry(name, "http://127.0.0.1:1", "t"))
    member.summary = summarize(labelled_status(name, labels, **status).to_json())
    return member


def test_groups_and_rollup() -> None:
    members = [
        _member("a", {"region": "eu-west"}, up=2),
        _member("b", {"region": "EU-north"}, down=2),
        _member("c", {}, up=1),
        _member("d", {"region": "eu-west"}, up=1, down=1),
    ]
    groups = group_members(members, "region")
    assert [(g.value, [m.name for m in g.members]) for g in groups] == [
        ("EU-north", ["b"]),
        ("eu-west", ["a", "d"]),
        (None, ["c"]),
    ]
    r = rollup(groups[1].members, now=0.0)
    assert (r.hosts, r.models_up, r.models_down, r.models_total) == (2, 3, 1, 4)
    assert r.states == {"ok": 1, "failing": 1}
    assert r.incidents_unknown == 2  # no /incidents answer read in these summaries


def test_group_by_remembered_per_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_path() == tmp_path / "vigil" / "tui.json"
    assert load_group_by("/f1") == ""
    assert save_group_by("/f1", "region") and save_group_by("/f2", "team")
    assert (load_group_by("/f1"), load_group_by("/f2")) == ("region", "team")
    state_path().write_text('{"fleet": {"/f1": {"group_by": "bad name"}}}')
    assert load_group_by("/f1") == ""  # edited by hand into no label name
    state_path().write_text("{not json")
    assert load_group_by("/f1") == ""
    assert save_group_by("/f1", "env") and load_group_by("/f1") == "env"


def test_group_by_not_written_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))  # a file where a directory should be
    assert save_group_by("/f1", "region") is False
    assert load_group_by("/f1") == ""


def test_summary_reads_served_labels() -> None:
    status = labelled_status("h", {"region": "eu"}).to_json()
    assert summarize(status).labels == (("region", "eu"),)
    status["labels"] = {"region": 5}
    assert summarize(status).labels == ()
    assert replace(summarize(status), labels=()) == summarize(status)
