"""``[model.deploy]``: defaults, and every refusal naming its field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, DeployConfig, parse_config

BASE = """
[[process]]
name = "srv"
command = ["server", "--model", "/m/current"]

[[process]]
name = "unit"
systemd_unit = "x.service"

[[model]]
name = "m"
protocol = "kserve_v2"
url = "http://127.0.0.1:1"
interval = "1s"
process = "srv"
"""


def parse(deploy: str, model_extra: str = "") -> DeployConfig | None:
    return parse_config(BASE + model_extra + "[model.deploy]\n" + deploy).models[0].deploy


def test_defaults_and_values() -> None:
    d = parse('link = "/m/current"\n')
    assert d is not None
    assert d.link == Path("/m/current")
    assert (d.strategy, d.bake_s, d.min_good_canaries, d.max_bad_canaries) == (
        "in-place",
        300.0,
        3,
        0,
    )
    assert (d.latency_ratio_max, d.latency_min_delta_ms, d.throughput_ratio_min) == (
        1.25,
        20.0,
        0.8,
    )
    assert d.golden and not d.require_approval and d.approver_must_differ
    assert parse_config(BASE).models[0].deploy is None
    d = parse(
        'link = "/m/current"\nbake = "10s"\nlatency_min_delta = "5ms"\nrequire_approval = true\n'
        'approval_timeout = "1h"\nthroughput_ratio_min = 0.5\n'
    )
    assert d is not None
    assert (d.bake_s, d.latency_min_delta_ms, d.require_approval, d.approval_timeout_s) == (
        10.0,
        5.0,
        True,
        3600.0,
    )
    model = parse_config(BASE + '[model.deploy]\nlink = "/m/current"\n').models[0]
    assert model.deploy_process == "srv"


@pytest.mark.parametrize(
    ("deploy", "field", "words"),
    [
        ('link = "relative/current"', "deploy.link", "expected an absolute path"),
        ('link = "/m/c"\nstrategy = "rolling"', "deploy.strategy", "expected one of 'in-place'"),
        ('link = "/m/c"\nbake = "2s"', "deploy.bake", "at least min_good_canaries x interval"),
        ('link = "/m/c"\nprocess = "nope"', "deploy.process", "no [[process]] has that name"),
        ('link = "/m/c"\nprocess = "unit"', "deploy.process", "is a systemd target"),
        ('link = "/m/c"\nlatency_ratio_max = 0.9', "deploy.latency_ratio_max", "at least 1"),
        ('link = "/m/c"\nthroughput_ratio_min = 1.5', "deploy.throughput_ratio_min", "1"),
        ('link = "/m/c"\nmin_good_canaries = 0', "deploy.min_good_canaries", "1 or more"),
        ('link = "/m/c"\nbaek = "1m"', "deploy.baek", "unknown"),
    ],
)
def test_refusals_name_the_field(deploy: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(deploy + "\n")
    assert f"model[0].{field}" in str(err.value)
    assert words in str(err.value)


def test_a_link_needs_a_process() -> None:
    text = """
[[model]]
name = "m"
protocol = "kserve_v2"
url = "http://127.0.0.1:1"
[model.deploy]
link = "/m/current"
"""
    with pytest.raises(ConfigError, match=r"model\[0\]\.deploy\.process: a deploy restarts"):
        parse_config(text)
