"""What a model server says about its own version, for the serving-environment fingerprint.

One small GET per model, on the agent's own HTTP client, by the model's protocol:

- ``openai``: vLLM ``GET /version`` (``{"version"}``), else llama.cpp ``GET /props``
  (``build_info``, ``model_path``), else TGI ``GET /info`` (TGI also serves the OpenAI API).
- ``tgi``: ``GET /info``: ``version``, ``model_id``, ``sha`` (the server build's commit),
  ``model_sha``.
- ``ollama``: ``GET /api/version``.
- ``kserve_v2``: ``GET /v2`` server metadata: ``name``, ``version``, ``extensions``.

Other protocols have nothing to ask (a known empty answer). A server that cannot be reached,
times out or answers 5xx leaves its items *unknown* (their last values are kept: a server that
is restarting has not lost its version); one that answers but has none of the routes (404)
is a known answer with no items. Values are data from the server: made printable and bounded.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from probes.hostenv import clean
from probes.http1 import WireError
from probes.httpclient import HttpClient

__all__ = ["ANSWER_BYTES", "server_items"]

ANSWER_BYTES = 256 * 1024
"""Read of one answer (llama.cpp's ``/props`` carries its chat template)."""

Parse = Callable[[Any], dict[str, str] | None]


class _Unknown(Exception):
    """The server did not give an answer this time."""


async def server_items(
    client: HttpClient,
    protocol: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
) -> dict[str, str] | None:
    """The ``server.*`` items of one model; None when the server gave no answer this time."""
    base = url.rstrip("/")
    routes: list[tuple[str, Parse]]
    if protocol == "openai":
        base = base.removesuffix("/v1")
        routes = [("/version", _vllm), ("/props", _llama_cpp), ("/info", _tgi)]
    elif protocol == "tgi":
        routes = [("/info", _tgi)]
    elif protocol == "ollama":
        routes = [("/api/version", _ollama)]
    elif protocol == "kserve_v2":
        routes = [("/v2", _kserve)]
    else:
        return {}
    ask = _asker(client, dict(headers or {}), timeout_s)
    try:
        for path, parse in routes:
            body = await ask(base + path)
            if body is None:
                continue
            items = parse(body)
            if items is not None:
                return {k: clean(v) for k, v in items.items() if v not in (None, "")}
    except _Unknown:
        return None
    return {}


def _asker(
    client: HttpClient, headers: dict[str, str], timeout_s: float
) -> Callable[[str], Awaitable[Any]]:
    async def ask(url: str) -> Any:
        """The JSON answer of a GET; None for a 4xx or a body that is no JSON (this route is
        not the server's); :class:`_Unknown` when the server gave no answer."""
        try:
            async with client.get(url, headers=headers, timeout_s=timeout_s) as resp:
                if resp.status >= 500:
                    raise _Unknown
                if resp.status >= 300:
                    return None
                data = await resp.read(ANSWER_BYTES)
        except (WireError, TimeoutError, OSError) as exc:
            raise _Unknown from exc
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            return None

    return ask


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _vllm(body: Any) -> dict[str, str] | None:
    if not isinstance(body, dict) or _text(body.get("version")) is None:
        return None
    return {"server": "vllm", "server.version": body["version"]}


def _llama_cpp(body: Any) -> dict[str, str] | None:
    if not isinstance(body, dict) or not (
        "default_generation_settings" in body or "build_info" in body
    ):
        return None
    items = {"server": "llama.cpp"}
    for key, item in (("build_info", "server.version"), ("model_path", "server.model")):
        value = _text(body.get(key))
        if value:
            items[item] = value
    return items


def _tgi(body: Any) -> dict[str, str] | None:
    if not isinstance(body, dict) or _text(body.get("version")) is None:
        return None
    items = {"server": "tgi"}
    for key, item in (
        ("version", "server.version"),
        ("model_id", "server.model"),
        ("sha", "server.sha"),
        ("model_sha", "server.model_sha"),
    ):
        value = _text(body.get(key))
        if value:
            items[item] = value
    return items


def _ollama(body: Any) -> dict[str, str] | None:
    if not isinstance(body, dict) or _text(body.get("version")) is None:
        return None
    return {"server": "ollama", "server.version": body["version"]}


def _kserve(body: Any) -> dict[str, str] | None:
    if not isinstance(body, dict) or _text(body.get("name")) is None:
        return None
    items = {"server": body["name"]}
    version = _text(body.get("version"))
    if version:
        items["server.version"] = version
    ext = body.get("extensions")
    if isinstance(ext, list):
        items["server.extensions"] = ",".join(sorted(str(e) for e in ext if isinstance(e, str)))
    return items
