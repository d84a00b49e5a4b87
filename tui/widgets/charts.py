"""One-line latency charts: a label, a sparkline of the last minutes, and the percentiles.

One line each, so the three latencies of a model (TTFT, ITL, e2e) fit with a table below them
on an 80x24 terminal, with no plotting dependency. Textual's ``Sparkline`` scales from the
smallest to the largest value shown, which turns a steady 1.2 ms with 0.1 ms of jitter into a
line flipping between all-full and all-empty: :class:`LatencySparkline` draws over a range of
at least :data:`MIN_RANGE_FRACTION` of the mean (and :data:`MIN_RANGE_MS`), centred on the
values' median, so a steady latency is a steady line at mid height.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean, median

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from tui.remote.apitypes import LatencySummary
from tui.view.fmt import format_ms

LABELS = {"ttft_ms": "ttft", "itl_ms": "itl", "e2e_ms": "e2e"}

BARS = "▁▂▃▄▅▆▇█"
MIN_RANGE_FRACTION = 0.1
"""The drawn range is at least this share of the mean: smaller swings are jitter."""
MIN_RANGE_MS = 1.0
"""... and at least this many milliseconds: sub-millisecond wobble of a fast model is noise."""


def sparkline_scale(values: Sequence[float]) -> tuple[float, float]:
    """The (low, high) a sparkline of ``values`` is drawn between.

    Their min and max when those are at least the range floor apart. Closer values are drawn
    over the floor centred on their median (never below 0: latencies are not negative): one
    odd sample does not move the median, so the rest of the line stays where it was and the
    odd one shows at the top or the bottom.
    """
    low, high = min(values), max(values)
    floor = max(MIN_RANGE_FRACTION * abs(fmean(values)), MIN_RANGE_MS)
    if high - low >= floor:
        return low, high
    low = max(0.0, median(values) - floor / 2)
    return low, low + floor


def sparkline_levels(values: Sequence[float], width: int) -> list[int]:
    """One bar level (0 to 7) per column: ``values`` (oldest first) in ``width`` buckets, each
    drawn at its largest value (a spike must not be averaged away); no columns without values.
    """
    if not values or width <= 0:
        return []
    low, high = sparkline_scale(values)
    n = len(values)
    top = len(BARS) - 1
    levels = []
    for column in range(width):
        # Columns share the values out evenly; with fewer values than columns, each value
        # spans several columns.
        start = column * n // width
        bucket = values[start : max(start + 1, (column + 1) * n // width)]
        ratio = (max(bucket) - low) / (high - low)
        levels.append(min(top, max(0, round(ratio * top))))
    return levels


class LatencySparkline(Sparkline):
    """A one-line sparkline over a steady range (:func:`sparkline_scale`), coloured from the
    ``sparkline--min-color`` to the ``sparkline--max-color`` by height, as Textual's is."""

    def render(self) -> RenderResult:
        """The bars, or a flat baseline while there is no data."""
        width = self.size.width
        _, base = self.background_colors
        low_color = base + self.get_component_styles("sparkline--min-color").color
        high_color = base + self.get_component_styles("sparkline--max-color").color
        levels = sparkline_levels(list(self.data or ()), width)
        if not levels:
            return Text(BARS[0] * width, style=Style(color=low_color.rich_color), no_wrap=True)
        out = Text(no_wrap=True)
        top = len(BARS) - 1
        for level in levels:
            color = low_color.blend(high_color, level / top).rich_color
            out.append(BARS[level], style=Style(color=color))
        return out


def stats_text(summary: LatencySummary, window: str = "5m") -> Text:
    """``p50 12.3  p95 40.1  p99 80.0 ms (5m)``, or why there is nothing to show."""
    if not summary.count:
        return Text(f"no data ({window})", style="dim")
    out = Text()
    for label, value in (("p50", summary.p50_ms), ("p95", summary.p95_ms), ("p99", summary.p99_ms)):
        out.append(f"{label} ", style="dim")
        out.append(format_ms(value).rjust(5))
        out.append(" ")
    out.append(f"ms ({window})", style="dim")
    return out


class LatencyChart(Horizontal):
    """``ttft ▁▂▅▇▃▁  p50 12.3 p95 40.1 p99 80.0 ms (5m)`` on one line.

    Args:
        metric: ``ttft_ms``, ``itl_ms`` or ``e2e_ms``.
    """

    DEFAULT_CSS = """
    LatencyChart {
        height: 1;
    }
    LatencyChart .chart-label {
        width: 5;
        text-style: bold;
    }
    LatencyChart Sparkline {
        width: 1fr;
        height: 1;
        margin-right: 1;
    }
    LatencyChart .chart-stats {
        width: 40;
        text-wrap: nowrap;
    }
    """

    def __init__(self, metric: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.metric = metric

    def compose(self) -> ComposeResult:
        """Label, sparkline, percentiles."""
        yield Static(LABELS.get(self.metric, self.metric), classes="chart-label")
        yield LatencySparkline([])
        yield Static(Text("waiting…", style="dim"), classes="chart-stats")

    def update(self, points: Sequence[float], summary: LatencySummary) -> None:
        """Show new points (oldest first) and percentiles."""
        self.query_one(LatencySparkline).data = list(points)
        self.query_one(".chart-stats", Static).update(stats_text(summary))
