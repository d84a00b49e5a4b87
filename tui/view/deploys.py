"""The deployments view's model, without Textual (issue 16): the deployments' rows and
colours, a model's versions (which serves, which are known-good), the live progress of a deploy
in flight, and the summary line.

Everything here is agent data (actors, notes, errors, check details): it goes through
:func:`tui.view.fmt.safe`/:func:`~tui.view.fmt.clean`, never through markup, so a version note
``[red]x[/]`` shows as those characters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from tui.view.fmt import clean, format_age, format_clock, format_duration, safe

FINAL_STATES = frozenset({"promoted", "rolled_back", "failed", "cancelled"})
"""A deployment in any other state is in flight (the agent's ``DeployState.final``)."""

STATE_STYLES = {
    "promoted": "green",
    "rolled_back": "bold red",
    "failed": "bold red",
    "cancelled": "dim",
    "awaiting_approval": "bold yellow",
}
IN_FLIGHT_STYLE = "yellow"
"""Requested, switching, starting, baking, promoting, rolling back: on its way somewhere."""

CHECK_ORDER = ("canaries", "golden", "incidents", "drift", "latency", "throughput")
"""The canary gate's checks as the agent judges them: at once during the bake, then at its end."""


@dataclass(frozen=True, slots=True)
class DeploysData:
    """What one fetch of the deployments view brings.

    Attributes:
        now_ms: The agent's clock (ages and bake progress use it, not ours).
        host: The agent's host name.
        deployments: Newest first, as ``GET /api/v1/deployments`` lists them.
        details: ``GET /api/v1/deployments/{id}`` of each deploy in flight (with ``progress``).
        versions: Per model, ``GET /api/v1/models/{name}/versions``.
    """

    now_ms: int
    host: str
    deployments: list[dict[str, Any]] = field(default_factory=list)
    details: dict[int, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    kpis: dict[str, Any] | None = None
    """``GET /api/v1/deployments/kpi`` (the DORA four keys), None from an agent without it."""


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def in_flight(dep: Mapping[str, Any]) -> bool:
    """Whether the deploy is still on its way (not promoted, rolled back, failed, cancelled)."""
    flag = dep.get("in_flight")
    if isinstance(flag, bool):
        return flag
    return str(dep.get("state", "")) not in FINAL_STATES


def state_style(state: object) -> str:
    """Green promoted, red rolled back or failed, dim cancelled, yellow in flight."""
    return STATE_STYLES.get(str(state), IN_FLIGHT_STYLE)


def short_hash(value: object) -> str:
    """``sha256:abcdef…`` -> its first 12 hex digits (as ``vigil deploy versions`` shows)."""
    text = clean(value, 200)
    return text.partition(":")[2][:12] or text[:12]


def deployment_key(dep: Mapping[str, Any]) -> str:
    """The deployments table's row key."""
    return f"deploy:{dep.get('id')}"


def version_key(version: Mapping[str, Any]) -> str:
    """The versions table's row key."""
    return f"version:{version.get('id')}"


def models_of(deployments: Sequence[Mapping[str, Any]]) -> list[str]:
    """The models the deployments are about, in order of their newest deploy."""
    return list(dict.fromkeys(str(d.get("model", "")) for d in deployments if d.get("model")))


def deployment_row(dep: Mapping[str, Any], now_ms: int) -> list[Text]:
    """id, model, state, version, age, requested by, strategy, approved by, took, error:
    what matters first, as 80 columns show only the first ones."""
    state = str(dep.get("state", ""))
    requested = _int(dep.get("requested_ms"))
    finished = _int(dep.get("finished_ms"))
    took = "-"
    if requested is not None and finished is not None:
        took = format_age(finished, requested)
    error = dep.get("error")
    return [
        Text(f"#{clean(dep.get('id'), 12)}", justify="right"),
        safe(dep.get("model"), style="bold", max_len=24),
        safe(state, style=state_style(state), max_len=18),
        Text(short_hash(dep.get("version_hash")) or "-", style="cyan"),
        Text(format_age(now_ms, requested), style="dim", justify="right"),
        safe(dep.get("requested_by") or "-", max_len=28),
        safe(dep.get("strategy"), style="dim", max_len=12),
        safe(dep.get("approved_by") or "-", style="" if dep.get("approved_by") else "dim"),
        Text(took, style="dim", justify="right"),
        safe(error or "", style="red", max_len=80),
    ]


def version_mark(version: Mapping[str, Any]) -> Text:
    """``▶`` for the version serving now, ``✓`` for a known-good one (both may hold)."""
    out = Text()
    out.append("▶" if version.get("current") else " ", style="bold cyan")
    out.append("✓" if version.get("known_good") else " ", style="green")
    return out


def version_row(version: Mapping[str, Any]) -> list[Text]:
    """mark, id, hash, created, actor, pipeline, git sha, outcome, notes."""
    outcome = version.get("outcome")
    return [
        version_mark(version),
        Text(clean(version.get("id"), 12), justify="right"),
        Text(short_hash(version.get("hash")), style="cyan"),
        Text(format_clock(_int(version.get("created_ms")), short=True), style="dim"),
        safe(version.get("actor") or "-", max_len=28),
        safe(version.get("pipeline_id") or "-", style="dim", max_len=20),
        safe(clean(version.get("git_sha") or "-", 200)[:10], style="dim"),
        safe(outcome or "-", style=state_style(outcome) if outcome else "dim", max_len=14),
        safe(version.get("notes") or "", max_len=80),
    ]


def sort_versions(versions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Newest first (the highest id), as the agent lists them."""
    return sorted(versions, key=lambda v: -(_int(v.get("id")) or 0))


def last_known_good(versions: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest known-good version other than the current one: what ``B`` goes back to."""
    for v in sort_versions(versions):
        if v.get("known_good") and not v.get("current"):
            return v
    return None


def _bar(fraction: float, width: int = 12) -> Text:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    out = Text("█" * filled, style="yellow")
    out.append("·" * (width - filled), style="dim")
    return out


def checks_text(checks: Sequence[Mapping[str, Any]]) -> Text:
    """``canaries ✓ golden ✓ incidents ✓ drift ✓ latency … throughput …``: each check of the
    gate as it stands (``✓`` passed, ``✗`` failed, ``…`` not judged yet), in the gate's order."""
    by_name = {str(c.get("check")): c for c in checks}
    names = [n for n in CHECK_ORDER if n in by_name] + [n for n in by_name if n not in CHECK_ORDER]
    out = Text()
    for n, name in enumerate(names):
        ok = by_name[name].get("ok")
        if n:
            out.append(" ")
        out.append(clean(name, 20), style="dim")
        if ok is True:
            out.append(" ✓", style="green")
        elif ok is False:
            out.append(" ✗", style="bold red")
        else:
            out.append(" …", style="yellow")
    return out


def progress_text(dep: Mapping[str, Any], detail: Mapping[str, Any], now_ms: int) -> Text:
    """The live progress of a deploy in flight, two lines: the bake's elapsed and total time
    with the canaries seen, then good canaries in a row against those needed and the gate's
    checks as they stand. Empty for a deploy no longer in flight (or not baking yet, where the
    state in the header says it all, but for a deploy that waits for an approval)."""
    if not in_flight(dep):
        return Text()
    state = str(detail.get("state") or dep.get("state", ""))
    if state == "awaiting_approval":
        return Text("waiting for an operator's approval (A approves)", style="yellow")
    progress = detail.get("progress")
    progress = progress if isinstance(progress, Mapping) else {}
    out = Text()
    bake_s = _num(detail.get("bake_s") if "bake_s" in detail else dep.get("bake_s")) or 0.0
    ends = _int(progress.get("bake_ends_ms"))
    if ends is not None and bake_s > 0:
        started = ends - bake_s * 1000
        elapsed_s = max(0.0, min(bake_s, (now_ms - started) / 1000))
        out.append("bake ")
        out.append_text(_bar(elapsed_s / bake_s))
        out.append(
            f" {format_duration(int(elapsed_s)) if elapsed_s >= 1 else '0s'}"
            f" of {format_duration(int(bake_s))}"
        )
        runs, failed = _int(progress.get("canaries")), _int(progress.get("failed"))
        if runs is not None:
            out.append(f" · {runs} canaries", style="dim")
            if failed:
                out.append(f", {failed} failed", style="red")
    good, needed = _int(progress.get("good_in_a_row")), _int(progress.get("needed"))
    line = Text()
    if good is not None and needed is not None:
        line.append(f"{good}/{needed} good in a row", style="green" if good >= needed else "yellow")
    checks = progress.get("checks")
    if isinstance(checks, list) and checks:
        line.append(" · " if line else "", style="dim")
        line.append("gate ", style="dim")
        line.append_text(checks_text([c for c in checks if isinstance(c, Mapping)]))
    if line:
        out.append("\n" if out else "")
        out.append_text(line)
    return out


def _version_label(versions: Mapping[str, Any], role: str) -> str:
    v = versions.get(role)
    if not isinstance(v, Mapping):
        return ""
    return f"v{clean(v.get('id'), 12)} {short_hash(v.get('hash'))}"


def deployment_detail(
    dep: Mapping[str, Any], detail: Mapping[str, Any] | None, now_ms: int
) -> Text:
    """The deploy under the cursor: what it changes and for whom, who asked and approved, its
    live progress while in flight, and how it ended (its error and failed checks) after."""
    detail = detail or {}
    out = Text()
    out.append(f"#{clean(dep.get('id'), 12)} ", style="bold")
    out.append_text(safe(dep.get("model"), style="bold", max_len=40))
    out.append(" · ", style="dim")
    out.append_text(safe(dep.get("strategy"), max_len=12))
    out.append(" · ", style="dim")
    state = str(detail.get("state") or dep.get("state", ""))
    out.append_text(safe(state, style=state_style(state), max_len=20))
    if in_flight(dep):
        since = _int(detail.get("state_since_ms") or dep.get("state_since_ms"))
        out.append(f" {format_age(now_ms, since)}", style="dim")
    versions = detail.get("versions")
    if isinstance(versions, Mapping):
        before, after = _version_label(versions, "from"), _version_label(versions, "to")
        if after:
            out.append(" · ", style="dim")
            out.append(f"{before or '(none)'} → {after}", style="cyan")
        elif dep.get("version_hash"):
            out.append(f" · → {short_hash(dep.get('version_hash'))}", style="cyan")
    elif dep.get("version_hash"):
        out.append(f" · → {short_hash(dep.get('version_hash'))}", style="cyan")
    out.append("\nrequested by ", style="dim")
    out.append_text(safe(dep.get("requested_by") or "-", max_len=48))
    out.append(f" {format_age(now_ms, _int(dep.get('requested_ms')))} ago", style="dim")
    if dep.get("approved_by"):
        out.append(" · approved by ", style="dim")
        out.append_text(safe(dep.get("approved_by"), max_len=48))
    lineage = [
        f"{label} {clean(dep.get(key), 200)[:width]}"
        for key, label, width in (("pipeline_id", "pipeline", 24), ("git_sha", "git", 10))
        if dep.get(key)
    ]
    if lineage:
        out.append(" · " + " · ".join(lineage), style="dim")
    live = progress_text(dep, detail, now_ms)
    if live:
        out.append("\n")
        out.append_text(live)
        return out
    if dep.get("error"):
        out.append("\n✖ ", style="bold red")
        out.append_text(safe(dep.get("error"), style="red", max_len=300))
    checks = dep.get("checks")
    verdict = checks.get("verdict") if isinstance(checks, Mapping) else None
    if isinstance(verdict, Mapping) and isinstance(verdict.get("checks"), list):
        out.append("\ngate ", style="dim")
        out.append_text(checks_text([c for c in verdict["checks"] if isinstance(c, Mapping)]))
    return out


def summary_text(deployments: Sequence[Mapping[str, Any]], now_ms: int) -> Text:
    """``12 deploys · 9 promoted · 2 rolled back/failed (18%) · 1 in flight · last promoted
    3h ago``: what the listed deploys say, before any KPI route does better."""
    if not deployments:
        return Text("no deployments recorded yet", style="dim")
    promoted = [d for d in deployments if d.get("state") == "promoted"]
    bad = [d for d in deployments if d.get("state") in ("rolled_back", "failed")]
    flying = [d for d in deployments if in_flight(d)]
    out = Text(f"{len(deployments)} deploys", style="bold")
    out.append(" · ", style="dim")
    out.append(f"{len(promoted)} promoted", style="green" if promoted else "dim")
    out.append(" · ", style="dim")
    judged = len(promoted) + len(bad)
    rate = f" ({100 * len(bad) / judged:.0f}%)" if judged else ""
    out.append(f"{len(bad)} rolled back/failed{rate}", style="red" if bad else "dim")
    out.append(" · ", style="dim")
    out.append(f"{len(flying)} in flight", style="yellow" if flying else "dim")
    last = max((_int(d.get("finished_ms")) or 0 for d in promoted), default=0)
    if last:
        out.append(f" · last promoted {format_age(now_ms, last)} ago", style="dim")
    return out


def _ms(value: object) -> str:
    ms = _num(value)
    if ms is None:
        return "-"
    return format_duration(int(ms / 1000)) if ms >= 1000 else "<1s"


def kpi_text(kpis: Mapping[str, Any]) -> Text:
    """``30d: 9 changes (0.3/day) · lead time 2h · failure rate 22% · restore 6m``: the DORA
    four keys of the agent's window, lead time and time to restore as medians (the deploys in
    flight are counted under the deployments table)."""
    keys = kpis.get("host")
    keys = keys if isinstance(keys, Mapping) else {}
    since, until = _int(kpis.get("since_ms")), _int(kpis.get("until_ms"))
    window = format_duration((until - since) // 1000) if since and until else "window"
    out = Text(f"{window}: ", style="dim")
    changes = _int(keys.get("changes")) or 0
    out.append(f"{changes} change{'' if changes == 1 else 's'}", style="bold")
    per_day = _num(keys.get("per_day"))
    out.append(f" ({per_day:.2g}/day)" if per_day is not None else "", style="dim")
    out.append(" · lead time ", style="dim")
    out.append(_ms(keys.get("lead_time_median_ms")))
    rate = _num(keys.get("change_failure_rate"))
    out.append(" · failure rate ", style="dim")
    if rate is None:
        out.append("-")
    else:
        out.append(f"{100 * rate:.0f}%", style="red" if rate > 0 else "green")
    out.append(" · restore ", style="dim")
    out.append(_ms(keys.get("time_to_restore_median_ms")))
    return out


def deploy_matches(dep: Mapping[str, Any], needle: str) -> bool:
    """Whether ``needle`` (case-folded) is in the deploy's id, model, state, people, version
    or error."""
    if not needle:
        return True
    hay = " ".join(
        str(dep.get(k) or "")
        for k in (
            "model",
            "state",
            "strategy",
            "requested_by",
            "approved_by",
            "version_hash",
            "error",
            "pipeline_id",
            "git_sha",
        )
    )
    return needle in clean(f"#{dep.get('id')} {hay}", 4000).casefold()
