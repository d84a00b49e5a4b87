"""A small synchronous client for the CLI (``vigil status``), and finding the local agent.

The CLI makes one or two requests and exits, so plain urllib is enough and keeps ``vigil
status`` fast to start; the TUI has its own asynchronous client.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.config import DEFAULT_CONFIG_PATH, ConfigError, default_data_dir, load_config
from agent.serve.files import API_FILE
from agent.serve.tokens import OPERATE_FILE
from storage.records import AgentStatus
from storage.tlstrust import CA_ENV, TrustError, client_context, env_ca, tls_failure

_CA_HINT = f"pass --ca FILE or set {CA_ENV} to the CA that issued it"


class AgentUnreachable(Exception):
    """The agent could not be reached or answered with an error; the message says which."""


def data_dir_for(config_path: Path | None) -> Path:
    """The data dir named by a config file (the default one if present), else the default.

    Raises:
        ConfigError: the named config file is invalid.
    """
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    if config_path is None:
        return default_data_dir()
    return load_config(config_path).agent.data_dir


def resolve_target(
    url: str | None, token_file: Path | None, config_path: Path | None
) -> tuple[str, str]:
    """Work out which agent to talk to and with which token.

    Order: ``--url`` else the local agent's ``api.json``; ``--token-file`` else
    ``$VIGIL_TOKEN`` else the data dir's ``api-token``.
    """
    url, token, _ = _resolve(url, token_file, config_path)
    return url, token


def connect(args: argparse.Namespace, timeout_s: float = 5.0) -> ApiClient:
    """The client for the agent a command's ``--url``, ``--token-file``, ``--config`` and
    ``--ca`` name (each may be absent from ``args``), verifying its certificate over HTTPS.

    Trust: ``--ca`` else ``$VIGIL_CA`` (that CA file only); else, for the local agent found
    through its ``api.json``, exactly the certificate its config names; else the system's CAs.

    Raises:
        AgentUnreachable: no agent to be found, or its token cannot be read.
        ConfigError: the config is invalid, or the CA or certificate file unusable.
    """
    url, token, agent_cert = _resolve(
        getattr(args, "url", None), getattr(args, "token_file", None), getattr(args, "config", None)
    )
    return ApiClient(
        url, token, timeout_s, ssl_context=trust_for(url, getattr(args, "ca", None), agent_cert)
    )


def trust_for(url: str, ca: Path | None, agent_cert: Path | None = None) -> ssl.SSLContext | None:
    """The TLS context :func:`connect` uses for ``url`` (None for plain ``http://``).

    Raises:
        ConfigError: the CA file (or the agent's certificate) cannot be used.
    """
    if not url.startswith("https://"):
        return None
    ca = ca or env_ca()
    try:
        if ca is not None:
            return client_context(ca)
        if agent_cert is not None:
            return client_context(pinned_cert=agent_cert)
        return client_context()
    except TrustError as exc:
        hint = "" if ca is not None else " (its api.json names it; or pass --ca FILE or --url)"
        raise ConfigError(exc.path, exc.reason + hint) from None


def _resolve(
    url: str | None, token_file: Path | None, config_path: Path | None
) -> tuple[str, str, Path | None]:
    """:func:`resolve_target`, and the certificate a local agent's ``api.json`` names."""
    data_dir: Path | None = None
    agent_cert: Path | None = None
    if url is None:
        data_dir = data_dir_for(config_path)
        info = data_dir / API_FILE
        try:
            published = json.loads(info.read_text(encoding="utf-8"))
            url = str(published["url"])
            if published.get("tls_cert"):
                agent_cert = Path(str(published["tls_cert"]))
        except FileNotFoundError:
            hint = (
                f"is `vigil agent run --config {config_path}` running? or pass --url"
                if config_path is not None
                # An agent whose config names another data_dir writes api.json there.
                else "is the agent running? if its config sets another data_dir, pass "
                "--config with that file, or --url"
            )
            raise AgentUnreachable(f"no local agent: {info} does not exist ({hint})") from None
        except (OSError, ValueError, KeyError) as exc:
            raise AgentUnreachable(f"cannot read {info}: {exc}") from None
    if token_file is not None:
        return url, _read_token(token_file), agent_cert
    env = os.environ.get("VIGIL_TOKEN")
    if env:
        return url, env.strip(), agent_cert
    if data_dir is None:
        data_dir = data_dir_for(config_path)
    return url, _read_token(data_dir / OPERATE_FILE), agent_cert


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AgentUnreachable(
            f"cannot read the token file {path}: {exc.strerror} (pass "
            f"--token-file or set VIGIL_TOKEN)"
        ) from None
    if not token:
        raise AgentUnreachable(f"the token file {path} is empty")
    return token


class ApiClient:
    """Blocking JSON-over-HTTP calls to one agent."""

    def __init__(
        self,
        url: str,
        token: str,
        timeout_s: float = 5.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        """Verifies an https:// agent (None: the system's CAs, host name checked)."""

    def get(self, path: str) -> Any:
        """GET a JSON document; errors become :class:`AgentUnreachable` with the reason."""
        return self._call("GET", path)

    def post(self, path: str, operator: str | None = None) -> Any:
        """POST an action; ``operator`` names who acts, for the audit trail."""
        return self._call("POST", path, operator)

    def _call(self, method: str, path: str, operator: str | None = None) -> Any:
        if not self.url.startswith(("http://", "https://")):
            raise AgentUnreachable(f"not an http(s) URL: {self.url!r}")
        headers = {"Authorization": f"Bearer {self.token}"}
        if operator:
            headers["X-Vigil-Operator"] = operator
        # The scheme is checked above, so urlopen cannot be steered to file: or others.
        req = urllib.request.Request(  # noqa: S310
            self.url + path, headers=headers, method=method, data=b"" if method == "POST" else None
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                req, timeout=self.timeout_s, context=self.ssl_context
            ) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise AgentUnreachable(f"{self.url}{path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
            raise connect_failure(self.url, exc, self.timeout_s) from None
        except ValueError as exc:
            raise AgentUnreachable(f"{self.url}{path}: not JSON: {exc}") from None

    def status(self) -> AgentStatus:
        """``GET /api/v1/status`` as a record."""
        return AgentStatus.from_json(self.get("/api/v1/status"))

    def models(self) -> list[dict[str, Any]]:
        """``GET /api/v1/models``: each model with its latency percentiles and availability."""
        return list(self.get("/api/v1/models")["models"])


def connect_failure(url: str, exc: BaseException, timeout_s: float) -> AgentUnreachable:
    """The error for a request to ``url`` that failed before an answer: ``cannot connect to
    URL: why`` (a refused connection, a timeout, an untrusted certificate and what to do)."""
    reason = getattr(exc, "reason", exc)
    why = tls_failure(reason, urlsplit(url).netloc, _CA_HINT)
    if why is None and isinstance(reason, http.client.RemoteDisconnected):
        # An HTTPS agent drops a plain-HTTP request without a word.
        why = "the agent closed the connection without answering"
        if url.startswith("http://"):
            why += " (does it serve HTTPS? try https:// in --url)"
    return AgentUnreachable(
        f"cannot connect to {url}: {why or connection_reason(reason, timeout_s)}"
    )


def connection_reason(reason: object, timeout_s: float) -> str:
    """Why a connection failed, in words: ``connection refused (is the agent running?)``.

    Args:
        reason: The error (an ``OSError`` mostly, as ``URLError.reason`` holds it).
        timeout_s: The request's timeout, for the message when it ran out.
    """
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the agent running?)"
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout_s:g}s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason)
