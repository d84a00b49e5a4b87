"""The fleet file: which agents ``vigil tui --fleet FILE`` watches, and how to reach each.

A fleet file is TOML: an optional ``[defaults]`` table and one ``[[agent]]`` table per agent::

    [defaults]
    timeout = "3s"
    token_file = "~/.config/vigil/read-token"

    [[agent]]
    name = "gpu-01"
    url = "http://10.0.0.11:8470"

    [[agent]]
    name = "gpu-02"
    url = "ssh://ops@gpu-02.internal"   # through the user's own ssh; token read over ssh
    data_dir = "/var/lib/vigil"

A bad file is refused whole, with the file, the line when it can be found, the field and what
was expected, as the agent's own config is; the CLI then exits 2. Tokens named by
``token_file`` are read here, so a missing or unreadable file is refused at start, not shown
later as a failing agent.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from storage.units import parse_duration
from tui.sshremote import SshAddress

DEFAULT_TIMEOUT_S = 3.0
"""Budget of one request to an agent (its three requests of a poll run side by side)."""
DEFAULT_CONNECT_TIMEOUT_S = 15.0
"""Budget for setting up an ``ssh://`` agent: reading its address and token, then the forward."""

_AGENT_KEYS = frozenset(
    {"name", "url", "token", "token_file", "data_dir", "ssh_options", "timeout", "connect_timeout"}
)
_DEFAULT_KEYS = _AGENT_KEYS - {"name", "url"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}$")


class FleetError(Exception):
    """A fleet file that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class FleetEntry:
    """One agent of the fleet, as the file describes it.

    Attributes:
        name: What the fleet table calls it (unique within the file).
        url: ``http(s)://host:port`` or ``ssh://[user@]host[:port][/data/dir]``.
        token: The bearer token, when the file gives one (inline or by ``token_file``); None
            for an ``ssh://`` agent whose token is read through ssh.
        data_dir: ``ssh://`` only: the agent's data dir on the remote host (None: the remote
            user's default, then ``/var/lib/vigil``).
        ssh_options: ``ssh://`` only: extra arguments for ``ssh`` (``["-J", "bastion"]``).
        timeout_s: Budget of one request.
        connect_timeout_s: ``ssh://`` only: budget for setting up the forward.
    """

    name: str
    url: str
    token: str | None = field(default=None, repr=False)
    data_dir: str | None = None
    ssh_options: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    @property
    def is_ssh(self) -> bool:
        """Whether the agent is reached through ``ssh``."""
        return self.url.startswith("ssh://")

    def ssh_address(self) -> SshAddress:
        """The parsed ``ssh://`` address, with ``data_dir`` applied (valid once loaded)."""
        address = SshAddress.parse(self.url)
        if self.data_dir is not None:
            address = address.with_data_dir(self.data_dir)
        return address


def load_fleet(path: Path) -> list[FleetEntry]:
    """Read and validate a fleet file.

    Args:
        path: The TOML file.

    Returns:
        The agents, in the file's order.

    Raises:
        FleetError: naming the file, line (when found), field and what was expected.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError(f"cannot read fleet file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise FleetError(f"{path}: not UTF-8 text: {exc}") from None
    return parse_fleet(text, path)


def parse_fleet(text: str, path: Path) -> list[FleetEntry]:
    """Validate a fleet file's text (see :func:`load_fleet`); ``path`` names it in errors and
    anchors relative ``token_file`` paths."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{path}: invalid TOML: {exc}") from None
    where = _Locator(text, path)

    unknown = sorted(set(doc) - {"agent", "defaults"})
    if unknown:
        raise where.error(unknown[0], None, "unknown key; expected [defaults] and [[agent]] tables")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise where.error("defaults", None, "expected a table: [defaults]")
    for key in sorted(set(defaults) - _DEFAULT_KEYS):
        raise where.error(
            f"defaults.{key}", ("defaults", 0, key), _unknown(key, _DEFAULT_KEYS, "[defaults]")
        )
    agents = doc.get("agent")
    if agents is None:
        raise where.error("agent", None, "no agents: add one [[agent]] table per agent")
    if not isinstance(agents, list) or not all(isinstance(a, dict) for a in agents):
        raise where.error("agent", None, "expected [[agent]] tables")
    if not agents:
        raise where.error("agent", None, "no agents: add one [[agent]] table per agent")

    entries: list[FleetEntry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(agents):
        entry = _entry(raw, defaults, index, where)
        if entry.name in seen:
            raise where.error(
                f"agent[{index}].name",
                ("agent", index, "name"),
                f"{entry.name!r} is already the name of agent[{seen[entry.name]}]; "
                "names must be unique",
            )
        seen[entry.name] = index
        entries.append(entry)
    return entries


def _unknown(key: str, allowed: frozenset[str], table: str) -> str:
    return f"unknown key in {table}; expected one of: {', '.join(sorted(allowed))}"


def _entry(
    raw: dict[str, Any], defaults: dict[str, Any], index: int, where: _Locator
) -> FleetEntry:
    prefix = f"agent[{index}]"

    def fail(key: str, message: str) -> FleetError:
        # A value inherited from [defaults] is wrong there, not in the agent table.
        if key not in raw and key in defaults:
            return where.error(f"defaults.{key}", ("defaults", 0, key), message)
        return where.error(f"{prefix}.{key}", ("agent", index, key), message)

    for key in sorted(set(raw) - _AGENT_KEYS):
        raise where.error(
            f"{prefix}.{key}", ("agent", index, key), _unknown(key, _AGENT_KEYS, "[[agent]]")
        )
    merged = {**defaults, **raw}

    name = merged.get("name")
    if name is None:
        raise where.error(f"{prefix}.name", ("agent", index, None), "required: the agent's name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail(
            "name",
            "expected 1-64 letters, digits or . _ @ : + - starting with a letter or digit, "
            f"got {name!r}",
        )

    url = merged.get("url")
    if url is None:
        raise where.error(
            f"{prefix}.url", ("agent", index, None), "required: http(s)://host:port or ssh://host"
        )
    if not isinstance(url, str):
        raise fail("url", f"expected a string such as 'http://10.0.0.5:8470', got {url!r}")
    is_ssh = url.startswith("ssh://")
    if is_ssh:
        try:
            SshAddress.parse(url)
        except ValueError as exc:
            raise fail("url", str(exc)) from None
    else:
        problem = _http_problem(url)
        if problem:
            raise fail("url", problem)

    token = merged.get("token")
    token_file = merged.get("token_file")
    if "token" in raw and "token_file" in raw:
        raise fail("token_file", "give token or token_file, not both")
    if token is not None and token_file is not None:
        # One came from [defaults]: the agent's own choice wins.
        if "token" in raw:
            token_file = None
        else:
            token = None
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise fail("token", "expected a non-empty string")
        token = token.strip()
    elif token_file is not None:
        if not isinstance(token_file, str) or not token_file:
            raise fail("token_file", f"expected a file path, got {token_file!r}")
        token = _read_token(Path(token_file), where.path, lambda m: fail("token_file", m))
    elif not is_ssh:
        raise where.error(
            f"{prefix}.token",
            ("agent", index, None),
            "required for an http(s) agent: token or token_file "
            "(a copy of the agent's api-token.read, or api-token to act)",
        )

    data_dir = merged.get("data_dir")
    if data_dir is not None:
        if not is_ssh:
            raise fail("data_dir", "only for ssh:// agents (where to read api.json and tokens)")
        if not isinstance(data_dir, str) or not data_dir.startswith(("/", "~")):
            raise fail("data_dir", f"expected an absolute remote path, got {data_dir!r}")

    ssh_options = merged.get("ssh_options", [])
    if not isinstance(ssh_options, list) or not all(isinstance(o, str) for o in ssh_options):
        raise fail("ssh_options", 'expected a list of strings such as ["-J", "bastion"]')
    if ssh_options and not is_ssh:
        raise fail("ssh_options", "only for ssh:// agents")

    timeout_s = _duration(merged, "timeout", DEFAULT_TIMEOUT_S, fail)
    connect_timeout_s = _duration(merged, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S, fail)

    return FleetEntry(
        name=name,
        url=url.rstrip("/") if not is_ssh else url,
        token=token,
        data_dir=data_dir,
        ssh_options=tuple(ssh_options),
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
    )


def _http_problem(url: str) -> str | None:
    """Why ``url`` is not a usable ``http(s)://host:port`` agent address, or None."""
    expected = "expected http://host:port, https://host:port or ssh://[user@]host[:port]"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{expected}, got {url!r} ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{expected}, got {url!r}"
    if parts.query or parts.fragment:
        return f"expected no query or fragment, got {url!r}"
    del port
    return None


def _duration(merged: dict[str, Any], key: str, default: float, fail: Any) -> float:
    value = merged.get(key)
    if value is None:
        return default
    expected = f"expected a positive duration such as '500ms' or '3s', got {value!r}"
    if not isinstance(value, str):
        raise fail(key, expected)
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise fail(key, expected) from None
    if seconds <= 0:
        raise fail(key, expected)
    return seconds


def _read_token(path: Path, fleet_path: Path, fail: Any) -> str:
    # Relative to the fleet file, so a fleet directory can be moved or shared whole.
    path = path.expanduser()
    if not path.is_absolute():
        path = fleet_path.parent / path
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise fail(f"{path} is not a text token file") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise fail(f"{path} is empty")
    return token


class _Locator:
    """Finds the line of a key inside the n-th ``[[agent]]`` (or ``[defaults]``) table.

    tomllib keeps no positions, so this scans the text: good enough to point at the line in
    the ordinary layout (one key per line, tables in order), and silent otherwise.
    """

    _HEADER = re.compile(r"^\s*(\[\[\s*agent\s*\]\]|\[\s*defaults\s*\]|\[\[?[^\]]*\]\]?)")

    def __init__(self, text: str, path: Path) -> None:
        self.path = path
        self.lines = text.splitlines()

    def error(
        self, field_name: str, at: tuple[str, int, str | None] | None, message: str
    ) -> FleetError:
        line = self.line_of(*at) if at is not None else None
        place = f"{self.path}:{line}" if line else str(self.path)
        return FleetError(f"{place}: {field_name}: {message}")

    def line_of(self, table: str, index: int, key: str | None) -> int | None:
        """1-based line of ``key`` in the ``index``-th table (its header when key is None)."""
        want = "[[agent]]" if table == "agent" else "[defaults]"
        count = -1
        inside = False
        header_line: int | None = None
        key_re = re.compile(rf"^\s*{re.escape(key)}\s*=") if key else None
        for number, line in enumerate(self.lines, start=1):
            match = self._HEADER.match(line)
            if match:
                head = re.sub(r"\s+", "", match.group(1))
                if head == want:
                    count += 1
                    inside = count == index
                    if inside:
                        header_line = number
                else:
                    inside = False
                continue
            if inside and key_re is not None and key_re.match(line):
                return number
        return header_line
