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

    [[agent]]
    name = "gpu-03"
    url = "https://gpu-03.internal:8470"
    ca = "ca.pem"                        # relative to this file; default: the system's CAs
    labels = { region = "eu-west" }      # over the agent's own [agent] labels

A bad file is refused whole, with the file, the line when it can be found, the field and what
was expected, as the agent's own config is; the CLI then exits 2. Tokens named by
``token_file`` are read here, so a missing or unreadable file is refused at start, not shown
later as a failing agent.
"""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from storage.labels import MAX_LABELS, TABLE_EXPECTED, LabelError, Labels, check_labels
from storage.tlstrust import TrustError, client_context
from storage.tomlschema import Duration, Invalid, Locator, decode, expand_home
from tui.remote.ssh import SshAddress

DEFAULT_TIMEOUT_S = 3.0
"""Budget of one request to an agent (its three requests of a poll run side by side)."""
DEFAULT_CONNECT_TIMEOUT_S = 15.0
"""Budget for setting up an ``ssh://`` agent: reading its address and token, then the forward."""

_TIMEOUT = Meta(extra={"expected": "a positive duration such as '500ms' or '3s'", "plain": True})


class _Shared(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``[defaults]``: what every ``[[agent]]`` inherits unless it says otherwise."""

    unknown_key: ClassVar[str] = "unknown key in [defaults]; expected one of: {known}"

    token: Annotated[str, Meta(extra={"expected": "a non-empty string"})] | None = None
    token_file: (
        Annotated[str, Meta(min_length=1, extra={"expected": "a file path", "plain": True})] | None
    ) = None
    data_dir: (
        Annotated[
            str,
            Meta(pattern=r"^[/~]", extra={"expected": "an absolute remote path", "plain": True}),
        ]
        | None
    ) = None
    ssh_options: (
        Annotated[
            tuple[str, ...],
            Meta(extra={"expected": 'a list of strings such as ["-J", "bastion"]', "plain": True}),
        ]
        | None
    ) = None
    timeout: Annotated[Duration, _TIMEOUT] | None = None
    connect_timeout: Annotated[Duration, _TIMEOUT] | None = None
    ca: (
        Annotated[str, Meta(min_length=1, extra={"expected": "a file path", "plain": True})] | None
    ) = None
    # Values of any type here: storage.labels.check_labels names the label that is wrong.
    labels: Annotated[dict[str, Any], Meta(extra={"expected": TABLE_EXPECTED})] | None = None


class _Agent(_Shared, frozen=True):
    """One ``[[agent]]``."""

    unknown_key: ClassVar[str] = "unknown key in [[agent]]; expected one of: {known}"

    name: Annotated[
        str,
        Meta(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}$",
            extra={
                "expected": "1-64 letters, digits or . _ @ : + - starting with a letter or digit",
                "plain": True,
                "required": "required: the agent's name",
            },
        ),
    ]
    url: Annotated[
        str,
        Meta(
            extra={
                "expected": "a string such as 'http://10.0.0.5:8470'",
                "plain": True,
                "required": "required: http(s)://host:port or ssh://host",
            }
        ),
    ]


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
        ca_file: ``https://`` only: the CA file its certificate is verified against (None:
            the system's CAs).
        ssl_context: ``https://`` only: the context that verifies it, built from ``ca_file``
            when the file is loaded.
        labels: ``[defaults]`` labels with the agent's own over them, sorted by name; they
            override the labels the agent serves, and a ``""`` value removes one
            (:func:`storage.labels.merge_labels`).
    """

    name: str
    url: str
    token: str | None = field(default=None, repr=False)
    data_dir: str | None = None
    ssh_options: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ca_file: Path | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    labels: Labels = ()

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
    locator = Locator(text, path)
    try:
        return _entries(doc, path)
    except _Shape as exc:
        raise FleetError(str(locator.error(exc, line=False))) from None
    except Invalid as exc:
        raise FleetError(str(locator.error(exc))) from None


class _Shape(Invalid):
    """The file's outline is wrong (no agents, an unknown table): no one line to point at."""


def _entries(doc: dict[str, Any], path: Path) -> list[FleetEntry]:
    unknown = sorted(set(doc) - {"agent", "defaults"})
    if unknown:
        raise _Shape((unknown[0],), "unknown key; expected [defaults] and [[agent]] tables")
    if not isinstance(doc.get("defaults", {}), dict):
        raise _Shape(("defaults",), "expected a table: [defaults]")
    defaults = decode(doc.get("defaults", {}), _Shared, ("defaults",))
    agents = doc.get("agent")
    if not isinstance(agents, list | None) or not all(isinstance(a, dict) for a in agents or []):
        raise _Shape(("agent",), "expected [[agent]] tables")
    if not agents:
        raise _Shape(("agent",), "no agents: add one [[agent]] table per agent")
    entries: list[FleetEntry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(agents):
        entry = _Merged(decode(raw, _Agent, ("agent", index)), defaults, index).entry(path)
        if entry.name in seen:
            raise Invalid(
                ("agent", index, "name"),
                f"{entry.name!r} is already the name of agent[{seen[entry.name]}]; "
                "names must be unique",
            )
        seen[entry.name] = index
        entries.append(entry)
    return entries


class _Merged:
    """One agent's settings over ``[defaults]``, and its checks that span fields.

    A value inherited from ``[defaults]`` that is wrong for this agent is reported there.
    """

    def __init__(self, agent: _Agent, defaults: _Shared, index: int) -> None:
        self.agent = agent
        self.defaults = defaults
        self.index = index
        self.given = {f for f in agent.__struct_fields__ if getattr(agent, f) is not None}
        self.is_ssh = agent.url.startswith("ssh://")

    def get(self, key: str) -> Any:
        value = getattr(self.agent, key)
        return getattr(self.defaults, key) if value is None else value

    def fail(self, key: str, reason: str) -> Invalid:
        if key not in self.given and getattr(self.defaults, key) is not None:
            return Invalid(("defaults", key), reason)
        return Invalid(("agent", self.index, key), reason)

    def entry(self, fleet_path: Path) -> FleetEntry:
        self._check_url()
        data_dir = self.get("data_dir")
        if data_dir is not None and not self.is_ssh:
            raise self.fail(
                "data_dir", "only for ssh:// agents (where to read api.json and tokens)"
            )
        ssh_options = self.get("ssh_options") or ()
        if ssh_options and not self.is_ssh:
            raise self.fail("ssh_options", "only for ssh:// agents")
        timeout = self.get("timeout")
        connect_timeout = self.get("connect_timeout")
        url = self.agent.url
        ca_file, context = self._tls(fleet_path)
        return FleetEntry(
            name=self.agent.name,
            url=url if self.is_ssh else url.rstrip("/"),
            token=self._token(fleet_path),
            data_dir=data_dir,
            ssh_options=tuple(ssh_options),
            timeout_s=float(timeout) if timeout is not None else DEFAULT_TIMEOUT_S,
            connect_timeout_s=(
                float(connect_timeout) if connect_timeout is not None else DEFAULT_CONNECT_TIMEOUT_S
            ),
            ca_file=ca_file,
            ssl_context=context,
            labels=self._labels(),
        )

    def _labels(self) -> Labels:
        """``[defaults]`` labels, then the agent's own over them, each table checked where
        it is written."""
        merged: dict[str, str] = {}
        for at, raw in (
            (("defaults", "labels"), self.defaults.labels),
            (("agent", self.index, "labels"), self.agent.labels),
        ):
            try:
                merged.update(check_labels(raw or {}, allow_empty=True))
            except LabelError as exc:
                raise Invalid(at if exc.name is None else (*at, exc.name), exc.reason) from None
        if len(merged) > MAX_LABELS:
            raise Invalid(
                ("agent", self.index, "labels"),
                f"expected at most {MAX_LABELS} labels with those of [defaults], got {len(merged)}",
            )
        return tuple(sorted(merged.items()))

    def _tls(self, fleet_path: Path) -> tuple[Path | None, ssl.SSLContext | None]:
        """The CA file, relative to the fleet file, and the context it makes; verification
        is on for every https:// agent, against the system's CAs without a ``ca``."""
        https = self.agent.url.startswith("https://")
        ca = self.get("ca")
        if ca is None:
            return None, None  # aiohttp verifies against the system's CAs
        if not https:
            if "ca" not in self.given:
                return None, None  # a fleet-wide CA concerns its https:// agents only
            raise self.fail("ca", "only for https:// agents (the CA their certificate is from)")
        try:
            path = Path(ca).expanduser()
        except RuntimeError:  # ~user of a user that does not exist
            raise self.fail("ca", f"{ca}: no such user's home directory") from None
        if not path.is_absolute():
            path = fleet_path.parent / path
        try:
            return path, client_context(path)
        except TrustError as exc:
            raise self.fail("ca", f"{exc.path}: {exc.reason}") from None

    def _check_url(self) -> None:
        if self.is_ssh:
            try:
                SshAddress.parse(self.agent.url)
            except ValueError as exc:
                raise self.fail("url", str(exc)) from None
            return
        problem = _http_problem(self.agent.url)
        if problem:
            raise self.fail("url", problem)

    def _token(self, fleet_path: Path) -> str | None:
        if "token" in self.given and "token_file" in self.given:
            raise self.fail("token_file", "give token or token_file, not both")
        # One of them may come from [defaults]: the agent's own choice wins.
        token, token_file = self.get("token"), self.get("token_file")
        if token is not None and token_file is not None:
            token, token_file = (token, None) if "token" in self.given else (None, token_file)
        if token is not None:
            if not token.strip():
                raise self.fail("token", "expected a non-empty string")
            return str(token.strip())
        if token_file is not None:
            return _read_token(Path(token_file), fleet_path, lambda m: self.fail("token_file", m))
        if not self.is_ssh:
            raise Invalid(
                ("agent", self.index, "token"),
                "required for an http(s) agent: token or token_file "
                "(a copy of the agent's api-token.read, or api-token to act)",
            )
        return None


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


def _read_token(path: Path, fleet_path: Path, fail: Callable[[str], Invalid]) -> str:
    # Relative to the fleet file, so a fleet directory can be moved or shared whole.
    if "\x00" in str(path):
        raise fail("expected a file path without NUL characters (\\u0000)")
    try:
        path = expand_home(str(path))
    except ValueError as exc:
        raise fail(str(exc)) from None
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
