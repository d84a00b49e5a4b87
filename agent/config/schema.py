"""The config file's schema: one msgspec Struct per table, its fields the file's own keys.

Types, ranges, choices and unknown keys are checked here, declaratively; :mod:`.load` turns a
decoded file into the records of :mod:`.records` (seconds, paths, filled-in defaults) and runs
the checks that span fields or tables (a jitter shorter than its interval, names unique,
dependencies that exist and form no cycle, an API key that can be read). Every float is finite
(:func:`storage.tomlschema.number`) and every duration at most a century
(:data:`storage.tomlschema.MAX_DURATION_S`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from agent.config.switches import DEFAULT_CONFIRM_HEADER
from probes.registry import PROBES
from storage.labels import TABLE_EXPECTED
from storage.text import UNSAFE_IN_NAMES
from storage.tomlschema import Duration, DurationOrZero, number

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_EXPECTED = "1-64 characters of letters, digits, '.', '_' or '-', starting alphanumeric"

Name = Annotated[
    str,
    Meta(pattern=NAME_PATTERN, extra={"expected": "a name", "bound": f"a name of {NAME_EXPECTED}"}),
]
HOST_EXPECTED = (
    "a host name of 1-253 printable characters (no control characters, line breaks or "
    "invisible formatting characters)"
)
HostName = Annotated[
    str,
    # Empty is allowed: it means this machine's name, as leaving the key out does.
    Meta(
        pattern=f"^[^{UNSAFE_IN_NAMES}]{{0,253}}$",
        extra={"expected": "a string", "bound": HOST_EXPECTED},
    ),
]
"""``[agent] host``: free-form (``GPU node 1``), but shown in terminals, HTML and logs, where a
control character would drive the terminal (``a\\u001bb\\nc`` used to be accepted)."""
Label = Annotated[
    str,
    Meta(
        pattern=f"^[^{UNSAFE_IN_NAMES}]{{0,64}}$",
        extra={
            "expected": "a string",
            "bound": "at most 64 printable characters (no control characters or line breaks)",
        },
    ),
]
"""A free-form label shown to people (a route's name)."""
Protocol = Annotated[
    str, Meta(extra={"expected": "one of " + ", ".join(map(repr, sorted(PROBES)))})
]
Strings = Annotated[tuple[str, ...], Meta(min_length=1)]
"""A non-empty argv list."""


MAX_COUNT = 10**15
"""The largest whole number a count takes: far beyond any setting, and far within floats and
SQLite's 64-bit integers (min_good_canaries = 10**400 raised OverflowError in the bake check
of check-config; found by make fuzz, issue 17)."""


def count(low: int, high: int = MAX_COUNT) -> Any:
    """A whole number of ``low`` or more, at most ``high`` (:data:`MAX_COUNT` by default)."""
    most = "10^15" if high == MAX_COUNT else f"{high:,}"
    return Meta(
        ge=low,
        le=high,
        extra={
            "expected": f"a whole number of {low} or more",
            "bound": f"a whole number of {low} or more (at most {most})",
        },
    )


class _Table(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Every table refuses keys it does not know: a typo must not be silently ignored."""


FilePath = Annotated[str, Meta(min_length=1, extra={"expected": "a file path"})]


class TlsTable(_Table, frozen=True):
    """``[agent.tls]``: the API's certificate and key (:mod:`agent.config.tls` loads them)."""

    cert: FilePath
    key: FilePath
    min_version: Literal["1.2", "1.3"] = "1.2"


EVENTS_MINIMUM_S = 180 * 86400.0
"""``[agent] retention_events_minimum``'s default: audit events are kept 180 days or more."""


class AgentTable(_Table, frozen=True):
    """``[agent]``."""

    host: HostName | None = None
    labels: Annotated[dict[str, Any], Meta(extra={"expected": TABLE_EXPECTED})] = {}
    """Values of any type here: :func:`storage.labels.check_labels` (in load) names the label."""
    data_dir: str | None = None
    listen: str | None = None
    tls: TlsTable | None = None
    allow_insecure_listen: bool = False
    sample_interval: Duration = 1.0
    retention: Duration | None = None
    retention_1m: Duration | None = None
    retention_1h: Duration | None = None
    retention_events: Duration | None = None
    retention_events_minimum: DurationOrZero = EVENTS_MINIMUM_S
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    on_exit: Literal["keep", "stop"] = "keep"
    audit_checkpoint_interval: Duration = 300.0
    audit_syslog: str = "/dev/log"
    audit_webhook: str | None = None
    fingerprint_interval: Duration = 600.0


class DriftTable(_Table, frozen=True):
    """``[model.drift]``."""

    enabled: bool = True
    window: Annotated[int, count(3)] = 20
    baseline: Annotated[int, count(3)] = 100
    ratio: Annotated[float, number(ge=1.01)] = 1.5
    min_delta: DurationOrZero = 0.02
    accept_after: Duration = 3600.0
    output_stable_runs: Annotated[int, count(2)] = 5
    output_confirm_runs: Annotated[int, count(1)] = 3


PortNumber = Annotated[int, Meta(ge=1, le=65535, extra={"expected": "a port number 1-65535"})]


class NginxTable(_Table, frozen=True):
    """``[model.deploy.nginx]``: the nginx a blue-green deploy switches the model's traffic in
    (:class:`agent.config.switches.NginxSettings`)."""

    include_dir: str = "/etc/nginx/vigil"
    nginx: str = "nginx"
    conf: str | None = None
    prefix: str | None = None
    extra_args: tuple[str, ...] = ()
    test_argv: Strings | None = None
    reload_argv: Strings | None = None
    dump_argv: Strings | None = None
    pid_file: str | None = None
    confirm_url: str | None = None
    confirm_header: str = DEFAULT_CONFIRM_HEADER
    confirm_streak: Annotated[int, count(1)] = 3
    confirm_timeout: Duration = 10.0
    command_timeout: Duration = 30.0


class SwitchCommandTable(_Table, frozen=True):
    """``[model.deploy.switch_command]``: a command that switches the model's traffic (HAProxy,
    Envoy, Traefik; :class:`agent.config.switches.CommandSwitchSettings`)."""

    argv: Strings
    check_argv: Strings | None = None
    timeout: Duration = 30.0
    confirm_url: str | None = None
    confirm_header: str = DEFAULT_CONFIRM_HEADER
    confirm_streak: Annotated[int, count(1)] = 3
    confirm_timeout: Duration = 10.0


class DeployTable(_Table, frozen=True):
    """``[model.deploy]``: how ``vigil deploy`` switches, gates and rolls back the model."""

    link: str | None = None
    process: str | None = None
    strategy: Literal["in-place", "blue-green"] = "in-place"
    ports: (
        Annotated[
            tuple[PortNumber, ...],
            Meta(
                min_length=2,
                max_length=2,
                extra={
                    "expected": "a list of two port numbers",
                    "bound": "two port numbers [A, B], the ports the copies alternate between",
                },
            ),
        ]
        | None
    ) = None
    spare_port: PortNumber | None = None
    drain_timeout: Duration = 300.0
    nginx: NginxTable | None = None
    switch_command: SwitchCommandTable | None = None
    bake: Duration = 300.0
    min_good_canaries: Annotated[int, count(1)] = 3
    max_bad_canaries: Annotated[int, count(0)] = 0
    golden: bool = True
    latency_ratio_max: Annotated[float, number(ge=1.0)] = 1.25
    latency_min_delta: DurationOrZero = 0.02
    throughput_ratio_min: Annotated[float, number(gt=0.0, le=1.0)] = 0.8
    baseline_runs: Annotated[int, count(3)] = 50
    require_approval: bool = False
    approver_must_differ: bool = True
    approval_timeout: Duration = 86400.0


class ModelTable(_Table, frozen=True):
    """``[[model]]``; ``canary`` is checked by the protocol's probe (``check_options``)."""

    name: Name
    protocol: Protocol
    url: str
    interval: Duration = 10.0
    timeout: Duration = 5.0
    jitter: DurationOrZero | None = None
    process: str | None = None
    down_after_failures: Annotated[int, count(1)] = 2
    incident_after_degraded: Duration = 300.0
    api_key_env: str | None = None
    api_key_file: str | None = None
    canary: dict[str, Any] = {}
    drift: DriftTable = DriftTable()
    deploy: DeployTable | None = None


class ProcessTable(_Table, frozen=True):
    """``[[process]]``; exactly one of ``command``, ``systemd_unit``, ``pidfile``, ``match``."""

    name: Name
    command: Strings | None = None
    env: dict[str, str] = {}
    cwd: str | None = None
    user: str | None = None
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    stop_signal: str = "SIGTERM"
    stop_timeout: Duration = 10.0
    backoff_initial: DurationOrZero = 1.0
    backoff_factor: Annotated[float, number(ge=1.0)] = 2.0
    backoff_max: Duration = 300.0
    backoff_jitter: Annotated[float, number(ge=0.0, le=1.0)] = 0.1
    backoff_reset: DurationOrZero = 600.0
    quarantine_after: Annotated[int, count(0)] = 5
    quarantine_window: Duration = 600.0
    startup_timeout: Duration = 60.0
    hang_after_failures: Annotated[int, count(0)] = 3
    depends_on: tuple[str, ...] = ()
    port: PortNumber | None = None
    systemd_unit: str | None = None
    pidfile: str | None = None
    match: str | None = None
    remediation: Strings | None = None
    poll_interval: Duration = 2.0
    log_max_bytes: Annotated[int, count(4096)] = 10 * 1024 * 1024
    log_keep: Annotated[int, count(0)] = 3
