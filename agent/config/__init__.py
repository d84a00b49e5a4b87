"""The agent's TOML configuration, validated by one schema into typed, frozen records.

``schema`` is the file's shape (msgspec Structs), ``load`` reads a file through it and runs
the checks that span fields, ``records`` holds what the rest of the agent reads, ``errors`` the
one error a bad file is refused with (file:line:field, via :mod:`storage.tomlschema`).
Exported eagerly: whoever imports the config loads it anyway.
"""

from agent.config.alerting.build import AlertingConfig
from agent.config.errors import ConfigError
from agent.config.load import load_config, parse_config
from agent.config.records import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_PORT,
    FILE_PROTOCOLS,
    ON_EXIT,
    RESTART_POLICIES,
    TARGET_KEYS,
    AgentConfig,
    Config,
    DeployConfig,
    DriftConfig,
    ModelConfig,
    ProcessConfig,
    default_data_dir,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_PORT",
    "FILE_PROTOCOLS",
    "ON_EXIT",
    "RESTART_POLICIES",
    "TARGET_KEYS",
    "AgentConfig",
    "AlertingConfig",
    "Config",
    "ConfigError",
    "DeployConfig",
    "DriftConfig",
    "ModelConfig",
    "ProcessConfig",
    "default_data_dir",
    "load_config",
    "parse_config",
]
