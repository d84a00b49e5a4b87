"""The built-in rules and :func:`effective_rules`, as this room reads them: they live in
:mod:`agent.config.alerting.builtin`, where the config merges them with its own rules."""

from agent.config.alerting.builtin import BUILTIN_NAMES, BUILTIN_RULES, effective_rules

__all__ = ["BUILTIN_NAMES", "BUILTIN_RULES", "effective_rules"]
