"""Model health: each model's monitor and state, incidents, and drift.

Probe results come in; states, incidents and drift events go out. Supervision, serving and the
runtime build on this room; it builds only on ``agent.config``.
"""

from agent._rooms import lazy_exports

_EXPORTS = {
    "ModelMonitor": "monitor",
    "samples_for": "monitor",
    "severity_of": "monitor",
    "IncidentBook": "incidents",
    "ModelDrift": "drift",
}
__all__ = ["IncidentBook", "ModelDrift", "ModelMonitor", "samples_for", "severity_of"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
