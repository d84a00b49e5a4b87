"""Serving: the agent's HTTP API, its Prometheus ``/metrics``, bearer tokens and ``api.json``.

Reads live state through the runtime's view (a protocol, never the runtime itself) and the
database through read-only connections.
"""

from agent._rooms import lazy_exports

_EXPORTS = {
    "build_app": "api",
    "AgentView": "view",
    "ProbeMetrics": "metrics",
    "Tokens": "tokens",
    "load_or_create": "tokens",
    "API_FILE": "files",
}
__all__ = ["API_FILE", "AgentView", "ProbeMetrics", "Tokens", "build_app", "load_or_create"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
