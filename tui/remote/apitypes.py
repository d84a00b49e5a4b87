"""Answers of the agent's API that have no record type in :mod:`storage.records`.

``GET /api/v1/models`` adds latency percentiles, outcome counts, availability, what the probe
learned and the open incident to each model's :class:`ModelStatus`; this module rebuilds that
into frozen records so screens never pass dicts around.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from storage.records import Incident, ModelStatus

LATENCY_METRICS = ("ttft_ms", "itl_ms", "e2e_ms")
"""The latencies a model screen charts, in the order a request lives through them."""


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float | str):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of one latency over one window (all None when nothing was measured)."""

    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencySummary:
        """Rebuild from the API's ``{count, p50, p95, p99, mean, max}``."""
        return cls(
            count=int(data.get("count") or 0),
            p50_ms=_opt_float(data.get("p50")),
            p95_ms=_opt_float(data.get("p95")),
            p99_ms=_opt_float(data.get("p99")),
            mean_ms=_opt_float(data.get("mean")),
            max_ms=_opt_float(data.get("max")),
        )


@dataclass(frozen=True, slots=True)
class ModelDetail:
    """One entry of ``GET /api/v1/models``.

    Attributes:
        status: Name, protocol, url, state, since and the last run.
        latency: Window (``5m``, ``1h``) to metric (``e2e_ms``...) to its percentiles.
        outcomes_1h: Probe runs of the last hour per category (``ok``, ``timeout``...).
        availability_1h: Share of ``ok`` runs in the last hour; None without runs.
        info: What the probe learned (model metadata, artifact hashes), as the agent sent it.
        incident: The open incident about the model, if any.
    """

    status: ModelStatus
    latency: Mapping[str, Mapping[str, LatencySummary]] = field(default_factory=dict)
    outcomes_1h: Mapping[str, int] = field(default_factory=dict)
    availability_1h: float | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    incident: Incident | None = None

    @property
    def name(self) -> str:
        """The model's name."""
        return self.status.name

    def summary(self, metric: str, window: str = "5m") -> LatencySummary:
        """The percentiles of ``metric`` over ``window``; empty when the agent sent none."""
        return self.latency.get(window, {}).get(metric, LatencySummary())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelDetail:
        """Rebuild from one element of ``{"models": [...]}``."""
        latency = {
            str(window): {str(m): LatencySummary.from_json(s) for m, s in metrics.items()}
            for window, metrics in (data.get("latency") or {}).items()
        }
        incident = data.get("incident")
        availability = data.get("availability_1h")
        return cls(
            status=ModelStatus.from_json(data),
            latency=latency,
            outcomes_1h={str(k): int(v) for k, v in (data.get("outcomes_1h") or {}).items()},
            availability_1h=None if availability is None else float(availability),
            info=dict(data.get("info") or {}),
            incident=Incident.from_json(incident) if incident else None,
        )
