"""Units every part shares: human durations (``500ms``, ``1h30m``, ``2d``) and byte sizes.

They live at the bottom layer so that the agent (config, API) and the TUI (display) parse and
format them the same way.
"""

from __future__ import annotations

import re

UNITS_S: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+")

EXPECTED = "a duration such as '500ms', '10s', '5m', '1h30m' or '2d' (units: ms s m h d w y)"


def parse_duration(text: str) -> float:
    """Parse a duration into seconds.

    Args:
        text: e.g. ``"500ms"``, ``"10s"``, ``"1h30m"``; a leading ``-`` makes it negative
            (used for relative API times such as ``since=-5m``).

    Returns:
        The duration in seconds.

    Raises:
        ValueError: naming the text and what was expected.
    """
    raw = text.strip()
    sign = 1.0
    if raw.startswith("-"):
        sign, raw = -1.0, raw[1:]
    if not raw or not _WHOLE.fullmatch(raw):
        raise ValueError(f"expected {EXPECTED}, got {text!r}")
    return sign * sum(float(n) * UNITS_S[u] for n, u in _PART.findall(raw))


def format_duration(seconds: float) -> str:
    """Format seconds compactly for people: ``950ms``, ``42s``, ``3m12s``, ``2d4h``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
        if len(parts) == 2:
            break
    return "".join(parts)


def format_bytes(n: float) -> str:
    """Format a byte count with binary units: ``512B``, ``1.5KiB``, ``3.2GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}PiB"  # pragma: no cover - unreachable, keeps mypy happy
