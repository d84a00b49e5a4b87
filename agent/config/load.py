"""Loading a config file: TOML, then the schema, then the checks that span fields and tables.

A bad file is refused as a whole with a :class:`ConfigError` that names the file, the line (when
it can be found) and the field, and says what was expected. Nothing here has side effects, so
the daemon can validate a changed file and keep its running config if the new one is refused.
"""

from __future__ import annotations

import pwd
import signal
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config.alerting.build import build_alerting
from agent.config.bluegreen import (
    check_blue_green,
    check_blue_green_ports,
    command_settings,
    nginx_settings,
)
from agent.config.errors import ConfigError
from agent.config.records import (
    DEFAULT_PORT,
    FILE_PROTOCOLS,
    TARGET_KEYS,
    AgentConfig,
    Config,
    DeployConfig,
    DriftConfig,
    ModelConfig,
    ProcessConfig,
    default_data_dir,
)
from agent.config.remotewrite import build_remote_write
from agent.config.schema import AgentTable, DeployTable, ModelTable, ProcessTable
from agent.config.secrets import read_secret
from agent.config.tls import check_tls, is_loopback
from probes.base import OptionError
from probes.registry import PROBES
from storage.labels import LabelError, check_labels
from storage.text import compile_regex
from storage.tomlschema import Invalid, Locator, Part, decode, expand_home, syntax_line
from storage.units import format_duration

_TOP_LEVEL = (
    "agent",
    "model",
    "process",
    "alerting",
    "alert",
    "notify",
    "maintenance",
    "remote_write",
)


def load_config(path: Path | str) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or not a valid config.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not UTF-8 text ({exc.reason})") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path | str = "<config>") -> Config:
    """Validate config text; ``path`` is used in error messages only."""
    path = Path(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}", line=syntax_line(exc)) from None
    locator = Locator(text, path)
    try:
        return _build(raw, path)
    except _Shape as exc:
        raise locator.error(exc, ConfigError, line=False) from None
    except Invalid as exc:
        raise locator.error(exc, ConfigError) from None


def _no_nul(value: Any, at: tuple[Part, ...]) -> None:
    """Refuse a NUL character in any key or string: no setting means one, and in a path, an
    argv, an environment variable or a user name it passed the checks and failed later, as
    a ValueError (``embedded null byte``) from the OS call that used it."""
    if isinstance(value, str) and "\x00" in value:
        raise Invalid(at, "expected text without NUL characters (\\u0000)")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise Invalid((*at, key), "expected a key without NUL characters (\\u0000)")
            _no_nul(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_nul(item, (*at, i))


class _Shape(Invalid):
    """A top-level key of the wrong kind: TOML's own syntax, whose line we do not guess."""


def _build(raw: dict[str, Any], path: Path) -> Config:
    for key in raw:
        if key not in _TOP_LEVEL:
            raise Invalid(
                (key,),
                "unknown top-level key; expected [agent], [[model]] or [[process]] (or, for "
                "alerting, [alerting], [[alert]], [[notify]] or [[maintenance]]; [remote_write] "
                "to forward samples)",
            )
    agent_raw = raw.get("agent", {})
    if not isinstance(agent_raw, dict):
        raise _Shape(("agent",), "expected a table [agent]")
    agent = _agent(decode(agent_raw, AgentTable, ("agent",)))
    processes = tuple(
        _process(table, i) for i, table in enumerate(_array_of_tables(raw, "process"))
    )
    models = tuple(_model(table, i) for i, table in enumerate(_array_of_tables(raw, "model")))
    _unique([p.name for p in processes], "process")
    _check_dependencies(processes)
    _unique([m.name for m in models], "model")
    names = {p.name for p in processes}
    checked = []
    for i, m in enumerate(models):
        if m.process is not None and m.process not in names:
            raise Invalid(
                ("model", i, "process"),
                f"names process {m.process!r}, but no [[process]] has that "
                f"name; expected one of: {', '.join(sorted(names)) or 'none'}",
            )
        _check_deploy(m, i, {p.name: p for p in processes})
        checked.append(check_blue_green(m, i, {p.name: p for p in processes}))
    models = tuple(checked)
    check_blue_green_ports(models, processes, agent)
    knobs = raw.get("alerting", {})
    if not isinstance(knobs, dict):
        raise _Shape(("alerting",), "expected a table [alerting]")
    alerting = build_alerting(
        knobs,
        _array_of_tables(raw, "alert"),
        _array_of_tables(raw, "notify"),
        _array_of_tables(raw, "maintenance"),
    )
    forward = raw.get("remote_write")
    if forward is not None and not isinstance(forward, dict):
        raise _Shape(("remote_write",), "expected a table [remote_write]")
    remote_write = build_remote_write(forward)
    # Last, so a field with its own rule (a host name's characters) is refused in its words.
    _no_nul(raw, ())
    return Config(
        path=path,
        agent=agent,
        models=models,
        processes=processes,
        alerting=alerting,
        remote_write=remote_write,
    )


def _array_of_tables(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _Shape((key,), f"expected an array of tables [[{key}]]")
    return value


def _home(value: str | None, at: tuple[Part, ...]) -> Path | None:
    """A path field with ``~`` expanded; None when not given; a ``~user`` of no user refused."""
    if not value:
        return None
    try:
        return expand_home(value)
    except ValueError as exc:
        raise Invalid(at, str(exc)) from None


def _unique(names: list[str], table: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise Invalid(
                (table, i, "name"),
                f"duplicate name {name!r} (also {table}[{seen[name]}]); "
                f"expected every {table} to have its own name",
            )
        seen[name] = i


def _agent(t: AgentTable) -> AgentConfig:
    def fail(key: str, reason: str) -> Invalid:
        return Invalid(("agent", key), reason)

    listen = t.listen if t.listen is not None else f"127.0.0.1:{DEFAULT_PORT}"
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise fail(
            "listen", f"expected 'HOST:PORT' (port 0-65535, 0 picks a free one), got {listen!r}"
        )
    tls = check_tls(t.tls) if t.tls is not None else None
    if tls is None and not t.allow_insecure_listen and not is_loopback(host):
        raise fail(
            "listen",
            f"{listen!r} is reachable from other hosts, and plain HTTP would carry the API's "
            "tokens in clear text; expected an [agent.tls] table (cert and key), a loopback "
            f"address such as '127.0.0.1:{port}', or allow_insecure_listen = true (plain HTTP "
            "behind your own TLS proxy or on a network you trust)",
        )
    # Unset rollup horizons stretch to cover a longer raw horizon rather than refuse it.
    raw_s = t.retention if t.retention is not None else 2 * 86400.0
    m1_s = t.retention_1m if t.retention_1m is not None else max(30 * 86400.0, raw_s)
    h1_s = t.retention_1h if t.retention_1h is not None else max(2 * 365 * 86400.0, m1_s)
    if t.sample_interval < 0.1:
        raise fail("sample_interval", "expected at least 100ms")
    if t.fingerprint_interval < 1:
        raise fail("fingerprint_interval", "expected at least 1s")
    # Rollups are rebuilt from finer data and charts fall back to coarser tiers: a coarser tier
    # kept for less time than a finer one would leave holes.
    if m1_s < raw_s:
        raise fail("retention_1m", "expected at least as long as retention (raw samples)")
    if h1_s < m1_s:
        raise fail("retention_1h", "expected at least as long as retention_1m")
    _check_events_minimum(t)
    _audit_checks(t, fail)
    try:
        labels = check_labels(t.labels)
    except LabelError as exc:
        at: tuple[Part, ...] = ("labels",) if exc.name is None else ("labels", exc.name)
        raise Invalid(("agent", *at), exc.reason) from None
    return AgentConfig(
        host=t.host or socket.gethostname(),
        data_dir=_home(t.data_dir, ("agent", "data_dir")) or default_data_dir(),
        labels=labels,
        listen_host=host,
        listen_port=int(port),
        tls=tls,
        allow_insecure_listen=t.allow_insecure_listen,
        sample_interval_s=t.sample_interval,
        retention_s=raw_s,
        retention_1m_s=m1_s,
        retention_1h_s=h1_s,
        retention_events_s=t.retention_events,
        log_level=t.log_level,
        on_exit=t.on_exit,
        audit_checkpoint_interval_s=t.audit_checkpoint_interval,
        audit_syslog=t.audit_syslog,
        audit_webhook=t.audit_webhook,
        fingerprint_interval_s=t.fingerprint_interval,
    )


def _audit_checks(t: AgentTable, fail: Callable[[str, str], Invalid]) -> None:
    # A checkpoint a second would flood the journal; one an hour leaves an hour to cut off.
    if t.audit_checkpoint_interval < 10:
        raise fail("audit_checkpoint_interval", "expected at least 10s")
    if t.audit_syslog and not t.audit_syslog.startswith("/"):
        raise fail("audit_syslog", "expected the absolute path of a syslog socket, or '' for none")
    if t.audit_webhook is not None and not t.audit_webhook.startswith(("http://", "https://")):
        # Never the URL itself in the error: it may hold a token.
        raise fail("audit_webhook", "expected an http:// or https:// URL")


def _check_events_minimum(t: AgentTable) -> None:
    """Audit events are evidence (change reviews, AI Act logging): a short horizon set by a
    slip would delete them for good, so one below the floor is refused, naming both."""
    floor_s = t.retention_events_minimum
    if t.retention_events is not None and t.retention_events < floor_s:
        kept, floor = format_duration(t.retention_events), format_duration(floor_s)
        raise Invalid(
            ("agent", "retention_events"),
            f"{kept} is below the minimum of {floor} (retention_events_minimum); expected at "
            f"least {floor}, or a lower retention_events_minimum",
        )


def _model(raw: dict[str, Any], i: int) -> ModelConfig:
    t = decode(raw, ModelTable, ("model", i))

    def fail(key: str, reason: str) -> Invalid:
        return Invalid(("model", i, key), reason)

    if t.protocol not in PROBES:
        raise fail(
            "protocol",
            f"expected one of {', '.join(map(repr, sorted(PROBES)))}, got {t.protocol!r}",
        )
    if t.protocol == "tcp":
        if not t.url.startswith("tcp://"):
            raise fail("url", f"expected 'tcp://HOST:PORT' for protocol tcp, got {t.url!r}")
    elif t.protocol in FILE_PROTOCOLS:
        if not t.url.startswith("file:///"):
            raise fail(
                "url", f"expected 'file:///ABSOLUTE/PATH' for protocol {t.protocol}, got {t.url!r}"
            )
    elif not t.url.startswith(("http://", "https://")):
        raise fail("url", f"expected an http:// or https:// URL, got {t.url!r}")
    try:
        PROBES[t.protocol].check_options(t.canary)
    except OptionError as exc:
        raise Invalid(("model", i, "canary", exc.field), str(exc)) from None
    if t.jitter is not None and t.jitter >= t.interval:
        # Each run is jittered within its own interval; a longer jitter would let two runs
        # land in one interval and none in the next.
        raise fail("jitter", f"expected a duration shorter than the interval ({t.interval}s)")
    d = t.drift
    return ModelConfig(
        name=t.name,
        protocol=t.protocol,
        url=t.url,
        interval_s=t.interval,
        timeout_s=t.timeout,
        jitter_s=t.jitter,
        process=t.process,
        down_after_failures=t.down_after_failures,
        incident_after_degraded_s=t.incident_after_degraded,
        api_key_env=t.api_key_env,
        api_key_file=_home(t.api_key_file, ("model", i, "api_key_file")),
        api_key=_api_key(t, i),
        canary=t.canary,
        drift=DriftConfig(
            enabled=d.enabled,
            window=d.window,
            baseline=d.baseline,
            ratio=d.ratio,
            min_delta_ms=d.min_delta * 1000,
            accept_after_s=d.accept_after,
            output_stable_runs=d.output_stable_runs,
            output_confirm_runs=d.output_confirm_runs,
        ),
        deploy=_deploy(t.deploy, i) if t.deploy is not None else None,
    )


def _deploy(t: DeployTable, i: int) -> DeployConfig:
    return DeployConfig(
        link=_home(t.link, ("model", i, "deploy", "link")),
        process=t.process,
        strategy=t.strategy,
        ports=tuple(t.ports or ()),
        spare_port=t.spare_port,
        drain_timeout_s=t.drain_timeout,
        nginx=nginx_settings(t.nginx) if t.nginx is not None else None,
        switch_command=command_settings(t.switch_command) if t.switch_command else None,
        bake_s=t.bake,
        min_good_canaries=t.min_good_canaries,
        max_bad_canaries=t.max_bad_canaries,
        golden=t.golden,
        latency_ratio_max=float(t.latency_ratio_max),
        latency_min_delta_ms=t.latency_min_delta * 1000,
        throughput_ratio_min=float(t.throughput_ratio_min),
        baseline_runs=t.baseline_runs,
        require_approval=t.require_approval,
        approver_must_differ=t.approver_must_differ,
        approval_timeout_s=t.approval_timeout,
    )


def _check_deploy(m: ModelConfig, i: int, processes: dict[str, ProcessConfig]) -> None:
    """``[model.deploy]`` names a symlink by absolute path and a ``command`` process the
    agent starts itself (a deploy restarts it), and bakes long enough for its canaries."""
    d = m.deploy
    if d is None:
        return

    def fail(key: str, reason: str) -> Invalid:
        return Invalid(("model", i, "deploy", key), reason)

    if d.link is not None and not d.link.is_absolute():
        raise fail("link", f"expected an absolute path (the symlink to switch), got '{d.link}'")
    proc = m.deploy_process
    if d.process is not None and d.process not in processes:
        raise fail(
            "process",
            f"names process {d.process!r}, but no [[process]] has that name; expected one of: "
            f"{', '.join(sorted(processes)) or 'none'}",
        )
    if d.link is not None and proc is None:
        raise fail(
            "process",
            "a deploy restarts the model's server: expected the [[process]] serving it "
            "(here, or process in the [[model]])",
        )
    if proc is not None and d.link is not None and processes[proc].kind != "command":
        raise fail(
            "process",
            f"process {proc!r} is a {processes[proc].kind} target; a deploy restarts a "
            "process the agent starts itself: expected one with a command",
        )
    least = d.min_good_canaries * m.interval_s
    if d.bake_s < least:
        raise fail(
            "bake",
            f"expected at least min_good_canaries x interval ({least:g}s) to see that many "
            f"canaries, got {d.bake_s:g}s",
        )


def _api_key(t: ModelTable, i: int) -> str | None:
    """Read the model's API key now, so a missing secret refuses the config up front."""
    return read_secret(t.api_key_env, t.api_key_file, ("model", i), "api_key", "the API key")


def _process(raw: dict[str, Any], i: int) -> ProcessConfig:
    def fail(key: str, reason: str) -> Invalid:
        return Invalid(("process", i, key), reason)

    # The two mistakes a newcomer makes first get their own words, before the schema's.
    if isinstance(raw.get("command"), str):
        raise fail(
            "command",
            'expected an argv list such as ["python", "-m", '
            '"server"]; a shell string is not accepted',
        )
    t = decode(raw, ProcessTable, ("process", i))
    _check_target(raw, fail)
    # Only real signals: SIG_DFL, SIG_IGN and SIG_BLOCK are attributes of the module too.
    if not isinstance(getattr(signal, t.stop_signal, None), signal.Signals):
        raise fail(
            "stop_signal",
            f"expected a signal name such as 'SIGTERM' or 'SIGINT', got {t.stop_signal!r}",
        )
    if t.user is not None:
        try:
            pwd.getpwnam(t.user)
        except (KeyError, ValueError):  # ValueError: a NUL in the name
            raise fail(
                "user", f"expected a user that exists on this host, got {t.user!r}"
            ) from None
    if t.match is not None:
        try:
            compile_regex(t.match)
        except ValueError as exc:
            raise fail("match", f"expected a regular expression: {exc}") from None
    cfg = ProcessConfig(
        name=t.name,
        command=t.command or (),
        env=dict(t.env),
        cwd=_home(t.cwd, ("process", i, "cwd")),
        user=t.user,
        restart=t.restart,
        stop_signal=t.stop_signal,
        stop_timeout_s=t.stop_timeout,
        backoff_initial_s=t.backoff_initial,
        backoff_factor=float(t.backoff_factor),
        backoff_max_s=t.backoff_max,
        backoff_jitter=float(t.backoff_jitter),
        backoff_reset_s=t.backoff_reset,
        quarantine_after=t.quarantine_after,
        quarantine_window_s=t.quarantine_window,
        startup_timeout_s=t.startup_timeout,
        hang_after_failures=t.hang_after_failures,
        depends_on=t.depends_on,
        port=t.port,
        systemd_unit=t.systemd_unit,
        pidfile=Path(t.pidfile) if t.pidfile else None,
        match=t.match,
        remediation=t.remediation or (),
        poll_interval_s=t.poll_interval,
        log_max_bytes=t.log_max_bytes,
        log_keep=t.log_keep,
    )
    if cfg.pidfile is not None and not cfg.pidfile.is_absolute():
        raise fail("pidfile", f"expected an absolute path, got {t.pidfile!r}")
    if cfg.backoff_initial_s > cfg.backoff_max_s:
        raise fail("backoff_initial", "expected a delay no longer than backoff_max")
    if cfg.kind in ("pidfile", "match") and cfg.restart != "never" and not cfg.remediation:
        raise fail(
            "remediation",
            f"a process found by {cfg.kind} is not ours to start: expected a remediation "
            'command (an argv list) to bring it back, or restart = "never"',
        )
    if t.name in cfg.depends_on:
        raise fail("depends_on", "a process cannot depend on itself")
    return cfg


def _check_target(raw: dict[str, Any], fail: Any) -> None:
    given = [k for k in TARGET_KEYS if k in raw]
    if not given:
        raise fail(
            "command",
            "missing required field; expected a list of strings (the argv to run), "
            "or systemd_unit, pidfile or match for a process the agent does not start",
        )
    if len(given) > 1:
        raise fail(
            given[1],
            f"expected exactly one of command, systemd_unit, pidfile or match; "
            f"got {', '.join(given)}",
        )


def _check_dependencies(processes: tuple[ProcessConfig, ...]) -> None:
    names = {p.name: i for i, p in enumerate(processes)}
    for i, p in enumerate(processes):
        for dep in p.depends_on:
            if dep not in names:
                raise Invalid(
                    ("process", i, "depends_on"),
                    f"names process {dep!r}, but no [[process]] has that name; "
                    f"expected one of: {', '.join(sorted(names))}",
                )
    # A cycle would leave every process in it blocked forever: refuse it up front.
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            raise Invalid(
                ("process", names[name], "depends_on"),
                f"dependency cycle {' -> '.join(cycle)}; expected depends_on to form no loop",
            )
        state[name] = 1
        for dep in processes[names[name]].depends_on:
            visit(dep, [*trail, name])
        state[name] = 2

    for p in processes:
        visit(p.name, [])
