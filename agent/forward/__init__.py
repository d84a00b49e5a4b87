"""Store and forward: the agent's stored samples sent to a Prometheus remote-write receiver
(Prometheus, VictoriaMetrics, Mimir, Thanos Receive), read from a cursor over the samples
already stored, not kept twice. See docs/fleet.md ("Beyond one laptop: remote_write")."""

from agent.forward.naming import Catalog, prometheus_labels
from agent.forward.remotewrite import RemoteWrite
from agent.forward.state import ForwardState, ForwardStats

__all__ = ["Catalog", "ForwardState", "ForwardStats", "RemoteWrite", "prometheus_labels"]
