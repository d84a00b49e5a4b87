"""Inline SVG charts for the HTML report: no script, no external file, readable offline.

Every label is escaped: model names, series labels and units are data, never markup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40

Series = tuple[str, Sequence[tuple[int, float]]]


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _time_label(ts_ms: int, span_ms: int) -> str:
    t = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return t.strftime("%m-%d %H:%M") if span_ms <= 2 * 86_400_000 else t.strftime("%m-%d")


def line_chart(
    title: str,
    series: Sequence[Series],
    since_ms: int,
    until_ms: int,
    fmt_y: Callable[[float], str],
    y_max: float | None = None,
) -> str:
    """A time-series line chart.

    Args:
        series: (label, points) pairs; points are (epoch ms, value).
        fmt_y: formats axis values (``12 ms``, ``50 %``).
        y_max: a fixed top (100 for percentages); default: a round number over the data.
    """
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(until_ms - since_ms, 1)
    values = [v for _, pts in series for _, v in pts if math.isfinite(v)]
    top = y_max if y_max is not None else _nice_max(max(values, default=0.0))

    def x(ts: int) -> float:
        return LEFT + (ts - since_ms) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - min(max(v, 0.0), top) / top * plot_h

    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" class="ct">{escape(title)}</text>',
    ]
    for i in range(5):
        v = top * i / 4
        yy = y(v)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" class="ax" text-anchor="end">'
            f"{escape(fmt_y(v))}</text>"
        )
    for i in range(5):
        ts = since_ms + span * i // 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(
            f'<text x="{x(ts):.1f}" y="{HEIGHT - BOTTOM + 16}" class="ax" '
            f'text-anchor="{anchor}">{escape(_time_label(ts, span))}</text>'
        )
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    legend_x = LEFT
    for i, (label, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        finite = [(ts, v) for ts, v in pts if math.isfinite(v)]
        if len(finite) == 1:
            ts, v = finite[0]
            parts.append(
                f'<circle cx="{x(ts):.1f}" cy="{y(v):.1f}" r="3" fill="{color}" class="series">'
                f"<title>{escape(label)}</title></circle>"
            )
        elif finite:
            coords = " ".join(f"{x(ts):.1f},{y(v):.1f}" for ts, v in finite)
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.8" '
                f'class="series"><title>{escape(label)}</title></polyline>'
            )
        legend_y = HEIGHT - 8
        parts.append(
            f'<rect x="{legend_x}" y="{legend_y - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="{legend_y}" class="ax">{escape(label)}</text>'
        )
        legend_x += 24 + 7 * min(len(label), 40)
    if not values:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" class="ax" '
            f'text-anchor="middle">no data in this window</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: Sequence[tuple[str, float | None]]) -> str:
    """Horizontal bars of fractions from 0 to 1 (availability), one per label."""
    row_h, label_w, pad = 24, 180, 8
    plot_w = WIDTH - label_w - RIGHT - 70
    height = TOP + row_h * max(len(bars), 1) + pad
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" class="ct">{escape(title)}</text>',
    ]
    for i, (label, frac) in enumerate(bars):
        yy = TOP + i * row_h
        shown = label if len(label) <= 26 else label[:25] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{yy + 16}" class="ax" text-anchor="end">'
            f"{escape(shown)}</text>"
            f'<rect x="{label_w}" y="{yy + 4}" width="{plot_w}" height="{row_h - 8}" '
            f'class="track"/>'
        )
        if frac is None:
            text = "no runs"
        else:
            color = "#2ca02c" if frac >= 0.99 else "#ff7f0e" if frac >= 0.9 else "#d62728"
            parts.append(
                f'<rect x="{label_w}" y="{yy + 4}" width="{plot_w * max(0.0, min(frac, 1.0)):.1f}"'
                f' height="{row_h - 8}" fill="{color}" class="bar">'
                f"<title>{escape(label)}: {frac * 100:.2f} %</title></rect>"
            )
            text = f"{frac * 100:.2f} %"
        parts.append(
            f'<text x="{label_w + plot_w + 6}" y="{yy + 16}" class="ax">{escape(text)}</text>'
        )
    if not bars:
        parts.append(f'<text x="{label_w}" y="{TOP + 16}" class="ax">no models known</text>')
    parts.append("</svg>")
    return "".join(parts)
