"""The agent's TOML configuration, validated into typed, frozen objects.

A bad file is refused as a whole with a :class:`ConfigError` that names the file, the line (when
it can be found) and the field, and says what was expected. Nothing here has side effects, so
the daemon can validate a changed file and keep its running config if the new one is refused.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from probes.base import OptionError
from probes.registry import PROBES
from storage.units import EXPECTED as DURATION_EXPECTED
from storage.units import parse_duration

DEFAULT_CONFIG_PATH = Path("/etc/vigil/vigil.toml")
DEFAULT_PORT = 8470
RESTART_POLICIES = ("always", "on-failure", "never")
ON_EXIT = ("keep", "stop")
TARGET_KEYS = ("command", "systemd_unit", "pidfile", "match")
FILE_PROTOCOLS = frozenset({"onnx"})
"""Protocols whose model is a local file (``url = "file:///models/m.onnx"``)."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NAME_EXPECTED = "1-64 characters of letters, digits, '.', '_' or '-', starting alphanumeric"


def default_data_dir() -> Path:
    """Where the agent keeps its database and token when the config does not say.

    Root gets the FHS state directory; anyone else their XDG state directory, so a developer
    can run the agent without privileges.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/vigil")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "vigil"


class ConfigError(Exception):
    """A configuration file was refused.

    Attributes:
        path: the file.
        field: dotted path of the offending field (``model[1].interval``), or None.
        line: 1-based line in the file, when it could be located.
        reason: what was wrong and what was expected.
    """

    def __init__(
        self, path: Path | str, reason: str, *, field: str | None = None, line: int | None = None
    ) -> None:
        self.path = Path(path)
        self.field = field
        self.line = line
        self.reason = reason
        where = str(self.path) + (f":{line}" if line else "")
        what = f"{field}: " if field else ""
        super().__init__(f"{where}: {what}{reason}")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The ``[agent]`` table."""

    host: str
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
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


class _Locator:
    """Finds the line of a field in the TOML text, for error messages.

    tomllib reports lines only for syntax errors, so for semantic errors we scan the text for
    the table header and then the key. Best effort: when not found, the error has no line.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def find(self, table: str, index: int | None, key: str | None) -> int | None:
        start = self._table_start(table, index)
        if start is None:
            return None
        if key is None:
            return start + 1
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        sub_re = re.compile(rf"^\s*\[\s*{re.escape(table)}\.{re.escape(key)}\s*\]")
        for i in range(start + 1, len(self.lines)):
            line = self.lines[i]
            m = self._HEADER.match(line)
            if m and not m.group(2).startswith(table + "."):
                break
            if key_re.match(line) or sub_re.match(line):
                return i + 1
        return start + 1

    def find_nested(self, table: str, index: int | None, sub: str, key: str) -> int | None:
        """Line of ``key`` inside ``[table.sub]`` (or an inline ``sub = {...}``) of one table."""
        start = self._table_start(table, index)
        if start is None:
            return None
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        inside = False
        for i in range(start + 1, len(self.lines)):
            line = self.lines[i]
            m = self._HEADER.match(line)
            if m:
                if m.group(2) == f"{table}.{sub}":
                    inside = True
                    continue
                if not m.group(2).startswith(table + "."):
                    break
                inside = False
            if inside and key_re.match(line):
                return i + 1
        return self.find(table, index, sub)

    def _table_start(self, table: str, index: int | None) -> int | None:
        seen = -1
        for i, line in enumerate(self.lines):
            m = self._HEADER.match(line)
            if not m or m.group(2) != table:
                continue
            if index is None:
                return i
            seen += 1
            if seen == index:
                return i
        return None


class _Required:
    pass


_REQUIRED: Any = _Required()


class _Table:
    """Typed reads from one TOML table, with errors that name the field and the line."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: Path,
        locator: _Locator,
        table: str,
        index: int | None = None,
    ) -> None:
        self.data = data
        self.path = path
        self.locator = locator
        self.table = table
        self.index = index
        self.used: set[str] = set()

    def where(self, key: str | None = None) -> str:
        base = self.table if self.index is None else f"{self.table}[{self.index}]"
        return f"{base}.{key}" if key else base

    def error(self, key: str | None, reason: str) -> ConfigError:
        return ConfigError(
            self.path,
            reason,
            field=self.where(key),
            line=self.locator.find(self.table, self.index, key),
        )

    def _get(self, key: str, expected: type | tuple[type, ...], what: str, default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.error(key, f"missing required field; expected {what}")
            return default
        value = self.data[key]
        # bool is an int in Python; a TOML `true` where a number is expected is a mistake.
        if isinstance(value, bool) and bool not in _as_tuple(expected):
            raise self.error(key, f"expected {what}, got a boolean")
        if not isinstance(value, expected):
            raise self.error(key, f"expected {what}, got {_toml_type(value)} {value!r}")
        return value

    def string(self, key: str, default: Any = None, *, choices: tuple[str, ...] = ()) -> Any:
        what = "one of " + ", ".join(repr(c) for c in choices) if choices else "a string"
        value = self._get(key, str, what, default)
        if choices and value is not None and value not in choices:
            raise self.error(key, f"expected {what}, got {value!r}")
        return value

    def name(self, key: str) -> str:
        value: str = self._get(key, str, "a name", _REQUIRED)
        if not _NAME_RE.match(value):
            raise self.error(key, f"expected a name of {_NAME_EXPECTED}, got {value!r}")
        return value

    def duration(self, key: str, default: Any, *, positive: bool = True) -> Any:
        value = self._get(key, str, DURATION_EXPECTED, default)
        if value is None or isinstance(value, float):
            return value
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if positive and seconds <= 0:
            raise self.error(key, f"expected a positive duration, got {value!r}")
        return seconds

    def strings(self, key: str, default: Any = _REQUIRED, *, non_empty: bool = True) -> Any:
        value = self._get(key, list, "a list of strings", default)
        if value is None or value is default:
            return value
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(
                    key, f"expected a list of strings; item {i} is {_toml_type(item)} {item!r}"
                )
        if non_empty and not value:
            raise self.error(key, "expected a non-empty list of strings")
        return tuple(value)

    def str_table(self, key: str) -> dict[str, str]:
        value = self._get(key, dict, "a table of strings", {})
        for k, v in value.items():
            if not isinstance(v, str):
                raise self.error(
                    key, f"expected a table of strings; {k!r} is {_toml_type(v)} {v!r}"
                )
        return dict(value)

    def subtable(self, key: str) -> dict[str, Any]:
        return dict(self._get(key, dict, "a table", {}))

    def finish(self) -> None:
        """Refuse keys nobody read: a typo must not be silently ignored."""
        for key in self.data:
            if key not in self.used:
                known = ", ".join(sorted(self.used))
                raise self.error(key, f"unknown key; expected one of: {known}")


class _SubTable(_Table):
    """A table inside one of the file's tables (``[model.drift]``): its errors name the
    nested field (``model[1].drift.ratio``) and its line."""

    def __init__(self, parent: _Table, key: str) -> None:
        super().__init__(
            parent.subtable(key), parent.path, parent.locator, parent.table, parent.index
        )
        self.key = key

    def where(self, key: str | None = None) -> str:
        base = super().where(self.key)
        return f"{base}.{key}" if key else base

    def error(self, key: str | None, reason: str) -> ConfigError:
        line = (
            self.locator.find_nested(self.table, self.index, self.key, key)
            if key
            else self.locator.find(self.table, self.index, self.key)
        )
        return ConfigError(self.path, reason, field=self.where(key), line=line)


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _toml_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


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
        line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
        raise ConfigError(path, f"not valid TOML: {exc}", line=line) from None
    locator = _Locator(text)

    for key in raw:
        if key not in ("agent", "model", "process"):
            raise ConfigError(
                path,
                "unknown top-level key; expected [agent], [[model]] or [[process]]",
                field=key,
                line=locator.find(key, None, None) or _first_line_with(text, key),
            )
    agent_raw = raw.get("agent", {})
    if not isinstance(agent_raw, dict):
        raise ConfigError(path, "expected a table [agent]", field="agent")
    agent = _agent(_Table(agent_raw, path, locator, "agent"))
    processes = tuple(_process(t) for t in _array_of_tables(raw, "process", path, locator))
    models = tuple(_model(t) for t in _array_of_tables(raw, "model", path, locator))

    _unique([p.name for p in processes], "process", path, locator)
    _check_dependencies(processes, path, locator)
    _unique([m.name for m in models], "model", path, locator)
    names = {p.name for p in processes}
    for i, m in enumerate(models):
        if m.process is not None and m.process not in names:
            raise ConfigError(
                path,
                f"names process {m.process!r}, but no [[process]] has that "
                f"name; expected one of: {', '.join(sorted(names)) or 'none'}",
                field=f"model[{i}].process",
                line=locator.find("model", i, "process"),
            )
    return Config(path=path, agent=agent, models=models, processes=processes)


def _array_of_tables(
    raw: Mapping[str, Any], key: str, path: Path, locator: _Locator
) -> list[_Table]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(
            path,
            f"expected an array of tables [[{key}]]",
            field=key,
            line=locator.find(key, None, None),
        )
    return [_Table(v, path, locator, key, i) for i, v in enumerate(value)]


def _unique(names: list[str], table: str, path: Path, locator: _Locator) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(
                path,
                f"duplicate name {name!r} (also {table}[{seen[name]}]); "
                f"expected every {table} to have its own name",
                field=f"{table}[{i}].name",
                line=locator.find(table, i, "name"),
            )
        seen[name] = i


def _agent(t: _Table) -> AgentConfig:
    host = t.string("host", None) or socket.gethostname()
    data_dir = t.string("data_dir", None)
    listen = t.string("listen", f"127.0.0.1:{DEFAULT_PORT}")
    listen_host, listen_port = _parse_listen(t, listen)
    # Unset rollup horizons stretch to cover a longer raw horizon rather than refuse it.
    raw_s = t.duration("retention", 2 * 86400.0)
    m1_s = t.duration("retention_1m", max(30 * 86400.0, raw_s))
    h1_s = t.duration("retention_1h", max(2 * 365 * 86400.0, m1_s))
    cfg = AgentConfig(
        host=host,
        data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(),
        listen_host=listen_host,
        listen_port=listen_port,
        sample_interval_s=t.duration("sample_interval", 1.0),
        retention_s=raw_s,
        retention_1m_s=m1_s,
        retention_1h_s=h1_s,
        retention_events_s=t.duration("retention_events", None),
        log_level=t.string("log_level", "info", choices=("debug", "info", "warning", "error")),
        on_exit=t.string("on_exit", "keep", choices=ON_EXIT),
    )
    if cfg.sample_interval_s < 0.1:
        raise t.error("sample_interval", "expected at least 100ms")
    # Rollups are rebuilt from finer data and charts fall back to coarser tiers: a coarser tier
    # kept for less time than a finer one would leave holes.
    if cfg.retention_1m_s < cfg.retention_s:
        raise t.error("retention_1m", "expected at least as long as retention (raw samples)")
    if cfg.retention_1h_s < cfg.retention_1m_s:
        raise t.error("retention_1h", "expected at least as long as retention_1m")
    t.finish()
    return cfg


def _parse_listen(t: _Table, listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise t.error(
            "listen", f"expected 'HOST:PORT' (port 0-65535, 0 picks a free one), got {listen!r}"
        )
    return host, int(port)


def _model(t: _Table) -> ModelConfig:
    name = t.name("name")
    protocol = t.string("protocol", _REQUIRED, choices=tuple(sorted(PROBES)))
    url = t.string("url", _REQUIRED)
    if protocol == "tcp":
        if not url.startswith("tcp://"):
            raise t.error("url", f"expected 'tcp://HOST:PORT' for protocol tcp, got {url!r}")
    elif protocol in FILE_PROTOCOLS:
        if not url.startswith("file:///"):
            raise t.error(
                "url", f"expected 'file:///ABSOLUTE/PATH' for protocol {protocol}, got {url!r}"
            )
    elif not url.startswith(("http://", "https://")):
        raise t.error("url", f"expected an http:// or https:// URL, got {url!r}")
    canary = t.subtable("canary")
    try:
        PROBES[protocol].check_options(canary)
    except OptionError as exc:
        raise ConfigError(
            t.path,
            str(exc),
            field=f"{t.where('canary')}.{exc.field}",
            line=t.locator.find_nested("model", t.index, "canary", exc.field),
        ) from None
    interval_s = t.duration("interval", 10.0)
    cfg = ModelConfig(
        name=name,
        protocol=protocol,
        url=url,
        interval_s=interval_s,
        timeout_s=t.duration("timeout", 5.0),
        jitter_s=_jitter(t, interval_s),
        process=t.string("process", None),
        down_after_failures=_positive_int(t, "down_after_failures", 2),
        incident_after_degraded_s=t.duration("incident_after_degraded", 300.0),
        api_key_env=t.string("api_key_env", None),
        api_key_file=_opt_path(t.string("api_key_file", None)),
        canary=canary,
        drift=_drift(_SubTable(t, "drift")),
    )
    cfg = replace(cfg, api_key=_api_key(t, cfg))
    t.finish()
    return cfg


def _drift(t: _Table) -> DriftConfig:
    d = DriftConfig()
    cfg = DriftConfig(
        enabled=t._get("enabled", bool, "true or false", d.enabled),
        window=_count(t, "window", d.window, low=3),
        baseline=_count(t, "baseline", d.baseline, low=3),
        ratio=_number(t, "ratio", d.ratio, low=1.01),
        min_delta_ms=_non_negative(t, "min_delta", d.min_delta_ms / 1000) * 1000,
        accept_after_s=t.duration("accept_after", d.accept_after_s),
        output_stable_runs=_count(t, "output_stable_runs", d.output_stable_runs, low=2),
        output_confirm_runs=_count(t, "output_confirm_runs", d.output_confirm_runs, low=1),
    )
    t.finish()
    return cfg


def _positive_int(t: _Table, key: str, default: int) -> int:
    value = t._get(key, int, "a whole number of 1 or more", default)
    if value < 1:
        raise t.error(key, f"expected a whole number of 1 or more, got {value!r}")
    return int(value)


def _opt_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _api_key(t: _Table, cfg: ModelConfig) -> str | None:
    """Read the model's API key now, so a missing secret refuses the config up front."""
    if cfg.api_key_env and cfg.api_key_file:
        raise t.error("api_key_file", "expected api_key_env or api_key_file, not both")
    if cfg.api_key_env:
        # Stripped before the check: a variable holding only whitespace holds no key.
        value = os.environ.get(cfg.api_key_env, "").strip()
        if not value:
            raise t.error(
                "api_key_env",
                f"the environment variable {cfg.api_key_env} is unset or empty "
                "(expected it to hold the API key)",
            )
        return value
    if cfg.api_key_file:
        try:
            value = cfg.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise t.error(
                "api_key_file", f"cannot read {cfg.api_key_file}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            # A ConfigError like any other: a reload catches only those.
            raise t.error(
                "api_key_file", f"{cfg.api_key_file} is not UTF-8 text (expected the API key)"
            ) from None
        if not value:
            raise t.error("api_key_file", f"{cfg.api_key_file} is empty (expected the API key)")
        return value
    return None


def _jitter(t: _Table, interval_s: float) -> float | None:
    value = t.duration("jitter", None, positive=False)
    if value is not None and value < 0:
        raise t.error("jitter", "expected a duration of 0s or more")
    if value is not None and value >= interval_s:
        # Each run is jittered within its own interval; a longer jitter would let two runs
        # land in one interval and none in the next.
        raise t.error("jitter", f"expected a duration shorter than the interval ({interval_s}s)")
    return value


def _process(t: _Table) -> ProcessConfig:
    name = t.name("name")
    if "command" in t.data and isinstance(t.data["command"], str):
        t.used.add("command")
        raise t.error(
            "command",
            'expected an argv list such as ["python", "-m", '
            '"server"]; a shell string is not accepted',
        )
    given = [k for k in TARGET_KEYS if k in t.data]
    if not given:
        raise t.error(
            "command",
            "missing required field; expected a list of strings (the argv to run), "
            "or systemd_unit, pidfile or match for a process the agent does not start",
        )
    if len(given) > 1:
        raise t.error(
            given[1],
            f"expected exactly one of command, systemd_unit, pidfile or match; "
            f"got {', '.join(given)}",
        )
    command = t.strings("command", ())
    cwd = t.string("cwd", None)
    stop_signal = t.string("stop_signal", "SIGTERM")
    # Only real signals: SIG_DFL, SIG_IGN and SIG_BLOCK are attributes of the module too.
    if not isinstance(getattr(signal, stop_signal, None), signal.Signals):
        raise t.error(
            "stop_signal",
            f"expected a signal name such as 'SIGTERM' or 'SIGINT', got {stop_signal!r}",
        )
    user = t.string("user", None)
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise t.error(
                "user", f"expected a user that exists on this host, got {user!r}"
            ) from None
    match = t.string("match", None)
    if match is not None:
        try:
            re.compile(match)
        except re.error as exc:
            raise t.error("match", f"expected a regular expression: {exc}") from None
    pidfile = t.string("pidfile", None)
    port = t._get("port", int, "a port number 1-65535", None)
    if port is not None and not 1 <= port <= 65535:
        raise t.error("port", f"expected a port number 1-65535, got {port!r}")
    cfg = ProcessConfig(
        name=name,
        command=command,
        env=t.str_table("env"),
        cwd=Path(cwd).expanduser() if cwd else None,
        user=user,
        restart=t.string("restart", "on-failure", choices=RESTART_POLICIES),
        stop_signal=stop_signal,
        stop_timeout_s=t.duration("stop_timeout", 10.0),
        backoff_initial_s=_non_negative(t, "backoff_initial", 1.0),
        backoff_factor=_number(t, "backoff_factor", 2.0, low=1.0),
        backoff_max_s=t.duration("backoff_max", 300.0),
        backoff_jitter=_number(t, "backoff_jitter", 0.1, low=0.0, high=1.0),
        backoff_reset_s=_non_negative(t, "backoff_reset", 600.0),
        quarantine_after=_count(t, "quarantine_after", 5),
        quarantine_window_s=t.duration("quarantine_window", 600.0),
        startup_timeout_s=t.duration("startup_timeout", 60.0),
        hang_after_failures=_count(t, "hang_after_failures", 3),
        depends_on=t.strings("depends_on", (), non_empty=False),
        port=port,
        systemd_unit=t.string("systemd_unit", None),
        pidfile=Path(pidfile) if pidfile else None,
        match=match,
        remediation=t.strings("remediation", ()),
        poll_interval_s=t.duration("poll_interval", 2.0),
        log_max_bytes=_count(t, "log_max_bytes", 10 * 1024 * 1024, low=4096),
        log_keep=_count(t, "log_keep", 3),
    )
    if cfg.pidfile is not None and not cfg.pidfile.is_absolute():
        raise t.error("pidfile", f"expected an absolute path, got {pidfile!r}")
    if cfg.backoff_initial_s > cfg.backoff_max_s:
        raise t.error("backoff_initial", "expected a delay no longer than backoff_max")
    if cfg.kind in ("pidfile", "match") and cfg.restart != "never" and not cfg.remediation:
        raise t.error(
            "remediation",
            f"a process found by {cfg.kind} is not ours to start: expected a remediation "
            'command (an argv list) to bring it back, or restart = "never"',
        )
    if name in cfg.depends_on:
        raise t.error("depends_on", "a process cannot depend on itself")
    t.finish()
    return cfg


def _non_negative(t: _Table, key: str, default: float) -> float:
    # 0 is meaningful (no delay; never reset), but a negative delay is a typo that would
    # show up as "restart in -1.00s".
    value: float = t.duration(key, default, positive=False)
    if value < 0:
        raise t.error(key, f"expected a duration of 0s or more, got {t.data[key]!r}")
    return value


def _number(t: _Table, key: str, default: float, *, low: float, high: float | None = None) -> float:
    value = t._get(key, (int, float), "a number", default)
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"of at least {low:g}"
        raise t.error(key, f"expected a number {bound}, got {value!r}")
    return float(value)


def _count(t: _Table, key: str, default: int, *, low: int = 0) -> int:
    value = t._get(key, int, f"a whole number of {low} or more", default)
    if value < low:
        raise t.error(key, f"expected a whole number of {low} or more, got {value!r}")
    return int(value)


def _check_dependencies(
    processes: tuple[ProcessConfig, ...], path: Path, locator: _Locator
) -> None:
    names = {p.name: i for i, p in enumerate(processes)}
    for i, p in enumerate(processes):
        for dep in p.depends_on:
            if dep not in names:
                raise ConfigError(
                    path,
                    f"names process {dep!r}, but no [[process]] has that name; "
                    f"expected one of: {', '.join(sorted(names))}",
                    field=f"process[{i}].depends_on",
                    line=locator.find("process", i, "depends_on"),
                )
    # A cycle would leave every process in it blocked forever: refuse it up front.
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            i = names[name]
            raise ConfigError(
                path,
                f"dependency cycle {' -> '.join(cycle)}; expected depends_on to form no loop",
                field=f"process[{i}].depends_on",
                line=locator.find("process", i, "depends_on"),
            )
        state[name] = 1
        for dep in processes[names[name]].depends_on:
            visit(dep, [*trail, name])
        state[name] = 2

    for p in processes:
        visit(p.name, [])


def _line_from_message(message: str) -> int | None:
    m = re.search(r"line (\d+)", message)
    return int(m.group(1)) if m else None


def _first_line_with(text: str, key: str) -> int | None:
    # The key's assignment, not the first line that merely mentions it (a comment, a value).
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.]")
    for i, line in enumerate(text.splitlines()):
        if key_re.match(line):
            return i + 1
    return None
