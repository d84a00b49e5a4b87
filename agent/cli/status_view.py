"""``vigil status`` as a readable text table."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from storage.records import AgentStatus
from storage.text import printable
from storage.units import format_bytes, format_duration


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return lines


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _p(details: Mapping[str, Any], window: str, column: str, q: str) -> float | None:
    """A percentile from ``/api/v1/models`` detail, or None when absent."""
    try:
        value = details["latency"][window][column][q]
    except (KeyError, TypeError):
        return None
    return float(value) if value is not None else None


LAT = {"ttft_ms": "TTFT", "itl_ms": "ITL", "e2e_ms": "E2E"}


def _triple(details: Mapping[str, Any], window: str, column: str) -> str:
    """``51.2/55.0/60.1`` (p50/p95/p99), or ``-`` where the protocol has no such phase."""
    values = [_p(details, window, column, q) for q in ("p50", "p95", "p99")]
    if all(v is None for v in values):
        return "-"
    return "/".join(_opt(v, ".1f") for v in values)


ALERT_HEADERS = ["STATE", "SEVERITY", "RULE", "SUBJECT", "SINCE", "SUMMARY"]


def render_alerts(alerts: Sequence[Mapping[str, Any]], now_ms: int) -> list[str]:
    """``/api/v1/alerts`` entries as a table: state (and the silence or maintenance window
    muting it), severity, rule, subject, how long in that state, summary."""
    rows = []
    for a in alerts:
        state = str(a.get("state", "?")).upper()
        if a.get("silenced_by"):
            state += f" (silenced {a['silenced_by']})"
        elif a.get("maintenance"):
            state += f" (maintenance {a['maintenance']})"
        at = a.get("resolved_ms") or a.get("firing_ms") or a.get("pending_ms")
        since = "-" if not isinstance(at, int) else format_duration(max(0, now_ms - at) / 1000)
        rows.append(
            [
                printable(state),
                printable(str(a.get("severity", ""))),
                printable(str(a.get("rule", ""))),
                printable(str(a.get("subject", ""))),
                since,
                printable(str(a.get("summary", "")))[:70],
            ]
        )
    return _table(ALERT_HEADERS, rows)


def render_status(
    status: AgentStatus,
    now_ms: int | None = None,
    model_details: Mapping[str, Mapping[str, Any]] | None = None,
    alerts: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Render a status snapshot for a terminal (every agent-supplied text made printable).

    Args:
        model_details: ``/api/v1/models`` entries by name, for latency percentiles over the
            last 5 minutes (TTFT where the protocol streams, else end to end).
        alerts: the firing alerts (``/api/v1/alerts?state=firing``), shown last; None: the
            agent was not asked (or runs no alerting) and the block is left out.
    """
    details = model_details or {}
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    r = status.resource
    out = [
        f"host {printable(status.host)}   vigil {printable(status.version)}   "
        f"up {format_duration(status.uptime_s)}   "
        f"storage {'ok' if status.storage_ok else 'FAILING'}"
    ]
    cores = sum(1 for x in status.resources if x.name == "host.cpu.percent" and x.labels)
    mem_used, mem_total = r("host.mem.used_bytes"), r("host.mem.total_bytes")
    mem = (
        f"{format_bytes(mem_used)}/{format_bytes(mem_total)} "
        f"({_opt(r('host.mem.percent'), '.0f')}%)"
        if mem_used is not None and mem_total
        else "-"
    )
    swap_used, swap_total = r("host.swap.used_bytes"), r("host.swap.total_bytes")
    swap = (
        f"{format_bytes(swap_used)}/{format_bytes(swap_total)}"
        if swap_used is not None and swap_total is not None
        else "-"
    )
    load = " ".join(_opt(r(f"host.load.{w}"), ".2f") for w in ("1m", "5m", "15m"))
    out.append(
        f"cpu {_opt(r('host.cpu.percent'), '.1f')}% ({cores} cores)   mem {mem}   "
        f"swap {swap}   load {load}"
    )
    gpus = sorted({dict(x.labels)["gpu"] for x in status.resources if x.name == "gpu.util.percent"})
    if not gpus:
        out.append("gpu none")
    for g in gpus:
        used, total = r("gpu.mem.used_bytes", gpu=g), r("gpu.mem.total_bytes", gpu=g)
        out.append(
            f"gpu {g}: util {_opt(r('gpu.util.percent', gpu=g), '.0f')}%   mem "
            f"{format_bytes(used or 0)}/{format_bytes(total or 0)}   "
            f"temp {_opt(r('gpu.temperature_c', gpu=g), '.0f')}C   "
            f"power {_opt(r('gpu.power_w', gpu=g), '.0f')}W"
        )
    out.append("")
    out.append(f"models ({len(status.models)})")
    rows = []
    notes: list[str] = []
    for m in status.models:
        last = m.last_run
        since = format_duration(max(0, now - m.since_ms) / 1000)
        detail = (
            ""
            if last is None
            else (last.category if last.ok else f"{last.category}: {last.error or ''}")
        )
        if m.drift:
            # Drift is news even while the last run is ok: it leads the column.
            drifts = ", ".join(
                f"{group} drift {format_duration(max(0, now - since) / 1000)}"
                for group, since in sorted(m.drift.items())
            )
            detail = f"{drifts}; {detail}" if detail else drifts
        if m.planned:
            # A planned start or stop: its failed runs are no news, why it happens is.
            detail = f"planned: {m.planned}"
        d = details.get(m.name, {})
        avail = d.get("availability_1h")
        note = (d.get("info") or {}).get("note")  # what the probe cannot check, and why
        if note:
            notes.append(f"  note {printable(m.name)}: {printable(str(note))}")
        rows.append(
            [
                printable(m.name),
                m.protocol,
                m.state.upper(),
                since,
                _opt(last.e2e_ms if last else None, ".1f"),
                "-" if avail is None else f"{avail * 100:.1f}%",
                printable(detail)[:60],
            ]
        )
    out += _table(["NAME", "PROTOCOL", "STATE", "SINCE", "LAST_MS", "AVAIL_1H", "LAST"], rows)
    out += notes
    latency_rows = []
    for m in status.models:
        d = details.get(m.name, {})
        for window in ("5m", "1h"):
            cells = [_triple(d, window, c) for c in LAT]
            if any(c != "-" for c in cells):
                latency_rows.append([printable(m.name), window, *cells])
    if latency_rows:
        out.append("")
        out.append("latency of answered probe runs, ms")
        out += _table(["MODEL", "WINDOW", *(f"{LAT[c]} P50/P95/P99" for c in LAT)], latency_rows)
    out.append("")
    out.append(f"processes ({len(status.processes)})")
    rows = [
        [
            printable(p.name),
            p.state.upper(),
            str(p.pid or "-"),
            str(p.restarts),
            format_duration(max(0, now - p.since_ms) / 1000),
            printable(p.last_exit or "-"),
        ]
        for p in status.processes
    ]
    out += _table(["NAME", "STATE", "PID", "RESTARTS", "SINCE", "LAST_EXIT"], rows)
    return "\n".join([*out, *_alerts_block(alerts, now)])


def _alerts_block(alerts: Sequence[Mapping[str, Any]] | None, now_ms: int) -> list[str]:
    """``alerts (2 firing, 1 muted)`` and their table; nothing when the agent was not asked."""
    if alerts is None:
        return []
    muted = sum(1 for a in alerts if a.get("silenced_by") or a.get("maintenance"))
    head = f"alerts ({len(alerts)} firing{f', {muted} muted' if muted else ''})"
    return ["", head, *(render_alerts(alerts, now_ms) if alerts else [])]
