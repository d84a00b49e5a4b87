"""Each traffic switch's settings, as the deploy room names them.

The records are the config's (:mod:`agent.config.switches`: ``[model.deploy.nginx]`` and
``[model.deploy.switch_command]`` are read into them); the switches that use them
(:class:`agent.deploy.nginx.NginxSwitch`, :class:`agent.deploy.commandswitch.CommandSwitch`)
import them from here, beside the rest of the proxy code.
"""

from agent.config.switches import (
    CHECK_PLACEHOLDERS,
    DEFAULT_CONFIRM_HEADER,
    SWITCH_PLACEHOLDERS,
    CommandSwitchSettings,
    ConfirmSettings,
    NginxSettings,
)

__all__ = [
    "CHECK_PLACEHOLDERS",
    "DEFAULT_CONFIRM_HEADER",
    "SWITCH_PLACEHOLDERS",
    "CommandSwitchSettings",
    "ConfirmSettings",
    "NginxSettings",
]
