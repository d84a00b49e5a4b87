"""``/metrics``: the agent's live state in Prometheus text format.

:class:`AgentMetrics` renders the latest values at scrape time, so nothing is kept twice:
resource series become gauges named ``vigil_`` + the series name with dots turned into
underscores (``host.mem.used_bytes`` -> ``vigil_host_mem_used_bytes``), keeping their labels.
The text itself is written by :mod:`agent.serve.exposition` (no prometheus-client at run time).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from agent.config.alerting.rules import Severity
from agent.health.drift import METRICS as DRIFT_METRICS
from agent.serve.exposition import (
    Family,
    LabelledCounter,
    LabelledHistogram,
    add_total,
    counter,
    gauge,
)
from agent.serve.view import AgentView, MetricFamilies
from storage.db import DB_FILENAME, connect
from storage.records import AgentStatus, ModelState, ProbeRun, ProcessState

if TYPE_CHECKING:
    from agent.alerting.outbox import Sender

log = logging.getLogger("vigil.api")

_INVALID = re.compile(r"[^a-zA-Z0-9_]")

MODEL_STATES = tuple(str(s) for s in ModelState)
DRIFT_GROUPS = tuple(dict.fromkeys(group for _, group, _ in DRIFT_METRICS))
"""Drift kinds with a lasting state; output drift is a one-off event, counted in reports."""
PROCESS_STATES = tuple(str(s) for s in ProcessState)

# Bucket bounds in seconds, spanning what a canary sees from a small CPU model (ms) to a large
# LLM under load (tens of seconds).
E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)


class ProbeMetrics:
    """Probe results accumulated as Prometheus histograms and counters.

    Unlike resource values these cannot be rendered from the latest state at scrape time: a
    histogram is the history of every run since the agent started, which is what lets
    Prometheus compute quantiles over any window (``histogram_quantile`` over ``rate``).
    The metrics are not registered anywhere global; :class:`AgentMetrics` yields them.
    """

    def __init__(self) -> None:
        labels = ["model"]
        self.e2e = LabelledHistogram(
            "vigil_probe_e2e_seconds", "Probe request to complete answer", labels, E2E_BUCKETS
        )
        self.ttft = LabelledHistogram(
            "vigil_probe_ttft_seconds",
            "Probe request to first generated text (streaming LLM probes)",
            labels,
            TTFT_BUCKETS,
        )
        self.itl = LabelledHistogram(
            "vigil_probe_itl_seconds",
            "Mean inter-token latency of a probe's answer (streaming LLM probes)",
            labels,
            ITL_BUCKETS,
        )
        self.runs = LabelledCounter(
            "vigil_probe_runs", "Probe runs by outcome category", ["model", "category"]
        )

    def observe(self, run: ProbeRun) -> None:
        """Count one run; its latencies only when it succeeded (failures have none to trust)."""
        self.runs.inc(str(run.model), str(run.category))
        if run.category not in ("ok", "slow"):
            return
        if run.e2e_ms is not None:
            self.e2e.observe(str(run.model), value=run.e2e_ms / 1000)
        if run.ttft_ms is not None:
            self.ttft.observe(str(run.model), value=run.ttft_ms / 1000)
        if run.itl_ms is not None:
            self.itl.observe(str(run.model), value=run.itl_ms / 1000)

    def forget(self, model: str) -> None:
        """Drop a model removed from the config, so it stops being exported."""
        for metric in (self.e2e, self.ttft, self.itl):
            metric.remove(model)
        for labels in list(self.runs.values):
            if labels[0] == model:
                self.runs.remove(*labels)

    def collect(self) -> Iterator[Family]:
        """The families, for :class:`AgentMetrics`."""
        for metric in (self.e2e, self.ttft, self.itl, self.runs):
            yield from metric.collect()


def metric_name(series: str) -> str:
    """Prometheus-safe metric name for a Vigil series name."""
    return "vigil_" + _INVALID.sub("_", series)


class AlertingMetricsView(Protocol):
    """What ``/metrics`` reads of the agent's alerting (``agent.runtime.alerting_job``)."""

    @property
    def sender(self) -> Sender: ...

    @property
    def evaluations(self) -> int: ...

    def counts(self) -> Mapping[tuple[str, str], int]: ...


ALERT_STATES = ("pending", "firing", "silenced")
ALERT_SEVERITIES = tuple(str(s) for s in Severity)


def alert_families(alerting: AlertingMetricsView) -> Iterator[Family]:
    """Alerts by state and severity; notifications sent, failed and given up per channel."""
    alerts = gauge(
        "vigil_alerts",
        "Alerts now by state (silenced: firing and muted by a silence) and severity",
        labels=["state", "severity"],
    )
    counts = alerting.counts()
    for state in ALERT_STATES:
        for sev in ALERT_SEVERITIES:
            alerts.add([state, sev], float(counts.get((state, sev), 0)))
    yield alerts
    evaluations = counter("vigil_alert_evaluations", "Evaluations of the alert rules")
    add_total(evaluations, [], float(alerting.evaluations))
    yield evaluations
    sent = counter(
        "vigil_notifications_sent", "Notifications the receiver accepted", labels=["channel"]
    )
    failed = counter(
        "vigil_notifications_failed",
        "Failed delivery attempts (each retried or given up)",
        labels=["channel"],
    )
    undelivered = counter(
        "vigil_notifications_undelivered",
        "Notifications given up as undelivered",
        labels=["channel"],
    )
    ok = gauge(
        "vigil_notify_channel_ok", "1 unless the channel's last attempt failed", labels=["channel"]
    )
    for name, health in sorted(alerting.sender.health.items()):
        add_total(sent, [name], float(health.delivered))
        add_total(failed, [name], float(health.failed_attempts))
        add_total(undelivered, [name], float(health.given_up))
        ok.add([name], 1.0 if health.ok else 0.0)
    yield from (sent, failed, undelivered, ok)


class AgentMetrics:
    """Collects from the agent's live status on every scrape."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Family]:
        """Yield every metric family (per scrape; :func:`agent.serve.exposition.render`)."""
        status = self.agent.status()
        families: dict[str, Family] = {}
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
                fam = families[name] = gauge(name, f"Vigil series {res.name}", labels=keys)
            fam.add([v for _, v in res.labels], res.value)
        yield from families.values()

        up = gauge(
            "vigil_model_up", "1 if the model's last probe succeeded", labels=["model", "protocol"]
        )
        state = gauge(
            "vigil_model_state", "1 for the model's current state", labels=["model", "state"]
        )
        tps = gauge(
            "vigil_probe_tokens_per_second",
            "Output tokens per second of the model's last successful generation probe",
            labels=["model"],
        )
        last = gauge(
            "vigil_probe_last_run_timestamp_seconds",
            "When the model was last probed",
            labels=["model"],
        )
        drift = gauge(
            "vigil_model_drift",
            "1 while drift of this kind is detected on the model and not yet cleared",
            labels=["model", "kind"],
        )
        for m in status.models:
            up.add([m.name, m.protocol], 1.0 if m.state == "up" else 0.0)
            for kind in DRIFT_GROUPS:
                drift.add([m.name, kind], 1.0 if kind in m.drift else 0.0)
            for s in MODEL_STATES:
                state.add([m.name, s], 1.0 if m.state == s else 0.0)
            run = m.last_run
            if run is not None:
                last.add([m.name], run.ts_ms / 1000)
                if run.ok and run.tokens_per_s is not None:
                    tps.add([m.name], run.tokens_per_s)
        yield up
        yield state
        yield drift
        yield tps
        yield last
        yield from self.agent.probe_metrics.collect()

        incidents = gauge("vigil_incidents_open", "Open incidents by severity", labels=["severity"])
        counts = {"critical": 0, "warning": 0}
        for inc in self.agent.incidents.open_incidents():
            counts[inc.severity] = counts.get(inc.severity, 0) + 1
        for sev, n in sorted(counts.items()):
            incidents.add([sev], float(n))
        yield incidents

        yield from _process_families(status)

        # The labels on one info series rather than on every series: Prometheus joins them in
        # where wanted (group_left), and a label change does not start every series anew.
        info = gauge(
            "vigil_agent_info",
            "1, labelled with the agent's [agent] labels",
            labels=[name for name, _ in status.labels],
        )
        info.add([value for _, value in status.labels], 1.0)
        yield info
        yield gauge(
            "vigil_agent_uptime_seconds", "Seconds since the agent started", value=status.uptime_s
        )
        yield gauge(
            "vigil_storage_ok",
            "1 while the database accepts writes",
            value=1.0 if status.storage_ok else 0.0,
        )
        yield gauge(
            "vigil_gpu_available",
            "1 when NVML found a GPU",
            value=1.0 if status.gpu_available else 0.0,
        )
        yield from self._optional(status)

    def _optional(self, status: AgentStatus) -> Iterator[Family]:
        """The families of parts a stand-in agent may lack: alerting, deploys, remote_write."""
        # Stand-in agents (tests, the demo's) may run no alerting.
        alerting: AlertingMetricsView | None = getattr(self.agent, "alerting", None)
        if alerting is not None:
            yield from alert_families(alerting)
        # ... nor deploys: their families come from the database, where deploys are recorded
        # (whether or not the agent has made its deploy engine yet).
        if getattr(self.agent, "records_deploys", False):
            yield from self._deploys([m.name for m in status.models])
        # remote_write's state and counters (agent.forward), when the agent forwards.
        forward: MetricFamilies | None = getattr(self.agent, "remote_write", None)
        if forward is not None:
            yield from forward.collect()

    def _deploys(self, models: list[str]) -> Iterator[Family]:
        from agent.serve.deploymetrics import deploy_families  # the DORA queries: when scraped

        try:
            conn = connect(self.agent.data_dir / DB_FILENAME, readonly=True)
        except sqlite3.Error as exc:
            log.warning("deploy metrics not read error=%r", str(exc))
            return
        try:
            families = list(deploy_families(conn, models, int(time.time() * 1000)))
        except sqlite3.Error as exc:  # a locked or damaged database: the rest still scrapes
            log.warning("deploy metrics not read error=%r", str(exc))
            return
        finally:
            conn.close()
        yield from families


def _process_families(status: AgentStatus) -> Iterator[Family]:
    """Each supervised process: up, restarts, state."""
    pup = gauge("vigil_process_up", "1 if the supervised process is running", labels=["process"])
    restarts = counter("vigil_process_restarts", "Restarts by the supervisor", labels=["process"])
    pstate = gauge(
        "vigil_process_state",
        "1 for the supervised process's current state",
        labels=["process", "state"],
    )
    for p in status.processes:
        pup.add([p.name], 1.0 if p.state == ProcessState.RUNNING else 0.0)
        add_total(restarts, [p.name], float(p.restarts))
        for s in PROCESS_STATES:
            pstate.add([p.name, s], 1.0 if p.state == s else 0.0)
    yield pup
    yield restarts
    yield pstate
