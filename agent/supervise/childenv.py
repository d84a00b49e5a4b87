"""The environment a supervised process starts with: the agent's, less the agent's secrets.

A model server inherits the agent's environment (``PATH``, ``CUDA_VISIBLE_DEVICES``, proxies,
...), but not what is the agent's own: its ``VIGIL_*`` settings (``VIGIL_TOKEN`` is the API's
operate token) and every variable the config named as holding a secret (a model's
``api_key_env``, a channel's ``secret_env``, ``password_env``, ...). A server that logs its
environment, a crash dump, or a process running as another user would otherwise carry them
off. ``NOTIFY_SOCKET`` and the watchdog's variables are removed from the agent's own
environment at start (:mod:`agent.runtime.sdnotify`). A process's own ``env`` table may set any
of these: what the operator gives a process explicitly is its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from agent.config.secrets import secret_env_names

AGENT_PREFIX = "VIGIL_"


def child_environ(own: Mapping[str, str] | None = None) -> dict[str, str]:
    """The agent's environment without its secrets, then ``own`` (a process's ``env``)."""
    secret = secret_env_names()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(AGENT_PREFIX) and name not in secret
    }
    env.update(own or {})
    return env
