"""``vigil deploy --fleet``: wave plans, label selectors and the command line."""

from __future__ import annotations

import pytest

from agent.cli.fleet_deploy import UsageError, parse_selectors, parse_waves
from agent.cli.parser import build_parser


def test_waves_are_cumulative_counts_or_shares() -> None:
    assert parse_waves(None, 3) == [1, 1, 1]
    assert parse_waves("1,25%,100%", 10) == [1, 2, 7]
    assert parse_waves("1,50%", 3) == [1, 1, 1]  # the rest form a last wave
    assert parse_waves("1,1,100%", 4) == [1, 3]  # an empty wave is skipped
    assert parse_waves("5", 2) == [2]
    for bad in ("0", "x", "150%", "3,1"):
        with pytest.raises(UsageError, match="--waves"):
            parse_waves(bad, 4)


def test_group_selectors() -> None:
    assert parse_selectors(["region=eu-west", "env=prod"]) == {"region": "eu-west", "env": "prod"}
    for bad in ("region", "region=", "__x=1"):
        with pytest.raises(UsageError, match="--group"):
            parse_selectors([bad])


def test_the_command_line() -> None:
    args = build_parser().parse_args(
        [
            "deploy",
            "--fleet",
            "f.toml",
            "--group",
            "region=eu",
            "clf",
            "--artifact",
            "/a",
            "--waves",
            "1,100%",
            "--rollback-done",
        ]
    )
    assert args.deploy_command == "start" and args.model == "clf"
    assert args.group == ["region=eu"] and args.waves == "1,100%" and args.rollback_done
