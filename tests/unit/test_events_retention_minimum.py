"""``[agent] retention_events``: never below ``retention_events_minimum`` (default 180 days),
refused at load with the file, line and field, naming both values."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import commands as cli
from agent.config import ConfigError, parse_config

CFG = Path("/etc/vigil/test.toml")
DAY = 86400.0


def agent(body: str) -> str:
    return f'[agent]\nhost = "h"\n{body}\n'


@pytest.mark.parametrize(
    ("body", "kept_s"),
    [
        ("", None),  # unset: events are kept forever
        ('retention_events = "180d"', 180 * DAY),
        ('retention_events = "1y"', 365 * DAY),
        ('retention_events_minimum = "7d"\nretention_events = "30d"', 30 * DAY),
        ('retention_events_minimum = "0s"\nretention_events = "1h"', 3600.0),  # no floor
    ],
)
def test_event_retention_at_or_over_the_minimum_is_accepted(
    body: str, kept_s: float | None
) -> None:
    assert parse_config(agent(body), CFG).agent.retention_events_s == kept_s


@pytest.mark.parametrize(
    ("body", "kept", "floor"),
    [
        ('retention_events = "30d"', "30d", "180d"),
        ('retention_events = "179d23h"', "179d23h", "180d"),
        ('retention_events_minimum = "7d"\nretention_events = "1d"', "1d", "7d"),
        ('retention_events = "1h"\nretention_events_minimum = "1y"', "1h", "365d"),
    ],
)
def test_event_retention_below_the_minimum_is_refused_naming_both(
    body: str, kept: str, floor: str
) -> None:
    text = agent(body)
    with pytest.raises(ConfigError) as refused:
        parse_config(text, CFG)
    err = refused.value
    assert err.field == "agent.retention_events"
    lines = text.splitlines()
    assert err.line == next(n for n, x in enumerate(lines, 1) if x.startswith("retention_events ="))
    assert err.reason == (
        f"{kept} is below the minimum of {floor} (retention_events_minimum); expected at least "
        f"{floor}, or a lower retention_events_minimum"
    )


def test_check_config_prints_the_refusal_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "v.toml"
    path.write_text(agent('retention_events = "90d"'), encoding="utf-8")
    assert cli.main(["agent", "check-config", "--config", str(path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err == (
        f"vigil: config refused: {path}:3: agent.retention_events: 90d is below the minimum of "
        "180d (retention_events_minimum); expected at least 180d, or a lower "
        "retention_events_minimum"
    )


def test_a_negative_minimum_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"agent\.retention_events_minimum"):
        parse_config(agent('retention_events_minimum = "-1d"'), CFG)
