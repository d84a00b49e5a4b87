"""``/metrics``: the agent's live state in Prometheus text format.

A custom prometheus-client collector renders the latest values at scrape time, so nothing is
kept twice: resource series become gauges named ``vigil_`` + the series name with dots turned
into underscores (``host.mem.used_bytes`` -> ``vigil_host_mem_used_bytes``), keeping their
labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.api import AgentView

_INVALID = re.compile(r"[^a-zA-Z0-9_]")

MODEL_STATES = ("up", "degraded", "down", "unknown")


def metric_name(series: str) -> str:
    """Prometheus-safe metric name for a Vigil series name."""
    return "vigil_" + _INVALID.sub("_", series)


class AgentMetrics(Collector):
    """Collects from the agent's live status on every scrape."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family (called by prometheus-client per scrape)."""
        status = self.agent.status()
        families: dict[str, GaugeMetricFamily] = {}
        # A family has one label set. Where a series has a total without labels beside
        # labelled parts (host.cpu.percent and host.cpu.percent{core}), the parts get a family
        # of their own: vigil_host_cpu_percent_by_core.
        unlabelled = {r.name for r in status.resources if not r.labels}
        for res in status.resources:
            keys = tuple(k for k, _ in res.labels)
            name = metric_name(res.name)
            if keys and res.name in unlabelled:
                name += "_by_" + "_".join(keys)
            fam = families.get(name)
            if fam is None:
                fam = families[name] = GaugeMetricFamily(
                    name, f"Vigil series {res.name}", labels=keys
                )
            fam.add_metric([v for _, v in res.labels], res.value)
        yield from families.values()

        up = GaugeMetricFamily(
            "vigil_model_up", "1 if the model's last probe succeeded", labels=["model", "protocol"]
        )
        state = GaugeMetricFamily(
            "vigil_model_state", "1 for the model's current state", labels=["model", "state"]
        )
        for m in status.models:
            up.add_metric([m.name, m.protocol], 1.0 if m.state == "up" else 0.0)
            for s in MODEL_STATES:
                state.add_metric([m.name, s], 1.0 if m.state == s else 0.0)
        yield up
        yield state

        pup = GaugeMetricFamily(
            "vigil_process_up", "1 if the supervised process is running", labels=["process"]
        )
        restarts = CounterMetricFamily(
            "vigil_process_restarts", "Restarts by the supervisor", labels=["process"]
        )
        for p in status.processes:
            pup.add_metric([p.name], 1.0 if p.state == "running" else 0.0)
            restarts.add_metric([p.name], float(p.restarts))
        yield pup
        yield restarts

        yield GaugeMetricFamily(
            "vigil_agent_uptime_seconds", "Seconds since the agent started", value=status.uptime_s
        )
        yield GaugeMetricFamily(
            "vigil_storage_ok",
            "1 while the database accepts writes",
            value=1.0 if status.storage_ok else 0.0,
        )
        yield GaugeMetricFamily(
            "vigil_gpu_available",
            "1 when NVML found a GPU",
            value=1.0 if status.gpu_available else 0.0,
        )
