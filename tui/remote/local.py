"""Finding the agent that runs on this host, from the files it writes into its data directory
(``vigil tui`` without ``--url``)."""

from __future__ import annotations

import json
from pathlib import Path

from tui.remote.errors import AgentError

__all__ = ["API_FILE", "TOKEN_FILE", "discover_local"]

API_FILE = "api.json"
TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret


def discover_local(data_dir: Path) -> tuple[str, str]:
    """Find the agent running on this host from the files it writes into its data directory.

    Args:
        data_dir: The agent's ``data_dir`` (holding ``api.json`` and ``api-token``).

    Returns:
        ``(url, token)``.

    Raises:
        AgentError: naming the missing or malformed file.
    """
    api_path = data_dir / API_FILE
    token_path = data_dir / TOKEN_FILE
    try:
        info = json.loads(api_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AgentError(
            f"{api_path} not found: is the agent running with data_dir {data_dir}?", "config"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentError(f"cannot read {api_path}: {exc}", "config") from exc
    if not isinstance(info, dict) or not isinstance(info.get("url"), str) or not info["url"]:
        raise AgentError(f'{api_path} has no "url" string', "config")
    try:
        lines = token_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise AgentError(f"{token_path} not found: the agent writes it at start", "config") from exc
    except OSError as exc:
        # Usually permissions: the file is 0600 and owned by the agent's user.
        raise AgentError(f"cannot read {token_path}: {exc.strerror or exc}", "config") from exc
    token = lines[0].strip() if lines else ""
    if not token:
        raise AgentError(f"{token_path} is empty", "config")
    return info["url"], token
