"""Pure helpers: escaping agent text, bars, and grouping resources into a host view."""

from __future__ import annotations

import pytest

from storage.records import ModelStatus, ProbeRun
from tests.fakes.agent_api import GiB, res, sample_status
from tui.view.fmt import bar, clean, format_rate, format_used_total, safe
from tui.view.hostview import HostView, from_resources
from tui.widgets.resources import cores_text, disks_text, gpu_text, mem_text, net_text
from tui.widgets.tables import model_row


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("title\x1b]0;pwned\x07 after", "title after"),
        ("link \x1b]8;;http://x\x1b\\text\x1b]8;;\x1b\\", "link text"),
        ("bell\x07 nul\x00 c1\x9b31m", "bell nul c131m"),
        ("line1\nline2\ttab", "line1 line2 tab"),
        ("rtl\u202eevil", "rtlevil"),
        (None, ""),
    ],
)
def test_clean_removes_escapes_and_controls(raw: object, shown: str) -> None:
    assert clean(raw) == shown


def test_clean_cuts_long_text() -> None:
    assert clean("x" * 1000, max_len=10) == "x" * 9 + "…"


@pytest.mark.parametrize("name", ["[@click=app.quit]", "[bold red]x", "[/]", "[link=http://e]"])
def test_safe_text_is_literal(name: str) -> None:
    text = safe(name)
    assert text.plain == name
    assert not text.spans


@pytest.mark.parametrize("pct", [None, -5.0, 0.0, 3.3, 50.0, 99.9, 100.0, 250.0])
def test_bar_is_always_its_width(pct: float | None) -> None:
    assert bar(pct, 10).cell_len == 10


def test_format_rate() -> None:
    assert format_rate(1536) == "1.5KiB/s"


def test_host_view_groups_resources() -> None:
    view = HostView.from_status(sample_status())
    assert view.cpu_percent == pytest.approx(23.4)
    assert [c for c, _ in view.cores] == ["0", "1", "2", "3"]
    assert view.mem_percent == pytest.approx(37.5)
    assert [d.mount for d in view.disks] == ["/"]
    assert [n.iface for n in view.nets] == ["eth0"]  # loopback skipped
    assert view.gpus == ()
    assert view.processes["vllm-server"].rss_bytes == 3 * GiB
    assert view.load == (1.25, 0.8, 0.5)


def test_host_view_sorts_naturally_and_derives_percentages() -> None:
    view = from_resources(
        [
            *(res("host.cpu.percent", 1.0, 0, core=i) for i in (10, 9, 2)),
            res("host.mem.total_bytes", 4 * GiB, 0),
            res("host.mem.used_bytes", 1 * GiB, 0),
            res("host.disk.used_bytes", 1 * GiB, 0, mount="/data"),
            res("host.disk.total_bytes", 4 * GiB, 0, mount="/data"),
            res("gpu.util.percent", 87.0, 0, gpu="1"),
            res("gpu.util.percent", 12.0, 0, gpu="0"),
            res("gpu.temperature_c", 91.0, 0, gpu="0"),
        ]
    )
    assert [c for c, _ in view.cores] == ["2", "9", "10"]
    assert view.mem_percent == pytest.approx(25.0)
    assert view.disks[0].percent == pytest.approx(25.0)
    assert [g.gpu for g in view.gpus] == ["0", "1"]
    assert "91°C" in gpu_text(view, True).plain


def test_resource_lines_read_well() -> None:
    view = HostView.from_status(sample_status())
    assert "12.0/32.0GiB" in mem_text(view).plain
    assert "37.5%" in mem_text(view).plain
    assert cores_text(view).plain.endswith("max 95%")
    assert "405.0/500.0GiB" in disks_text(view).plain
    assert "r 1.5MiB/s" in disks_text(view).plain
    assert net_text(view).plain == "eth0 ↓2.0MiB/s ↑512.0KiB/s"
    assert gpu_text(view, False).plain == "no GPU"
    assert gpu_text(view, True).plain == "GPU: no data yet"


def test_model_row_escapes_errors() -> None:
    run = ProbeRun("m", 0, False, "http_error", status=500, error="[red]boom\x1b[2J")
    cells = model_row(ModelStatus("[@click=app.quit]", "openai", "u", "down", 0, run), 61_000)
    assert [c.plain for c in cells] == [
        "[@click=app.quit]",
        "openai",
        "down",
        "1m1s",
        "-",
        "http_error: [red]boom (HTTP 500)",
    ]


@pytest.mark.parametrize(
    ("used", "total", "shown"),
    [
        (12 * GiB, 32 * GiB, "12.0/32.0GiB"),
        (512, 1000, "512/1000B"),
        (300 * 1024**2, 2 * GiB, "0.3/2.0GiB"),
        (3 * 1024**2, 1024**2, "3.0/1.0MiB"),
    ],
)
def test_format_used_total(used: float, total: float, shown: str) -> None:
    assert format_used_total(used, total) == shown
