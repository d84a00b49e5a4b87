"""``vigil deploy``'s command line: a first word that is no subcommand is a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import build_parser
from agent.cli.deploy_cmd import VERBS, parse_shorthand


def test_a_model_first_means_start() -> None:
    args = build_parser().parse_args(["deploy", "iris", "--artifact", "/m/v2", "--wait"])
    assert (args.deploy_command, args.model, args.artifact, args.wait) == (
        "start",
        "iris",
        Path("/m/v2"),
        True,
    )
    args = build_parser().parse_args(["deploy", "start", "list", "--artifact", "/m/v2"])
    assert (args.deploy_command, args.model) == ("start", "list")  # a model named like a verb


@pytest.mark.parametrize("verb", [v for v in VERBS if v != "start"])
def test_the_verbs_stay_verbs(verb: str) -> None:
    assert parse_shorthand([verb, "x"]) == [verb, "x"]
    assert parse_shorthand(["--help"]) == ["--help"]


def test_rollback_and_lineage_flags() -> None:
    args = build_parser().parse_args(["rollback", "iris", "--to", "3", "--bake", "10m"])
    assert (args.command, args.model, args.to, args.bake) == ("rollback", "iris", "3", "10m")
    args = build_parser().parse_args(
        ["deploy", "record", "iris", "--version-hash", "sha256:ab", "--git-sha", "deadbeef"]
    )
    assert (args.version_hash, args.git_sha, args.artifact) == ("sha256:ab", "deadbeef", None)


def test_a_deploy_without_an_artifact_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["deploy", "iris"])
    assert done.value.code == 2
    assert "--artifact" in capsys.readouterr().err


def test_an_artifact_on_a_remote_agents_host_is_not_looked_for_here(tmp_path: Path) -> None:
    """With --url (a pipeline's runner, the agent on another host) the path is the agent's:
    absolute, and the agent alone says whether it exists; locally it must exist."""
    from agent.cli.deploy_cmd import Refused, _artifact

    there = "/srv/models/iris/not-on-this-runner"
    assert _artifact(Path(there), remote=True) == there
    with pytest.raises(Refused, match="expected an absolute path on the agent's host"):
        _artifact(Path("models/v7"), remote=True)
    with pytest.raises(Refused, match="no such file or directory"):
        _artifact(Path(there))
    assert _artifact(tmp_path) == str(tmp_path)


def test_strategy_is_sent_only_when_asked() -> None:
    """``--strategy`` (issue 16's command line) goes to the agent, which refuses a strategy the
    model's config does not deploy with; without it the model's own strategy applies."""
    from agent.cli.deploy_cmd import _lineage

    args = build_parser().parse_args(
        ["deploy", "iris", "--artifact", "/m/v2", "--strategy", "blue-green"]
    )
    assert _lineage(args)["strategy"] == "blue-green"
    assert "strategy" not in _lineage(
        build_parser().parse_args(["deploy", "iris", "--artifact", "/m"])
    )
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["deploy", "iris", "--artifact", "/m", "--strategy", "canary"])
    assert done.value.code == 2
