"""One-line latency charts: a label, a sparkline of the last minutes, and the percentiles.

Textual's own ``Sparkline`` draws them: one line each, so the three latencies of a model (TTFT,
ITL, e2e) fit with a table below them on an 80x24 terminal, with no plotting dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from tui.apitypes import LatencySummary
from tui.fmt import format_ms

LABELS = {"ttft_ms": "ttft", "itl_ms": "itl", "e2e_ms": "e2e"}


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
        yield Sparkline([], summary_function=max)
        yield Static(Text("waiting…", style="dim"), classes="chart-stats")

    def update(self, points: Sequence[float], summary: LatencySummary) -> None:
        """Show new points (oldest first) and percentiles."""
        self.query_one(Sparkline).data = list(points)
        self.query_one(".chart-stats", Static).update(stats_text(summary))
