"""Lazy public surfaces for the agent's rooms (sub-packages).

Each room's ``__init__`` names what it offers (``__all__``) without importing it: importing one
module of a room (the CLI reading ``api.json``'s name) must not load the rest of the room (the
HTTP server), so the agent and the CLI each pay only for what they run (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that loads ``exports`` (name -> submodule) on first use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
