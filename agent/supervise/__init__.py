"""Supervision: the model servers Vigil starts, watches, restarts and stops.

From the top down: the supervisor's orchestration (``supervisor``), each process's state
machine (``process``) on its state and inputs (``core``), its startup gate (``gate``), the targets
it runs (``targets``: a command, a systemd unit, a found process) and their process trees
(``tree``); beneath them backoff and quarantine (``backoff``), planned windows (``planned``),
requests (``requests``), the records the next agent adopts from (``adoption``) and the captured
process logs (``proclogs``). Builds on ``agent.health`` (incidents) and ``agent.config``.
"""

from agent._rooms import lazy_exports

_EXPORTS = {
    "ActionError": "supervisor",
    "Supervisor": "supervisor",
    "ManagedProcess": "process",
    "PlannedWindow": "planned",
    "ProcessLog": "proclogs",
    "ProcessRecord": "adoption",
    "Request": "requests",
    "RequestKind": "requests",
    "make_target": "targets",
}
__all__ = [
    "ActionError",
    "ManagedProcess",
    "PlannedWindow",
    "ProcessLog",
    "ProcessRecord",
    "Request",
    "RequestKind",
    "Supervisor",
    "make_target",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
