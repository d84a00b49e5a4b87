"""The validated configuration: typed, frozen records the rest of the agent reads.

Durations are in seconds (``interval_s``), paths are ``Path``s, defaults are filled in; the file's
own shape (its key names, ``"10s"`` strings) is :mod:`agent.config.schema`'s business.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.alerting.build import AlertingConfig
from agent.config.remotewrite import RemoteWriteConfig
from agent.config.switches import CommandSwitchSettings, NginxSettings

DEFAULT_CONFIG_PATH = Path("/etc/vigil/vigil.toml")
DEFAULT_PORT = 8470
RESTART_POLICIES = ("always", "on-failure", "never")
ON_EXIT = ("keep", "stop")
LOG_LEVELS = ("debug", "info", "warning", "error")
TARGET_KEYS = ("command", "systemd_unit", "pidfile", "match")
FILE_PROTOCOLS = frozenset({"onnx"})
"""Protocols whose model is a local file (``url = "file:///models/m.onnx"``)."""


def default_data_dir() -> Path:
    """Where the agent keeps its database and token when the config does not say.

    Root gets the FHS state directory; anyone else their XDG state directory, so a developer
    can run the agent without privileges.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/vigil")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "vigil"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``[agent.tls]``: the API serves HTTPS with this certificate chain and key, both
    re-read when either file changes (:mod:`agent.runtime.certreload`)."""

    cert_file: Path
    """PEM: the server's certificate first, then any intermediates."""
    key_file: Path
    """PEM: the unencrypted private key of the first certificate."""
    min_version: str = "1.2"
    """The oldest TLS version accepted: ``1.2`` or ``1.3``."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The ``[agent]`` table."""

    host: str
    data_dir: Path
    labels: tuple[tuple[str, str], ...] = ()
    """``labels``: (name, value) sorted by name, served in the status and ``vigil_agent_info``."""
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    tls: TlsConfig | None = None
    """HTTPS for the API; None serves plain HTTP (refused beyond loopback unless allowed)."""
    allow_insecure_listen: bool = False
    """Plain HTTP on an address other hosts reach, accepted knowingly (a TLS proxy in front)."""
    sample_interval_s: float = 1.0
    retention_s: float = 2 * 86400.0
    """Raw samples and probe runs."""
    retention_1m_s: float = 30 * 86400.0
    """The 1-minute rollups."""
    retention_1h_s: float = 2 * 365 * 86400.0
    """The 1-hour rollups."""
    retention_events_s: float | None = None
    """Audit events; None keeps them all."""
    log_level: str = "info"
    on_exit: str = "keep"
    """What happens to supervised processes when the agent stops: ``keep`` leaves them
    running for the next agent to adopt (an agent upgrade costs no model downtime), ``stop``
    stops them."""
    audit_checkpoint_interval_s: float = 300.0
    """How often the audit chain's head is signed (when it moved; daily when it did not)."""
    audit_syslog: str = "/dev/log"
    """The syslog socket checkpoints are written to; empty: none."""
    audit_webhook: str | None = None
    """A URL each checkpoint is also POSTed to (may hold a token: never logged)."""
    fingerprint_interval_s: float = 600.0
    """How often the serving-environment fingerprint is read (``agent.runtime.environment``)."""


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """``[model.drift]``: when a model's recent answers differ from its own recent past.

    Latency and throughput: the median of the last ``window`` answered runs against the
    median of the ``baseline`` runs before them. Output: answers that had been identical for
    ``output_stable_runs`` runs in a row change, and the new answer persists for
    ``output_confirm_runs`` runs.
    """

    enabled: bool = True
    window: int = 20
    baseline: int = 100
    ratio: float = 1.5
    """How much worse the recent median must be: latency x ratio, tokens/s / ratio."""
    min_delta_ms: float = 20.0
    """A latency shift smaller than this is never drift (1 ms -> 2 ms is noise, not news)."""
    accept_after_s: float = 3600.0
    """A shift that lasts this long becomes the new baseline (recorded as accepted)."""
    output_stable_runs: int = 5
    output_confirm_runs: int = 3


@dataclass(frozen=True, slots=True)
class DeployConfig:
    """``[model.deploy]``: how ``vigil deploy`` switches a model's artifact, gates the new
    version during its bake, and rolls back (see docs/deploy.md).

    The gate's thresholds compare the new version with the previous one's own baseline (its
    stored probe runs and answers), so they are ratios, not absolute budgets.
    """

    link: Path | None = None
    """The ``current`` symlink the process's command reads its model through; Vigil switches it
    atomically (a temporary link renamed over it). None: the model cannot be deployed.
    Blue-green: the link names the version the serving copy runs."""
    process: str | None = None
    """The ``[[process]]`` restarted by a deploy; None means the model's own ``process``."""
    strategy: str = "in-place"
    """``in-place`` (switch the link, restart the process) or ``blue-green`` (start the new
    version beside the old one on the spare port, gate it there, switch the front proxy)."""
    ports: tuple[int, ...] = ()
    """Blue-green: the two ports the copies alternate between (``{port}`` in the process's
    command and env, and in the model's url); the first serves until the first deploy."""
    spare_port: int | None = None
    """``spare_port`` as written: with the process's ``port``, it makes ``ports``."""
    drain_timeout_s: float = 300.0
    """Blue-green: how long the old copy may keep serving the requests it holds after the
    switch before it is stopped anyway."""
    nginx: NginxSettings | None = None
    """Blue-green through nginx (``[model.deploy.nginx]``)."""
    switch_command: CommandSwitchSettings | None = None
    """Blue-green through a command (``[model.deploy.switch_command]``)."""
    bake_s: float = 300.0
    """How long the new version is watched before it is promoted."""
    min_good_canaries: int = 3
    """``ok`` probe runs in a row the new version needs at the end of its bake."""
    max_bad_canaries: int = 0
    """Probe runs during the bake that may fail (any category but ``ok``) before the deploy
    rolls back; 0: the first failed canary rolls it back."""
    golden: bool = True
    """The new version's canary answers must equal the previous version's, where those were
    deterministic (identical over its last runs)."""
    latency_ratio_max: float = 1.25
    """The bake's p95 latency (e2e, TTFT) at most this times the previous version's p95 ..."""
    latency_min_delta_ms: float = 20.0
    """... unless it is within this many ms of it (1 ms -> 2 ms is noise, not a regression)."""
    throughput_ratio_min: float = 0.8
    """The bake's median tokens/s at least this times the previous version's (LLM protocols)."""
    baseline_runs: int = 50
    """The previous version's stored ``ok`` runs its latency baseline is taken from."""
    require_approval: bool = False
    approver_must_differ: bool = True
    approval_timeout_s: float = 86400.0
    """A deploy not approved within this long fails (nothing was switched)."""

    @property
    def blue_green(self) -> bool:
        """Whether deploys start the new version beside the old one (``blue-green``)."""
        return self.strategy == "blue-green"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One ``[[model]]``: a served model and how to probe it."""

    name: str
    protocol: str
    url: str
    interval_s: float = 10.0
    timeout_s: float = 5.0
    jitter_s: float | None = None
    """Random delay added to each run, spreading probes that share an interval; None means
    10 % of the interval, at most 1 s."""
    process: str | None = None
    down_after_failures: int = 2
    """Consecutive hard failures (refused, timeout, HTTP error, ...) before the model is
    ``down``; a single one makes it ``degraded``, so one lost packet pages nobody."""
    incident_after_degraded_s: float = 300.0
    """How long a model may stay ``degraded`` before an incident is opened."""
    api_key_env: str | None = None
    api_key_file: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    """Resolved from ``api_key_env`` or ``api_key_file`` at load; never printed or served."""
    canary: Mapping[str, Any] = field(default_factory=dict)
    drift: DriftConfig = DriftConfig()
    deploy: DeployConfig | None = None
    """``[model.deploy]``; None when the table is absent (its defaults apply to a deploy's
    gate, but without a ``link`` the model cannot be deployed, only recorded)."""

    @property
    def deploy_process(self) -> str | None:
        """The ``[[process]]`` a deploy restarts: ``[model.deploy] process``, else ``process``."""
        if self.deploy is not None and self.deploy.process is not None:
            return self.deploy.process
        return self.process


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    """One ``[[process]]``: a model server the agent keeps running.

    The target is exactly one of: ``command`` (the agent starts it as its own child),
    ``systemd_unit`` (systemd runs it; the agent restarts it with systemctl), ``pidfile`` or
    ``match`` (someone else started it; the agent adopts it and runs ``remediation`` to bring
    it back).
    """

    name: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    restart: str = "on-failure"
    stop_signal: str = "SIGTERM"
    stop_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 300.0
    backoff_jitter: float = 0.1
    """Each delay is stretched by up to this fraction, at random: hosts that crashed together
    do not all restart in the same instant."""
    backoff_reset_s: float = 600.0
    """Up this long, a process is healthy again: its next restart is immediate."""
    quarantine_after: int = 5
    """Restarts within ``quarantine_window_s`` that quarantine the process; 0 never does."""
    quarantine_window_s: float = 600.0
    startup_timeout_s: float = 60.0
    hang_after_failures: int = 3
    """Hard probe failures in a row, of a model linked to this process, that mean hung; 0 off."""
    depends_on: tuple[str, ...] = ()
    port: int | None = None
    """The port the server listens on: a restart waits for the old process to release it."""
    systemd_unit: str | None = None
    pidfile: Path | None = None
    match: str | None = None
    remediation: tuple[str, ...] = ()
    poll_interval_s: float = 2.0
    """How often a systemd unit's state is read (systemd offers no exit notification to us
    without D-Bus)."""
    log_max_bytes: int = 10 * 1024 * 1024
    log_keep: int = 3

    @property
    def kind(self) -> str:
        """``command``, ``systemd``, ``pidfile`` or ``match``."""
        if self.systemd_unit:
            return "systemd"
        if self.pidfile is not None:
            return "pidfile"
        if self.match is not None:
            return "match"
        return "command"


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated configuration file."""

    path: Path | None
    agent: AgentConfig
    models: tuple[ModelConfig, ...] = ()
    processes: tuple[ProcessConfig, ...] = ()
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    """``[alerting]``, ``[[alert]]``, ``[[notify]]`` and ``[[maintenance]]``."""
    remote_write: RemoteWriteConfig | None = None
    """``[remote_write]``: where stored samples are forwarded; None: nowhere."""
