"""Turning agent data into safe, human-readable text.

Everything an agent sends (host and model names, error texts, labels) is data, never markup:
it goes through :func:`clean` (which drops terminal control sequences) and into a
``rich.text.Text`` (which is never parsed for markup), so a model named ``[@click=app.quit]``
is shown literally and does nothing.
"""

from __future__ import annotations

import re
import time

from rich.text import Text

from storage.units import format_bytes, format_duration

__all__ = [
    "bar",
    "clean",
    "format_age",
    "format_bytes",
    "format_clock",
    "format_duration",
    "format_ms",
    "format_percent",
    "format_rate",
    "format_used_total",
    "level_style",
    "safe",
]

# Whole escape sequences first (CSI such as colours and cursor moves, OSC such as titles and
# hyperlinks, and two-byte ESC sequences), so no half-sequence like "[31m" is left behind.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, ended by BEL or ST
    r"|\x1b[@-Z\\-_]"  # other Fe escapes
)
# C0 and C1 controls (C1 holds the 8-bit CSI, 0x9b) and the bidi overrides/isolates that can
# make text display in a different order than it reads ("trojan source").
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_WHITESPACE = re.compile(r"[\t\n]+")


def clean(value: object, max_len: int = 500) -> str:
    """Make agent-supplied text safe for one line of a terminal.

    Args:
        value: Anything; converted with ``str``. None becomes ``""``.
        max_len: Longer text is cut and ends in an ellipsis (error texts can be huge).

    Returns:
        The text without escape sequences or control characters, tabs and newlines
        collapsed to single spaces.
    """
    if value is None:
        return ""
    text = _ANSI.sub("", str(value))
    text = _CONTROL.sub("", text)
    text = _WHITESPACE.sub(" ", text)
    if len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text


def safe(value: object, style: str = "", max_len: int = 500) -> Text:
    """A ``Text`` holding :func:`clean` text: literal, whatever brackets it contains.

    Args:
        value: The agent-supplied value.
        style: A Rich style for the whole text (ours, never the agent's).
        max_len: See :func:`clean`.

    Returns:
        A Text that will not be parsed for markup.
    """
    return Text(clean(value, max_len), style=style, no_wrap=True, overflow="ellipsis")


def format_used_total(used: float, total: float) -> str:
    """Format a used/total byte pair in the total's unit, compactly: ``12.0/32.0GiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    scale, index = float(max(total, used)), 0
    while abs(scale) >= 1024 and index < len(units) - 1:
        scale /= 1024
        index += 1
    div = 1024.0**index
    if index == 0:
        return f"{used:.0f}/{total:.0f}B"
    return f"{used / div:.1f}/{total / div:.1f}{units[index]}"


def format_rate(bytes_per_s: float) -> str:
    """Format a byte rate: ``0B/s``, ``1.5KiB/s``, ``12.0MiB/s``."""
    return f"{format_bytes(bytes_per_s)}/s"


def format_percent(value: float | None) -> str:
    """Format a percentage with one decimal, or ``-`` when unknown."""
    return "-" if value is None else f"{value:.1f}%"


def format_ms(value: float | None) -> str:
    """Format a latency in milliseconds, or ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def level_style(percent: float | None) -> str:
    """The style for a utilisation level: green when comfortable, yellow, then red."""
    if percent is None:
        return "dim"
    if percent >= 90:
        return "bold red"
    if percent >= 70:
        return "yellow"
    return "green"


_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(percent: float | None, width: int = 10) -> Text:
    """A horizontal bar for a percentage, coloured by :func:`level_style`.

    Args:
        percent: 0..100 (clamped); None draws an empty dim bar.
        width: Cells wide.

    Returns:
        The bar, exactly ``width`` cells.
    """
    if percent is None:
        return Text("·" * width, style="dim")
    pct = min(100.0, max(0.0, percent))
    eighths = round(pct / 100 * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    out = Text(filled, style=level_style(percent))
    out.append("·" * (width - len(filled)), style="dim")
    return out


def format_age(now_ms: int, ts_ms: int | None) -> str:
    """How long before ``now_ms`` (the agent's clock) ``ts_ms`` was: ``12s``, ``3m4s``."""
    if ts_ms is None:
        return "-"
    seconds = max(0, now_ms - ts_ms) // 1000
    return format_duration(seconds) if seconds else "0s"


def format_clock(ts_ms: int | None, short: bool = False) -> str:
    """A timestamp in local time, to the second: ``2026-05-01 14:20:03`` (``05-01 14:20:03``
    when ``short``, for table cells)."""
    if ts_ms is None:
        return "-"
    pattern = "%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S"
    return time.strftime(pattern, time.localtime(ts_ms / 1000))
