"""The host's resources at a glance: CPU (with a sparkline), memory, swap, load, disks,
network and GPUs, all from the latest :class:`AgentStatus`.

The ``*_text`` functions are pure (view in, ``Text`` out) so they are tested without an app.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from storage.records import AgentStatus
from tui.view.fmt import (
    bar,
    clean,
    format_percent,
    format_rate,
    format_used_total,
    level_style,
    safe,
)
from tui.view.hostview import HostView

LABEL_WIDTH = 6
BAR_WIDTH = 8
NAME_WIDTH = 10
"""Mounts and interfaces are cut to this, so a line fits half of an 80-column terminal."""
_CORE_BARS = "▁▂▃▄▅▆▇█"


def _label(name: str) -> Text:
    return Text(name.ljust(LABEL_WIDTH), style="bold")


def _name_width(names: Iterable[str]) -> int:
    return min(NAME_WIDTH, max((len(clean(n)) for n in names), default=0))


def _name(value: str, width: int) -> Text:
    """An agent-supplied name (mount, interface), escaped, cut or padded to ``width`` + 1."""
    text = safe(value, max_len=width)
    text.pad_right(width + 1 - text.cell_len)
    return text


def cpu_text(view: HostView) -> Text:
    """``cpu    23.4% █▉······ 32 cores``."""
    out = _label("cpu")
    out.append(format_percent(view.cpu_percent).rjust(6), style=level_style(view.cpu_percent))
    out.append(" ")
    out.append_text(bar(view.cpu_percent, BAR_WIDTH))
    if view.cores:
        out.append(f" {len(view.cores)} cores", style="dim")
    return out


def cores_text(view: HostView) -> Text:
    """One block character per core, its height and colour its load: compact at 64 cores."""
    if not view.cores:
        return Text("")
    out = _label("cores")
    for _core, pct in view.cores:
        index = min(len(_CORE_BARS) - 1, max(0, int(pct / 100 * len(_CORE_BARS))))
        out.append(_CORE_BARS[index], style=level_style(pct))
    busiest = max(pct for _core, pct in view.cores)
    out.append(f" max {busiest:.0f}%", style="dim")
    return out


def _used_total(label: str, used: float | None, total: float | None, percent: float | None) -> Text:
    out = _label(label)
    out.append(format_percent(percent).rjust(6), style=level_style(percent))
    out.append(" ")
    out.append_text(bar(percent, BAR_WIDTH))
    if used is not None and total is not None:
        out.append(f" {format_used_total(used, total)}")
    return out


def mem_text(view: HostView) -> Text:
    """``mem    41.0% ███▎····· 12.8/31.2GiB``."""
    return _used_total("mem", view.mem_used_bytes, view.mem_total_bytes, view.mem_percent)


def swap_text(view: HostView) -> Text:
    """Swap like memory; ``none`` when the host has no swap."""
    if view.swap_total_bytes == 0:
        return _label("swap").append("none", style="dim")
    return _used_total("swap", view.swap_used_bytes, view.swap_total_bytes, view.swap_percent)


def load_text(view: HostView) -> Text:
    """``load  1.20 0.80 0.50`` (1, 5, 15 minutes)."""
    out = _label("load")
    out.append(" ".join("-" if v is None else f"{v:.2f}" for v in view.load))
    return out


def disks_text(view: HostView) -> Text:
    """One line per mount (``/data  81.0% ███▏ 405.0/500.0GiB``), then the summed I/O rates."""
    lines: list[Text] = []
    width = _name_width(d.mount for d in view.disks)
    for disk in view.disks:
        line = _name(disk.mount, width)
        line.append(format_percent(disk.percent).rjust(6), style=level_style(disk.percent))
        line.append(" ")
        line.append_text(bar(disk.percent, 4))
        if disk.used_bytes is not None and disk.total_bytes is not None:
            line.append(f" {format_used_total(disk.used_bytes, disk.total_bytes)}")
        lines.append(line)
    if view.disk_read_bytes_per_s is not None or view.disk_write_bytes_per_s is not None:
        io = Text("disk io ", style="bold")
        io.append(
            f"r {format_rate(view.disk_read_bytes_per_s or 0)} "
            f"w {format_rate(view.disk_write_bytes_per_s or 0)}"
        )
        lines.append(io)
    if not lines:
        return Text("no disk data", style="dim")
    return Text("\n").join(lines)


def net_text(view: HostView) -> Text:
    """One line per interface (loopback skipped): ``eth0  ↓1.2MiB/s ↑300.0KiB/s``."""
    if not view.nets:
        return Text("no network data", style="dim")
    lines: list[Text] = []
    width = _name_width(n.iface for n in view.nets)
    for net in view.nets:
        line = _name(net.iface, width)
        rx = "-" if net.rx_bytes_per_s is None else format_rate(net.rx_bytes_per_s)
        tx = "-" if net.tx_bytes_per_s is None else format_rate(net.tx_bytes_per_s)
        line.append(f"↓{rx} ↑{tx}")
        lines.append(line)
    return Text("\n").join(lines)


def gpu_text(view: HostView, gpu_available: bool) -> Text:
    """One line per GPU (``gpu0  87.0% 20.1/80.0GiB 65°C 250W``) or ``no GPU``."""
    if not view.gpus:
        return Text("GPU: no data yet" if gpu_available else "no GPU", style="dim")
    lines: list[Text] = []
    for gpu in view.gpus:
        line = Text("gpu", style="bold")
        line.append_text(safe(gpu.gpu, style="bold", max_len=8))
        line.pad_right(6 - line.cell_len)
        line.append(format_percent(gpu.util_percent).rjust(6), style=level_style(gpu.util_percent))
        if gpu.mem_used_bytes is not None and gpu.mem_total_bytes is not None:
            line.append(f" {format_used_total(gpu.mem_used_bytes, gpu.mem_total_bytes)}")
        if gpu.temperature_c is not None:
            hot = "bold red" if gpu.temperature_c >= 85 else ""
            line.append(f" {gpu.temperature_c:.0f}°C", style=hot)
        if gpu.power_w is not None:
            line.append(f" {gpu.power_w:.0f}W")
        lines.append(line)
    return Text("\n").join(lines)


class ResourcesPanel(Widget):
    """CPU, memory, swap and load on the left; disks, network and GPUs on the right."""

    DEFAULT_CSS = """
    ResourcesPanel {
        height: auto;
    }
    ResourcesPanel > Horizontal {
        height: auto;
    }
    ResourcesPanel #res-left {
        width: 1fr;
        height: auto;
        margin-right: 1;
    }
    /* Eight GPUs and a few disks must not squeeze the models table away on a 24-line
       terminal: past about a third of the screen this column scrolls. */
    ResourcesPanel #res-right {
        width: 1fr;
        height: auto;
        max-height: 34vh;
        scrollbar-size-vertical: 1;
    }
    ResourcesPanel Static {
        height: auto;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ResourcesPanel #cpu-spark {
        height: 1;
        margin-left: 6;
    }
    """

    status: reactive[AgentStatus | None] = reactive(None)
    """The status whose resources are shown (None: nothing received yet)."""
    cpu_history: reactive[tuple[float, ...]] = reactive(tuple)
    """Recent total CPU percentages, oldest first, drawn as the sparkline."""

    def compose(self) -> ComposeResult:
        """Two columns of Statics and the CPU sparkline."""
        with Horizontal():
            with Vertical(id="res-left"):
                yield Static(Text("waiting for the agent…", style="dim"), id="cpu")
                yield Sparkline(id="cpu-spark")
                yield Static(id="cores")
                yield Static(id="mem")
                yield Static(id="swap")
                yield Static(id="load")
            with VerticalScroll(id="res-right", can_focus=False):
                yield Static(id="disks")
                yield Static(id="net")
                yield Static(id="gpu")

    def on_mount(self) -> None:
        """Show whatever arrived before the children existed."""
        self.watch_status(self.status)
        self.watch_cpu_history(self.cpu_history)

    def watch_status(self, status: AgentStatus | None) -> None:
        """Re-render every line from the new status."""
        if status is None or not self.is_mounted:
            return
        view = HostView.from_status(status)
        for widget_id, text in (
            ("cpu", cpu_text(view)),
            ("cores", cores_text(view)),
            ("mem", mem_text(view)),
            ("swap", swap_text(view)),
            ("load", load_text(view)),
            ("disks", disks_text(view)),
            ("net", net_text(view)),
            ("gpu", gpu_text(view, status.gpu_available)),
        ):
            self.query_one(f"#{widget_id}", Static).update(text)
        self.query_one("#cores").display = bool(view.cores)

    def watch_cpu_history(self, history: tuple[float, ...]) -> None:
        """Feed the sparkline."""
        if self.is_mounted:
            self.query_one("#cpu-spark", Sparkline).data = list(history)
