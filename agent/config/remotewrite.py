"""``[remote_write]``: forwarding the stored samples to a Prometheus remote-write receiver.

The table's shape (:class:`RemoteWriteTable`), the record the forwarder runs on
(:class:`RemoteWriteConfig`) and the checks that span its fields; a problem is an
:class:`~storage.tomlschema.Invalid` naming ``remote_write.<key>``, which the loader turns
into file:line. Secrets are never in the file: ``bearer_token_env``/``bearer_token_file`` or
``password_env``/``password_file``, read once at load as a model's API key is.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from agent.config.schema import _Table, count
from agent.config.secrets import read_secret
from storage.tomlschema import Duration, Invalid, decode, expand_home

WIRE_MODULES = ("cramjam", "google.protobuf")
"""What the wire format needs (the ``forward`` extra): looked up at load, imported at the
first request."""
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_LABELS = ("instance",)
"""Set by the agent on every series: its ``[agent] host``."""
MAX_LABEL_VALUE = 1024


class RemoteWriteTable(_Table, frozen=True):
    """``[remote_write]``."""

    url: str
    interval: Duration = 10.0
    max_samples_per_request: Annotated[int, count(1, 100_000)] = 2000
    timeout: Duration = 30.0
    backoff_initial: Duration = 1.0
    backoff_max: Duration = 60.0
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    labels: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class RemoteWriteConfig:
    """The ``[remote_write]`` table, checked: where to send, how often, how much at once."""

    url: str
    interval_s: float = 10.0
    """How often what was stored since is sent."""
    max_samples: int = 2000
    """Samples per request at most."""
    timeout_s: float = 30.0
    backoff_initial_s: float = 1.0
    """The first wait after a failed request; doubled after each further failure."""
    backoff_max_s: float = 60.0
    labels: tuple[tuple[str, str], ...] = ()
    """Added to every series, over the ``[agent] labels`` and ``job = "vigil"``; a series' own
    label of the same name wins."""
    ca_file: Path | None = None
    """Trust only these CAs for an https:// receiver; None: the system's."""
    bearer_token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """The receiver without credentials or query, for logs, events and the API."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


def build_remote_write(raw: Any) -> RemoteWriteConfig | None:
    """``[remote_write]`` as a record, or None when the file has no such table.

    Raises:
        Invalid: a key of the wrong type or range, a bad URL or label, secrets given twice
            or unreadable, or the ``forward`` extra not installed.
    """
    if raw is None:
        return None
    at = ("remote_write",)
    t = decode(raw, RemoteWriteTable, at)

    def fail(key: str, reason: str) -> Invalid:
        return Invalid((*at, key), reason)

    parts = urlsplit(t.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Never the URL itself: it may hold credentials.
        raise fail("url", "expected an http:// or https:// URL with a host name")
    if t.interval < 0.1:
        raise fail("interval", "expected at least 100ms")
    if t.backoff_initial > t.backoff_max:
        raise fail("backoff_initial", "expected a delay no longer than backoff_max")
    labels = _labels(t.labels, fail)
    token = read_secret(t.bearer_token_env, t.bearer_token_file, at, "bearer_token", "the token")
    password = read_secret(t.password_env, t.password_file, at, "password", "the password")
    if t.username is not None and password is None:
        raise fail(
            "username", "a username needs a password: expected password_env or password_file"
        )
    if password is not None and t.username is None:
        raise fail("username", "a password needs a username (basic authentication)")
    if token is not None and t.username is not None:
        raise fail("username", "expected a bearer token or a username and password, not both")
    ca = _ca_file(t.ca_file, parts.scheme, fail)
    missing = [m for m in WIRE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise fail(
            "url",
            f"forwarding needs the forward extra: pip install 'vigil[forward]' "
            f"(no module named {missing[0]!r})",
        )
    return RemoteWriteConfig(
        url=t.url,
        interval_s=t.interval,
        max_samples=t.max_samples_per_request,
        timeout_s=t.timeout,
        backoff_initial_s=t.backoff_initial,
        backoff_max_s=t.backoff_max,
        labels=labels,
        ca_file=ca,
        bearer_token=token,
        username=t.username,
        password=password,
    )


def _labels(given: dict[str, str], fail: Any) -> tuple[tuple[str, str], ...]:
    for name, value in given.items():
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise fail(
                "labels",
                f"label name {name!r}: expected letters, digits and '_', not starting with a "
                "digit or '__'",
            )
        if name in RESERVED_LABELS:
            raise fail(
                "labels",
                f"{name!r} is set by the agent (its [agent] host); expected another label name",
            )
        if not value or len(value) > MAX_LABEL_VALUE or not value.isprintable():
            raise fail(
                "labels",
                f"label {name!r}: expected a value of 1-{MAX_LABEL_VALUE} printable characters",
            )
    return tuple(sorted(given.items()))


def _ca_file(value: str | None, scheme: str, fail: Any) -> Path | None:
    if value is None:
        return None
    if scheme != "https":
        raise fail("ca_file", "a CA file is for an https:// URL; expected https:// or no ca_file")
    try:
        path = expand_home(value)
    except ValueError as exc:
        raise fail("ca_file", str(exc)) from None
    if not path.is_absolute():
        raise fail("ca_file", f"expected an absolute path, got {value!r}")
    from storage.tlstrust import TrustError, client_context

    try:
        client_context(path)
    except TrustError as exc:
        raise fail("ca_file", exc.reason) from None
    return path
