"""Which optional part of Vigil a missing module belongs to, said the way a user can act on.

The core install is what the agent and the TUI both need; the agent's packages (numpy,
onnxruntime, NVML, ...) come with the ``agent`` extra and Textual with the ``tui`` extra
(pyproject.toml), so a laptop that only opens the TUI does not install onnxruntime. A command
whose extra is missing fails on its first import of it; :func:`missing_extra` turns that
``ModuleNotFoundError`` into one line naming the extra and the pip command.
"""

from __future__ import annotations

EXTRAS: dict[str, frozenset[str]] = {
    "agent": frozenset(
        {
            "apscheduler",
            "cryptography",
            "numpy",
            "onnxruntime",
            "prometheus_client",
            "psutil",
            "pynvml",
            "sqlite_utils",
            "watchdog",
        }
    ),
    "tui": frozenset({"textual", "rich"}),
}
"""Top-level modules each extra installs (by import name, as ``ModuleNotFoundError`` has it)."""


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is fine), or None if it is none's."""
    top = (module or "").split(".")[0]
    for extra, modules in EXTRAS.items():
        if top in modules:
            return extra
    return None


def missing_extra(command: str, exc: ModuleNotFoundError) -> str | None:
    """One line for a command that failed on a module an extra installs; None otherwise.

    >>> missing_extra("tui", ModuleNotFoundError("No module named 'textual'", name="textual"))
    "the TUI needs the tui extra: pip install 'vigil[tui]' (no module named 'textual')"
    """
    extra = extra_for(exc.name)
    if extra is None:
        return None
    who = "the TUI" if extra == "tui" else f"`vigil {command}`"
    install = f"pip install 'vigil[{extra}]'"
    return f"{who} needs the {extra} extra: {install} (no module named {exc.name!r})"
