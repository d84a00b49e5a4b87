"""The runtime: the agent daemon that wires every room together, its schedule (the only
APScheduler import), the config file watch, systemd notification and logging."""

from agent._rooms import lazy_exports

_EXPORTS = {
    "Agent": "daemon",
    "Scheduler": "schedule",
    "ConfigWatcher": "watch",
    "Notifier": "sdnotify",
    "setup_logging": "logfmt",
}
__all__ = ["Agent", "ConfigWatcher", "Notifier", "Scheduler", "setup_logging"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
