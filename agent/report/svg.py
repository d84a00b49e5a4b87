"""Inline SVG charts for the HTML report: no script, no external file, readable offline.

Every label is escaped: model names, series labels and units are data, never markup.

Axes carry round, evenly spaced ticks (:func:`nice_ticks`: steps of 1, 2 or 5 times a power of
ten, with as many decimals as the step needs, so no two labels read the same). Colours come
from one colour-blind-safe palette (Okabe and Ito's) through one :class:`Styles` per report, so
a colour means one thing in the whole report: a model is drawn in the same colour in its
availability bar and on every latency chart, and no other series takes that colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#000000",  # black
    "#F0E442",  # yellow (last: it is the faintest on white)
)
"""Okabe and Ito's colour-blind-safe palette (Color Universal Design, 2008)."""

DASHES = ("", "6 3", "2 3", "8 3 2 3")
"""Once the palette's colours are used up, colours come round again with these dash patterns,
so up to ``len(PALETTE) * len(DASHES)`` series per report are told apart."""

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40
MIN_BAR_PX = 2.0
"""A bar is at least this wide, so that 0 % (every run failed) is a visible mark, not nothing."""
TARGET_TICKS = 5


@dataclass(frozen=True, slots=True)
class Style:
    """How one series is drawn: its colour and its dash pattern (``""``: solid)."""

    color: str
    dash: str = ""


class Styles:
    """One style per thing a report draws, handed out in order of first use.

    Keys name the thing, not the chart (``model:iris``, ``gpu:0``), so it keeps its colour on
    every chart and a colour is never reused for something else in the same report.
    """

    def __init__(self) -> None:
        self._styles: dict[str, Style] = {}

    def __call__(self, key: str) -> Style:
        """The style of ``key``, assigned the next free one on first use."""
        style = self._styles.get(key)
        if style is None:
            i = len(self._styles)
            style = Style(PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)])
            self._styles[key] = style
        return style


@dataclass(frozen=True, slots=True)
class Line:
    """One series of a line chart: its legend label, (epoch ms, value) points, key and style."""

    label: str
    points: Sequence[tuple[int, float]]
    key: str
    style: Style


@dataclass(frozen=True, slots=True)
class Ticks:
    """Evenly spaced tick values and the decimals that tell them apart."""

    values: tuple[float, ...]
    step: float
    decimals: int


def nice_ticks(lo: float, hi: float, target: int = TARGET_TICKS) -> Ticks:
    """Round ticks covering ``[lo, hi]``: about ``target`` intervals of 1, 2 or 5 times 10^k.

    The first tick is at or below ``lo``, the last at or above ``hi``, every step the same, and
    ``decimals`` is enough to print each value differently (``0.005`` steps get three). An
    empty range (a constant series) is widened around its value; ``0..0`` becomes ``0..1``.

    Raises:
        ValueError: for a bound that is not finite.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got {lo!r}..{hi!r}")
    lo, hi = min(lo, hi), max(lo, hi)
    if hi == lo:
        pad = abs(lo) / 10 if lo else 1.0
        lo, hi = (0.0, 1.0) if lo == 0 else (lo - pad, hi + pad)
    raw = (hi - lo) / max(target, 1)
    exp = math.floor(math.log10(raw))
    mult = next((m for m in (1, 2, 5) if m * 10.0**exp >= raw * (1 - 1e-9)), 10)
    if mult == 10:
        mult, exp = 1, exp + 1
    decimals = max(0, -exp)
    step = mult * 10.0**exp
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    values = tuple(round(k * mult * 10.0**exp, decimals) + 0.0 for k in range(first, last + 1))
    return Ticks(values=values, step=round(step, decimals), decimals=decimals)


@dataclass(frozen=True, slots=True)
class Axis:
    """A value axis: its ticks as (value in data units, label), lowest first."""

    ticks: tuple[tuple[float, str], ...]

    @property
    def lo(self) -> float:
        return self.ticks[0][0]

    @property
    def hi(self) -> float:
        return self.ticks[-1][0]


def scaled_axis(lo: float, hi: float, unit: str, scale: float = 1.0) -> Axis:
    """Nice ticks over ``[lo, hi]`` counted in ``unit`` (``scale`` data units each)."""
    t = nice_ticks(lo / scale, hi / scale)
    return Axis(tuple((v * scale, f"{v:.{t.decimals}f} {unit}") for v in t.values))


def percent_axis(lo: float, hi: float) -> Axis:
    """``0 %``, ``20 %``... or ``0.000 %``, ``0.005 %``... as the range needs."""
    return scaled_axis(lo, hi, "%")


def ms_axis(lo: float, hi: float) -> Axis:
    """Milliseconds, or seconds or minutes for slower answers."""
    top = max(abs(lo), abs(hi))
    if top < 1000:
        return scaled_axis(lo, hi, "ms")
    if top < 60_000:
        return scaled_axis(lo, hi, "s", 1000.0)
    return scaled_axis(lo, hi, "min", 60_000.0)


def bytes_axis(lo: float, hi: float) -> Axis:
    """Bytes in the binary unit that suits the top (``GiB`` for GPU memory)."""
    top, scale = max(abs(lo), abs(hi)), 1.0
    for unit in ("B", "KiB", "MiB", "GiB"):
        if top < scale * 1024:
            return scaled_axis(lo, hi, unit, scale)
        scale *= 1024
    return scaled_axis(lo, hi, "TiB", scale)


_TIME_STEPS_MS = (
    *(n * 100 for n in (1, 2, 5)),
    *(n * 1000 for n in (1, 2, 5, 10, 15, 30)),
    *(n * 60_000 for n in (1, 2, 5, 10, 15, 30)),
    *(n * 3_600_000 for n in (1, 2, 3, 6, 12)),
    *(n * 86_400_000 for n in (1, 2, 3, 7, 14, 30, 60, 90, 180, 365)),
)


def time_ticks(since_ms: int, until_ms: int, target: int = TARGET_TICKS) -> list[tuple[int, str]]:
    """Round UTC times inside ``[since_ms, until_ms]``, evenly spaced, labelled distinctly.

    The step is the smallest of 100 ms ... 1 year giving at most ``target`` intervals; the
    label shows as much of the time as the step and the span need.
    """
    span = max(until_ms - since_ms, 1)
    step = next((s for s in _TIME_STEPS_MS if span / s <= target), _TIME_STEPS_MS[-1])
    if step < 1000:
        fmt = "%H:%M:%S.%f"
    elif step < 60_000:
        fmt = "%H:%M:%S"
    elif step < 86_400_000:
        fmt = "%H:%M" if span < 86_400_000 else "%m-%d %H:%M"
    else:
        fmt = "%m-%d" if span < 360 * 86_400_000 else "%Y-%m-%d"
    first = -(-since_ms // step) * step
    out = []
    for ts in range(first, until_ms + 1, step):
        text = datetime.fromtimestamp(ts / 1000, tz=UTC).strftime(fmt)
        out.append((ts, text[:-3] if fmt.endswith("%f") else text))
    return out


def _svg_open(title: str, height: int) -> list[str]:
    return [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" class="ct">{escape(title)}</text>',
    ]


def _stroke(style: Style) -> str:
    dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
    return f'stroke="{style.color}"{dash}'


def line_chart(
    title: str,
    lines: Sequence[Line],
    since_ms: int,
    until_ms: int,
    axis: Callable[[float, float], Axis],
    y_max: float | None = None,
) -> str:
    """A time-series line chart.

    Args:
        lines: the series, each with its own style (from the report's :class:`Styles`).
        axis: builds the value axis for a data range (:func:`percent_axis`, :func:`ms_axis`,
            :func:`bytes_axis`).
        y_max: a top the axis reaches at least (100 for shares of a whole, a GPU's memory);
            default: the data's maximum.
    """
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(until_ms - since_ms, 1)
    values = [v for line in lines for _, v in line.points if math.isfinite(v)]
    y_axis = axis(min([0.0, *values]), max([y_max or 0.0, *values]))
    lo, hi = y_axis.lo, y_axis.hi

    def x(ts: int) -> float:
        return LEFT + (ts - since_ms) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - (min(max(v, lo), hi) - lo) / (hi - lo) * plot_h

    parts = _svg_open(title, HEIGHT)
    for v, label in y_axis.ticks:
        yy = y(v)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" '
            'class="grid ymark"/>'
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" class="ax ytick" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    base = TOP + plot_h
    for ts, label in time_ticks(since_ms, until_ms):
        xx = x(ts)
        anchor = "end" if xx > WIDTH - RIGHT - 40 else "middle"
        parts.append(
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{base}" y2="{base + 4}" class="tick xmark"/>'
            f'<text x="{xx:.1f}" y="{HEIGHT - BOTTOM + 16}" class="ax xtick" '
            f'text-anchor="{anchor}" data-x="{xx:.1f}">{escape(label)}</text>'
        )
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    legend_x = LEFT
    for line in lines:
        style, key = line.style, escape(line.key)
        finite = [(ts, v) for ts, v in line.points if math.isfinite(v)]
        if len(finite) == 1:
            ts, v = finite[0]
            parts.append(
                f'<circle cx="{x(ts):.1f}" cy="{y(v):.1f}" r="3" fill="{style.color}" '
                f'class="series" data-series="{key}"><title>{escape(line.label)}</title></circle>'
            )
        elif finite:
            coords = " ".join(f"{x(ts):.1f},{y(v):.1f}" for ts, v in finite)
            parts.append(
                f'<polyline points="{coords}" fill="none" {_stroke(style)} stroke-width="1.8" '
                f'class="series" data-series="{key}"><title>{escape(line.label)}</title>'
                "</polyline>"
            )
        legend_y = HEIGHT - 8
        parts.append(
            f'<line x1="{legend_x}" x2="{legend_x + 12}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
            f'{_stroke(style)} stroke-width="3" class="swatch" data-series="{key}"/>'
            f'<text x="{legend_x + 16}" y="{legend_y}" class="ax">{escape(line.label)}</text>'
        )
        legend_x += 26 + 7 * min(len(line.label), 40)
    if not values:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" class="ax" '
            f'text-anchor="middle">no data in this window</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: Sequence[tuple[str, float | None, str, Style]]) -> str:
    """Horizontal bars of fractions from 0 to 1 (availability), one per thing.

    Args:
        bars: (label, fraction or None for "no runs", key, style). A bar takes the style of
            the thing it measures (a model's colour), so colours agree with the other charts;
            0 is drawn as a thin mark of at least ``MIN_BAR_PX``.
    """
    row_h, label_w, pad, axis_h = 24, 180, 8, 18
    plot_w = WIDTH - label_w - RIGHT - 70
    rows_h = row_h * max(len(bars), 1)
    height = TOP + rows_h + axis_h + pad
    parts = _svg_open(title, height)
    base = TOP + rows_h
    for v, label in percent_axis(0.0, 100.0).ticks:
        xx = label_w + v / 100 * plot_w
        parts.append(
            f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP}" y2="{base + 3}" class="grid xmark"/>'
            f'<text x="{xx:.1f}" y="{base + 15}" class="ax xtick" text-anchor="middle" '
            f'data-x="{xx:.1f}">{escape(label)}</text>'
        )
    for i, (label, frac, key, style) in enumerate(bars):
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
            text = f"{frac * 100:.2f} %"
            width = max(plot_w * max(0.0, min(frac, 1.0)), MIN_BAR_PX)
            # A colour that came round again is told apart by its dashed outline.
            outline = f' fill-opacity="0.45" {_stroke(style)}' if style.dash else ""
            parts.append(
                f'<rect x="{label_w}" y="{yy + 4}" width="{width:.1f}" height="{row_h - 8}" '
                f'fill="{style.color}"{outline} class="bar" data-series="{escape(key)}" '
                f'data-value="{frac:.6f}"><title>{escape(label)}: {text}</title></rect>'
            )
        parts.append(
            f'<text x="{label_w + plot_w + 6}" y="{yy + 16}" class="ax">{escape(text)}</text>'
        )
    if not bars:
        parts.append(f'<text x="{label_w}" y="{TOP + 16}" class="ax">no models known</text>')
    parts.append("</svg>")
    return "".join(parts)
