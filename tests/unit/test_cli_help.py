"""Every command answers --help, and vigil --version prints the version, exiting 0."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from agent import __version__
from agent.cli import build_parser, main
from tests.helpers import child_env


def commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command path of the parser, walked from its subparsers (none left out)."""
    out = [prefix]
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += commands(sub, (*prefix, name))
    return out


ALL = commands(build_parser())


def test_the_walk_finds_the_commands() -> None:
    names = {" ".join(c) for c in ALL}
    assert {"agent run", "agent install-service", "status", "tui", "demo", "report"} <= names
    assert {"audit verify", "audit export", "process restart", "probe record-golden"} <= names


@pytest.mark.parametrize("command", ALL, ids=lambda c: " ".join(c) or "vigil")
def test_help_on_every_command(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vigil" + "".join(f" {c}" for c in command))


def test_version_from_the_installed_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--version"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == f"vigil {__version__}"


def option_help(command: tuple[str, ...], option: str) -> str:
    """The help text of one option of one command."""
    parser: argparse.ArgumentParser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    action = next(a for a in parser._actions if option in a.option_strings)
    return action.help or ""


def test_the_ssh_address_is_told_under_url_where_it_is_typed() -> None:
    assert "ssh://[user@]host[:port][/data/dir]" in option_help(("tui",), "--url")
    assert "[user@]host" not in option_help(("tui",), "--fleet")
    # Only the TUI reaches agents through ssh: `vigil status --url ssh://...` is refused.
    assert "ssh://" not in option_help(("status",), "--url")
