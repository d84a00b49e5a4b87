"""Store and forward: the agent's stored samples sent to a Prometheus remote-write receiver
(Prometheus, VictoriaMetrics, Mimir, Thanos Receive), read from a cursor over the samples
already stored, not kept twice (docs/scaling.md). Run by the runtime; the API and ``/metrics``
reach it through the agent."""

from agent._rooms import lazy_exports

_EXPORTS = {
    "RemoteWrite": "remotewrite",
    "ForwardState": "state",
    "ForwardStats": "state",
    "Catalog": "naming",
    "prometheus_labels": "naming",
}
__all__ = ["Catalog", "ForwardState", "ForwardStats", "RemoteWrite", "prometheus_labels"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
