"""A small synchronous client for the CLI (``vigil status``), and finding the local agent.

The CLI makes one or two requests and exits, so plain urllib is enough and keeps ``vigil
status`` fast to start; the TUI has its own asynchronous client.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agent.config import DEFAULT_CONFIG_PATH, default_data_dir, load_config
from agent.serve.files import API_FILE
from agent.serve.tokens import OPERATE_FILE
from storage.records import AgentStatus


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
    data_dir: Path | None = None
    if url is None:
        data_dir = data_dir_for(config_path)
        info = data_dir / API_FILE
        try:
            url = str(json.loads(info.read_text(encoding="utf-8"))["url"])
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
        return url, _read_token(token_file)
    env = os.environ.get("VIGIL_TOKEN")
    if env:
        return url, env.strip()
    if data_dir is None:
        data_dir = data_dir_for(config_path)
    return url, _read_token(data_dir / OPERATE_FILE)


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

    def __init__(self, url: str, token: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

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
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise AgentUnreachable(f"{self.url}{path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AgentUnreachable(
                f"cannot connect to {self.url}: {connection_reason(reason, self.timeout_s)}"
            ) from None
        except ValueError as exc:
            raise AgentUnreachable(f"{self.url}{path}: not JSON: {exc}") from None

    def status(self) -> AgentStatus:
        """``GET /api/v1/status`` as a record."""
        return AgentStatus.from_json(self.get("/api/v1/status"))

    def models(self) -> list[dict[str, Any]]:
        """``GET /api/v1/models``: each model with its latency percentiles and availability."""
        return list(self.get("/api/v1/models")["models"])


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
