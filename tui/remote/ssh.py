"""``ssh://`` addresses, and reading a remote agent's address and token: the parts of the ssh
transport (:mod:`tui.remote.transport`) that run no process, tested on their own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, replace
from urllib.parse import unquote, urlsplit

from tui.remote.client import AgentError

SSH_COMMAND_ENV = "VIGIL_SSH_COMMAND"
"""Environment variable holding the ssh command line to use instead of plain ``ssh``."""

ROOT_DATA_DIR = "/var/lib/vigil"
"""The data dir of an agent run by root (the systemd service)."""

_HOST = re.compile(r"^[A-Za-z0-9_.%:-]+$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class SshAddress:
    """A parsed ``ssh://[user@]host[:port][/data/dir]`` address.

    Attributes:
        host: Host name or address, as ssh (and the user's ssh config) knows it.
        user: Remote user; None lets ssh choose (config, else the local user name).
        port: ssh port; None lets ssh choose.
        data_dir: The agent's data dir on the host; None for the remote user's default
            (``/var/lib/vigil`` for root, else ``$XDG_STATE_HOME/vigil`` or
            ``~/.local/state/vigil``), then ``/var/lib/vigil``.
    """

    host: str
    user: str | None = None
    port: int | None = None
    data_dir: str | None = None

    @classmethod
    def parse(cls, url: str) -> SshAddress:
        """Parse an ``ssh://`` URL.

        Raises:
            ValueError: saying what is wrong, fit to show a person.
        """
        expected = f"expected ssh://[user@]host[:port][/data/dir], got {url!r}"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(expected) from None
        # Not parts.hostname, which lower-cases: ssh config Host patterns are the user's.
        host = parts.netloc.rpartition("@")[2]
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif port is not None or host.endswith(":"):
            host = host.rpartition(":")[0]
        if parts.scheme != "ssh" or not host or parts.query or parts.fragment or parts.password:
            raise ValueError(expected)
        # A host or user starting with "-" would be read by ssh as an option.
        if not _HOST.match(host) or host.startswith("-"):
            raise ValueError(f"{expected}: bad host name {host!r}")
        user = unquote(parts.username) if parts.username else None
        if user is not None and not _USER.match(user):
            raise ValueError(f"{expected}: bad user name {user!r}")
        data_dir = unquote(parts.path).rstrip("/") or None
        if data_dir is not None and data_dir.startswith("/~/"):
            data_dir = data_dir[1:]  # ssh://host/~/state/vigil: relative to the remote home
        return cls(host=host, user=user, port=port, data_dir=data_dir)

    def with_data_dir(self, data_dir: str) -> SshAddress:
        """The same address with another remote data dir."""
        return replace(self, data_dir=data_dir)

    @property
    def destination(self) -> str:
        """``user@host`` or ``host``, as ssh takes it."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        user = f"{self.user}@" if self.user else ""
        return f"ssh://{user}{host}{port}"


def ssh_command(address: SshAddress, options: tuple[str, ...] = ()) -> list[str]:
    """The start of every ssh argv for ``address``: the user's ssh, their extra options, then
    ours (ssh keeps the first value it sees for an option, so the user's win)."""
    base = shlex.split(os.environ.get(SSH_COMMAND_ENV, "") or "ssh")
    argv = [*base, *options, "-o", "BatchMode=yes"]
    if address.port is not None:
        argv += ["-p", str(address.port)]
    return argv


def remote_script(data_dir: str | None, want_token: bool) -> str:
    """The POSIX sh script that prints the agent's ``api.json`` and token, line-tagged.

    Output lines: ``vigil-dir DIR``, ``vigil-api JSON``, for an agent serving HTTPS its
    certificate (``api.json``'s ``tls_cert``) as ``vigil-cert LINE`` lines or ``vigil-no-cert
    PATH``, then ``vigil-token TOKEN``; or ``vigil-no-agent DIRS`` (exit 3) or ``vigil-no-token
    DIR`` (exit 4).
    """
    if data_dir is None:
        dirs = (
            f'if [ "$(id -u)" = 0 ]; then set -- {ROOT_DATA_DIR}; '
            f'else set -- "${{XDG_STATE_HOME:-$HOME/.local/state}}/vigil" {ROOT_DATA_DIR}; fi'
        )
    elif data_dir.startswith("~/"):
        dirs = f'set -- "$HOME"/{shlex.quote(data_dir[2:])}'
    else:
        dirs = f"set -- {shlex.quote(data_dir)}"
    token = (
        'for f in api-token api-token.read; do if [ -r "$d/$f" ]; then '
        "printf 'vigil-token '; head -n 1 \"$d/$f\"; echo; exit 0; fi; done; "
        "printf 'vigil-no-token %s\\n' \"$d\"; exit 4"
        if want_token
        else "exit 0"
    )
    return (
        f"{dirs}; "
        'for d in "$@"; do if [ -e "$d/api.json" ]; then '
        "printf 'vigil-dir %s\\n' \"$d\"; "
        "printf 'vigil-api '; tr -d '\\n' < \"$d/api.json\" || exit 5; echo; "
        # api.json is one line of JSON; its tls_cert (a path json.dumps wrote) is cut out.
        'c=$(sed -n \'s/.*"tls_cert": *"\\([^"]*\\)".*/\\1/p\' "$d/api.json"); '
        # echo: a certificate file without a final newline must not run into the next tag.
        'if [ -n "$c" ]; then if [ -r "$c" ]; then sed \'s/^/vigil-cert /\' "$c"; echo; '
        "else printf 'vigil-no-cert %s\\n' \"$c\"; fi; fi; "
        f"{token}; fi; done; "
        "printf 'vigil-no-agent %s\\n' \"$*\"; exit 3"
    )


@dataclass(frozen=True, slots=True)
class RemoteAgent:
    """What the remote data dir says: where the agent listens, and a token (None if not read)."""

    data_dir: str
    url: str
    host: str
    port: int
    token: str | None = None
    cert_pem: str | None = None
    """An ``https://`` agent's certificate, read through ssh: the client trusts exactly it."""

    def __repr__(self) -> str:
        return f"RemoteAgent(data_dir={self.data_dir!r}, url={self.url!r})"


def parse_remote_output(address: SshAddress, out: str) -> RemoteAgent:
    """Read :func:`remote_script`'s output.

    Raises:
        AgentError: when the agent or its token was not found, or api.json is malformed.
    """
    tagged: dict[str, str] = {}
    cert_lines: list[str] = []
    for line in out.splitlines():
        tag, _, value = line.partition(" ")
        if tag == "vigil-cert":
            cert_lines.append(value.strip())
        elif tag.startswith("vigil-") and tag not in tagged:
            tagged[tag] = value.strip()
    if "vigil-no-agent" in tagged:
        raise AgentError(
            f"{address}: no api.json in {tagged['vigil-no-agent']}: is the agent running? "
            "(set data_dir to its data dir)",
            "config",
        )
    data_dir = tagged.get("vigil-dir", "?")
    if "vigil-no-token" in tagged:
        raise AgentError(
            f"{address}: cannot read the token in {data_dir} (api-token, api-token.read are "
            "0600): ssh as the agent's user, or give token_file",
            "config",
        )
    try:
        info = json.loads(tagged["vigil-api"])
        url = str(info["url"])
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except (KeyError, ValueError, TypeError) as exc:
        raise AgentError(f"{address}: bad {data_dir}/api.json: {exc}", "protocol") from None
    if not host or port is None or parts.scheme not in ("http", "https"):
        raise AgentError(f"{address}: bad {data_dir}/api.json url {url!r}", "protocol")
    # An agent listening on all interfaces is reached on the remote loopback all the same.
    if host in ("0.0.0.0", ""):  # noqa: S104 - a listen address read, not one bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    cert_pem = "\n".join(cert_lines) + "\n" if cert_lines else None
    if parts.scheme == "https" and cert_pem is None:
        path = tagged.get("vigil-no-cert") or "(api.json names none)"
        raise AgentError(
            f"{address}: the agent serves HTTPS, and its certificate {path} cannot be read "
            "through ssh to verify it: ssh as a user who can read it",
            "config",
        )
    return RemoteAgent(data_dir, url, host, port, tagged.get("vigil-token") or None, cert_pem)
