"""The latency sparkline: a steady latency is a steady line, jitter does not fill or empty it,
and real changes still span the full height."""

from __future__ import annotations

import random

import pytest
from textual.app import App, ComposeResult

from tests.tui.test_host_screen import wait_for
from tui.widgets.charts import BARS, LatencySparkline, sparkline_levels, sparkline_scale

MID = round((len(BARS) - 1) / 2)


def test_a_constant_latency_is_drawn_at_mid_height() -> None:
    assert sparkline_levels([5.0] * 60, 30) == [MID] * 30
    assert sparkline_levels([5.0], 10) == [MID] * 10  # Textual's drew one value all full


@pytest.mark.parametrize("mean_ms", [1.2, 5.0, 40.0, 800.0])
def test_jitter_within_the_range_floor_never_fills_or_empties_the_line(mean_ms: float) -> None:
    # Jitter of up to ±4% of the mean (and under ±0.5 ms): what Textual's min-max scaling drew
    # as all-full one refresh and all-empty the next.
    rng = random.Random(13)
    spread = min(0.04 * mean_ms, 0.45)
    for _ in range(50):
        values = [mean_ms + rng.uniform(-spread, spread) for _ in range(60)]
        levels = sparkline_levels(values, 40)
        assert min(levels) >= 1 and max(levels) <= len(BARS) - 2, (values, levels)


def test_the_line_stays_put_when_a_sample_moves_by_a_millisecond() -> None:
    # Two refreshes of a 3 ms model whose newest 15 s average moved from 3.0 to 3.6 ms.
    before = sparkline_levels([3.0] * 59 + [3.0], 30)
    after = sparkline_levels([3.0] * 59 + [3.6], 30)
    assert before[:-1] == after[:-1], "the old samples were redrawn at another height"
    assert after[-1] > before[-1]


def test_a_real_change_uses_the_full_height() -> None:
    levels = sparkline_levels([10.0] * 30 + [50.0] * 30, 30)
    assert levels[0] == 0 and levels[-1] == len(BARS) - 1
    assert sparkline_scale([10.0, 50.0]) == (10.0, 50.0)


def test_the_range_floor_is_a_share_of_the_mean_and_never_below_zero() -> None:
    low, high = sparkline_scale([200.0, 201.0])
    assert high - low == pytest.approx(20.05)  # 10% of the mean, centred on the values
    assert (low + high) / 2 == pytest.approx(200.5)
    assert sparkline_scale([0.2, 0.3]) == (0.0, 1.0)  # 1 ms at least, from zero up


def test_a_spike_inside_a_column_is_kept() -> None:
    values = [10.0] * 59 + [30.0]
    assert sparkline_levels(values, 10)[-1] == len(BARS) - 1


class SparkApp(App[None]):
    def compose(self) -> ComposeResult:
        yield LatencySparkline([4.0, 4.2, 3.9, 4.1] * 10)


async def test_the_widget_draws_one_bar_per_column() -> None:
    app = SparkApp()
    async with app.run_test(size=(20, 3)) as pilot:
        spark = app.query_one(LatencySparkline)
        await wait_for(pilot, lambda: spark.size.width == 20)
        line = "".join(segment.text for segment in spark.render_line(0))
        assert len(line) == 20 and set(line) <= set(BARS)
        assert BARS[0] not in line and BARS[-1] not in line  # 0.3 ms of wobble: mid height
