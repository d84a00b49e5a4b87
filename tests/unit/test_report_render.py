"""The report's renderings beyond the numbers: chart axes (round, distinct, evenly spaced
ticks), the 0 % bar, one colour per thing across charts, placeholders said once, and control
characters kept out of every format."""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
import re
from html import escape
from pathlib import Path

import pytest

from agent.report import render, write_csv
from agent.report.svg import (
    DASHES,
    MIN_BAR_PX,
    PALETTE,
    Styles,
    bytes_axis,
    ms_axis,
    nice_ticks,
    percent_axis,
    time_ticks,
)
from agent.report.tables import TREND_NOTE
from storage.db import connect
from storage.report import MIN_TREND_RUNS, build_report
from storage.writer import Writer
from tests.report_samples import CONTROL_HOST, CONTROL_REASON, GIB, T0, UNTIL, chart_report

# C0 except tab and newline, DEL, C1: what no report file may hold.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _assert_good_ticks(lo: float, hi: float) -> None:
    t = nice_ticks(lo, hi)
    lo, hi = min(lo, hi), max(lo, hi)  # either order is accepted
    v = t.values
    labels = [f"{x:.{t.decimals}f}" for x in v]
    assert len(set(labels)) == len(labels), labels  # distinct as printed
    assert 2 <= len(v) - 1 <= 7, v  # about five intervals
    steps = [b - a for a, b in itertools.pairwise(v)]
    assert all(math.isclose(s, t.step, rel_tol=1e-9) for s in steps), v  # evenly spaced
    mantissa = t.step / 10 ** math.floor(math.log10(t.step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-9) for m in (1, 2, 5)), t.step
    assert v[0] <= lo + abs(lo) * 1e-12 and v[-1] >= hi - abs(hi) * 1e-12, (lo, hi, v)
    if lo != hi:  # covering, but not by much more than a step on either side
        assert v[0] > lo - t.step and v[-1] < hi + t.step, (lo, hi, v)
    if lo <= 0 <= hi:
        assert 0.0 in v  # zero is a tick whenever the range holds it


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        (0, 0.02),  # process CPU of an idle server
        (0, 2.3),
        (0, 100),
        (0, 0),  # all zero
        (7.5, 7.5),  # constant
        (0, 7.5),  # a constant series on a chart from 0
        (0, 1e-9),
        (-3, 7),
        (99.5, 100),
        (1234, 98765),
        (0, 79.6 * GIB),
    ],
)
def test_ticks_are_round_distinct_even_and_cover_the_range(lo: float, hi: float) -> None:
    _assert_good_ticks(lo, hi)


def test_ticks_over_many_random_ranges() -> None:
    rnd = random.Random(13)
    for _ in range(2000):
        scale = 10 ** rnd.uniform(-6, 12)
        a, b = rnd.uniform(-1, 1) * scale, rnd.uniform(0, 1) * scale
        _assert_good_ticks(min(0.0, a) if rnd.random() < 0.5 else a, b)


def test_ticks_for_the_ranges_seen_in_reports() -> None:
    assert nice_ticks(0, 0.02).values == (0.0, 0.005, 0.01, 0.015, 0.02)
    assert nice_ticks(0, 0).values == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    # The Process CPU axis that read "0 %, 0 %, 1 %, 2 %, 2 %" for a 2.3 % peak.
    assert [label for _, label in percent_axis(0, 2.3).ticks] == [
        "0.0 %",
        "0.5 %",
        "1.0 %",
        "1.5 %",
        "2.0 %",
        "2.5 %",
    ]
    assert [label for _, label in percent_axis(0, 100).ticks][-1] == "100 %"
    assert [label for _, label in ms_axis(0, 2300).ticks][:3] == ["0.0 s", "0.5 s", "1.0 s"]
    gib = bytes_axis(0, 79.6 * GIB).ticks
    assert [label for _, label in gib] == ["0 GiB", "20 GiB", "40 GiB", "60 GiB", "80 GiB"]
    assert gib[1][0] == 20 * GIB  # the value behind the label is the one it names


DAY = 86_400_000
SPANS_MS = [500, 40_000, 3_600_000, 6 * 3_600_000, DAY, 2 * DAY, 7 * DAY, 11 * DAY, 400 * DAY]


@pytest.mark.parametrize("span_ms", SPANS_MS)
def test_time_ticks_are_distinct_and_evenly_spaced(span_ms: int) -> None:
    since = T0 + 12_345
    ticks = time_ticks(since, since + span_ms)
    assert len(ticks) >= 2, ticks
    labels = [label for _, label in ticks]
    assert len(set(labels)) == len(labels), labels
    times = [ts for ts, _ in ticks]
    assert len({b - a for a, b in itertools.pairwise(times)}) == 1, times
    assert since <= times[0] and times[-1] <= since + span_ms


def _charts(page: str) -> dict[str, str]:
    return dict(re.findall(r'<svg class="chart" role="img" aria-label="([^"]*)"(.*?)</svg>', page))


def test_every_chart_has_distinct_evenly_spaced_ticks(tmp_path: Path) -> None:
    charts = _charts(render(chart_report(tmp_path), "html"))
    assert set(charts) == {
        "Availability per model",
        "e2e latency p95 per 15m",
        "TTFT latency p95 per 15m",
        "Host CPU and memory (%)",
        "GPU utilization (%)",
        "GPU memory used",
        "Process CPU (%)",
    }
    for title, svg in charts.items():
        for axis, coord in (("y", "y1"), ("x", "x1")):
            labels = re.findall(rf'class="ax {axis}tick"[^>]*>([^<]*)<', svg)
            mark = rf'<line [^>]*{coord}="([-\d.]+)"[^>]*class="[^"]*\b{axis}mark"'
            marks = [float(m) for m in re.findall(mark, svg)]
            if title.startswith("Availability") and axis == "y":
                assert not labels  # model names label the rows
                continue
            assert len(labels) >= 3 or (axis == "x" and len(labels) >= 2), (title, labels)
            assert len(set(labels)) == len(labels), (title, labels)
            assert len(marks) == len(labels), (title, marks)
            gaps = [b - a for a, b in itertools.pairwise(marks)]
            assert max(gaps) - min(gaps) <= 0.11, (title, axis, marks)  # 0.1 px rounding
    process = re.findall(r'class="ax ytick"[^>]*>([^<]*)<', charts["Process CPU (%)"])
    assert process == ["0.000 %", "0.005 %", "0.010 %", "0.015 %", "0.020 %"]
    gpu_mem = re.findall(r'class="ax ytick"[^>]*>([^<]*)<', charts["GPU memory used"])
    assert gpu_mem[-1] == "80 GiB"  # reaches the board's 79.6 GiB


def test_zero_availability_is_a_visible_bar(tmp_path: Path) -> None:
    bars = _charts(render(chart_report(tmp_path), "html"))["Availability per model"]
    found = {
        key: (float(width), float(value))
        for width, key, value in re.findall(
            r'<rect [^>]*width="([\d.]+)"[^>]*class="bar" data-series="model:([^"]+)" '
            r'data-value="([\d.]+)"',
            bars,
        )
    }
    assert set(found) == {"dead", "flaky", "steady"}  # idle has no runs: "no runs", no bar
    assert found["dead"][1] == 0.0 and found["dead"][0] >= max(MIN_BAR_PX, 1.5)
    assert found["flaky"][0] == pytest.approx(found["steady"][0] / 2, abs=0.1)
    assert ">0.00 %</text>" in bars and ">no runs</text>" in bars


def _styles(page: str) -> list[tuple[str, str]]:
    """(data-series key, colour and dash) of every drawn or legend element."""
    out = []
    for tag in re.findall(r"<(?:polyline|circle|rect|line) [^>]*data-series=[^>]*>", page):
        key = re.search(r'data-series="([^"]*)"', tag)
        color = re.search(r'(?:stroke|fill)="(#[0-9A-Fa-f]{6})"', tag)
        dash = re.search(r'stroke-dasharray="([^"]*)"', tag)
        assert key and color, tag
        out.append((key.group(1), color.group(1) + "/" + (dash.group(1) if dash else "")))
    return out


def test_one_colour_means_one_thing_across_the_report(tmp_path: Path) -> None:
    page = render(chart_report(tmp_path), "html")
    pairs = _styles(page)
    by_key: dict[str, set[str]] = {}
    by_style: dict[str, set[str]] = {}
    for key, style in pairs:
        by_key.setdefault(key, set()).add(style)
        by_style.setdefault(style, set()).add(key)
    assert all(len(s) == 1 for s in by_key.values()), by_key
    assert all(len(k) == 1 for k in by_style.values()), by_style
    # A model's bar and its latency lines share its colour; the models come first, in order.
    assert {k for k, _ in pairs if k.startswith("model:")} == {
        "model:dead",
        "model:flaky",
        "model:steady",
    }
    assert by_key["model:flaky"] == {PALETTE[1] + "/"}
    assert [k for k, _ in pairs].count("model:steady") >= 4  # bar, two lines, two swatches
    # The palette is the colour-blind-safe one; the old red/green availability colours are gone.
    used = {style.split("/")[0] for style in by_style}
    assert used <= set(PALETTE)
    assert "#d62728" not in page and "#2ca02c" not in page


def test_styles_stay_distinct_past_the_palette() -> None:
    styles = Styles()
    drawn = [styles(f"s{i}") for i in range(len(PALETTE) * len(DASHES))]
    assert len(set(drawn)) == len(drawn)
    assert styles("s3") == drawn[3]  # asking again gives the same style


def test_placeholders_are_said_once_and_process_events_have_a_heading(tmp_path: Path) -> None:
    Writer(tmp_path / "v.db").start()
    conn = connect(tmp_path / "v.db", readonly=True)
    empty = build_report(conn, since_ms=T0, until_ms=UNTIL)
    page, md = render(empty, "html"), render(empty, "md")
    placeholders = re.findall(r'<p class="empty">([^<]*)</p>', page)
    assert len(placeholders) >= 8
    assert len(set(placeholders)) == len(placeholders), placeholders
    text = re.sub(r"<[^>]+>", "\n", page)
    for p in placeholders:
        assert text.count(p) == 1, p  # not also in the notes, a chart or another table
    assert "none in this window" not in page
    assert "<h3>Restarts by reason</h3>" in page and "<h3>Process events</h3>" in page
    md_placeholders = re.findall(r"^_(.*)_$", md, re.M)
    assert len(set(md_placeholders)) == len(md_placeholders), md_placeholders
    assert "## Process events" in md and "none in this window" not in md
    # A section without data has no empty chart beside its table's placeholder.
    assert '<svg class="chart"' not in page
    # The "no deployments" and "no drift" notes are said in their sections, not again on top.
    assert empty.deployments.note and empty.deployments.note not in empty.notes
    assert empty.drift.note and empty.drift.note not in empty.notes


def test_trend_rule_is_stated_in_html_and_markdown(tmp_path: Path) -> None:
    report = chart_report(tmp_path)
    assert f"at least {MIN_TREND_RUNS} answered runs in each half" in TREND_NOTE
    assert escape(TREND_NOTE) in render(report, "html") and TREND_NOTE in render(report, "md")
    flaky = next(m for m in report.models if m.name == "flaky").trend["e2e_ms"]
    assert (flaky.first_half_runs, flaky.second_half_runs) == (18, 18)
    assert flaky.direction == "too few runs" and flaky.change_pct is None
    assert "| flaky | e2e\\_ms | 36 |" in render(report, "md")
    assert "too few runs" in render(report, "md")


def test_control_characters_reach_no_format(tmp_path: Path) -> None:
    report = chart_report(tmp_path)
    assert report.host == CONTROL_HOST and CONTROL.search(CONTROL_HOST)
    page, md, doc = render(report, "html"), render(report, "md"), render(report, "json")
    for name, text in (("html", page), ("md", md), ("json", doc)):
        assert not CONTROL.search(text), (name, CONTROL.findall(text))
    # Replaced by a visible "?", as Markdown and `vigil status` always did.
    assert "gpu?]0;pwned?-01" in page and "gpu?\\]0;pwned?-01" in md
    assert "exit 1 ?[31mred?[0m? ?2J ?" in page
    # JSON keeps the exact text, escaped: a reader gets back what the server sent.
    back = json.loads(doc)
    assert back["host"] == CONTROL_HOST
    assert back["restarts"]["groups"][0]["last_detail"] == CONTROL_REASON
    files = write_csv(report, tmp_path / "csv")
    for path in files:
        raw = path.read_text(encoding="utf-8")
        assert not CONTROL.search(raw), (path.name, CONTROL.findall(raw))
    summary = dict(csv.reader((tmp_path / "csv" / "summary.csv").open()))
    assert summary["host"] == "gpu?]0;pwned?-01"
    restarts = list(csv.DictReader((tmp_path / "csv" / "restarts.csv").open()))
    assert restarts[0]["reason"] == "exit 1 ?[31mred?[0m? ?2J ?"
