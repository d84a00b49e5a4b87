"""Supervision: the model servers Vigil starts, watches, restarts and stops.

The supervisor and each process's state machine, the targets they run (a command, a systemd
unit, a found process) and the captured process logs. Builds on ``agent.health`` (incidents)
and ``agent.config``.
"""

from agent._rooms import lazy_exports

_EXPORTS = {
    "ActionError": "supervisor",
    "ManagedProcess": "supervisor",
    "PlannedWindow": "supervisor",
    "Supervisor": "supervisor",
    "ProcessLog": "proclogs",
    "make_target": "targets",
}
__all__ = [
    "ActionError",
    "ManagedProcess",
    "PlannedWindow",
    "ProcessLog",
    "Supervisor",
    "make_target",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
