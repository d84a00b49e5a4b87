"""The route table of the agent's own HTTP server: methods and paths to handlers.

Patterns are paths whose segments are literal text, ``{name}`` (any one non-empty segment) or
``{name:regex}`` (one segment matching ``regex`` whole), as aiohttp wrote them. A request's path
is matched segment by segment after percent-decoding each segment on its own, so a ``%2F`` in
a model's name stays inside its segment. A GET route answers HEAD too (as aiohttp's
``add_get`` did). A path no route has is a 404; a path some route has under other methods is a
405 naming them in ``Allow``. Both are raised inside the middleware chain, so the API's bearer
check answers before either (a caller without a token learns nothing about the routes).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from agent.serve.httpmessages import HttpError, Request, Response, StreamResponse

Handler = Callable[[Request], Awaitable[Response | StreamResponse]]
Middleware = Callable[[Request, Handler], Awaitable[Response | StreamResponse]]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(.+))?\}")


@dataclass(frozen=True)
class _Segment:
    """One segment of a pattern: literal ``text``, or a parameter ``name`` (with ``regex``)."""

    text: str = ""
    name: str | None = None
    regex: re.Pattern[str] | None = None

    def match(self, segment: str) -> bool:
        if self.name is None:
            return segment == self.text
        if self.regex is not None:
            return self.regex.fullmatch(segment) is not None
        return segment != ""


@dataclass
class _Route:
    pattern: str
    segments: tuple[_Segment, ...]
    handlers: dict[str, Handler] = field(default_factory=dict)

    def bind(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The parameters when ``segments`` (decoded) fit this pattern, else None."""
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, segments, strict=True):
            if not want.match(got):
                return None
            if want.name is not None:
                params[want.name] = got
        return params


def _parse(pattern: str) -> tuple[_Segment, ...]:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern {pattern!r}: expected a path starting with /")
    out = []
    for part in pattern.split("/"):
        m = _PARAM.fullmatch(part)
        if m is not None:
            regex = re.compile(m.group(2)) if m.group(2) else None
            out.append(_Segment(name=m.group(1), regex=regex))
        elif "{" in part or "}" in part:
            raise ValueError(
                f"route pattern {pattern!r}: a parameter must be a whole segment, "
                f"{{name}} or {{name:regex}}, got {part!r}"
            )
        else:
            out.append(_Segment(text=part))
    return tuple(out)


def split_path(raw_path: str) -> list[str]:
    """A raw (percent-encoded) path's segments, each decoded on its own."""
    return [unquote(s) for s in raw_path.split("/")]


class Router:
    """Routes and the middlewares every request passes through (outermost first)."""

    def __init__(self, middlewares: Sequence[Middleware] = ()) -> None:
        self.middlewares = tuple(middlewares)
        self._static: dict[tuple[str, ...], _Route] = {}
        self._dynamic: list[_Route] = []
        self._by_pattern: dict[str, _Route] = {}

    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        """Route ``method`` on ``pattern`` to ``handler``.

        Raises:
            ValueError: the pattern is malformed, or the method already has a handler there.
        """
        method = method.upper()
        route = self._by_pattern.get(pattern)
        if route is None:
            segments = _parse(pattern)
            route = self._by_pattern[pattern] = _Route(pattern, segments)
            if all(s.name is None for s in segments):
                self._static[tuple(s.text for s in segments)] = route
            else:
                self._dynamic.append(route)
        if method in route.handlers:
            raise ValueError(f"{method} {pattern} is routed twice")
        route.handlers[method] = handler

    def add_get(self, pattern: str, handler: Handler) -> None:
        """GET (and HEAD) on ``pattern``."""
        self.add_route("GET", pattern, handler)

    def add_post(self, pattern: str, handler: Handler) -> None:
        """POST on ``pattern``."""
        self.add_route("POST", pattern, handler)

    def add_delete(self, pattern: str, handler: Handler) -> None:
        """DELETE on ``pattern``."""
        self.add_route("DELETE", pattern, handler)

    def resolve(self, method: str, raw_path: str) -> tuple[Handler, dict[str, str]]:
        """The handler for ``method`` on ``raw_path`` and its parameters; for a path or method
        nobody routes, a handler that raises the 404 or 405."""
        segments = split_path(raw_path)
        candidates: list[_Route] = []
        static = self._static.get(tuple(segments))
        if static is not None:
            candidates.append(static)
        candidates += self._dynamic
        allowed: set[str] = set()
        for route in candidates:
            params = route.bind(segments)
            if params is None:
                continue
            handler = route.handlers.get(method)
            if handler is None and method == "HEAD":
                handler = route.handlers.get("GET")
            if handler is not None:
                return handler, params
            allowed.update(route.handlers)
        if not allowed:
            return _raiser(HttpError(404, f"no such route: {unquote(raw_path)}")), {}
        if "GET" in allowed:
            allowed.add("HEAD")
        names = ", ".join(sorted(allowed))
        return _raiser(
            HttpError(
                405,
                f"method {method} is not allowed on {unquote(raw_path)}; allowed: {names}",
                {"Allow": names},
            )
        ), {}

    async def dispatch(self, request: Request) -> Response | StreamResponse:
        """Resolve ``request`` and run it through the middlewares to its handler."""
        handler, request.match_info = self.resolve(request.method, request.raw_path)
        for middleware in reversed(self.middlewares):
            handler = _wrap(middleware, handler)
        return await handler(request)


def _wrap(middleware: Middleware, inner: Handler) -> Handler:
    async def wrapped(request: Request) -> Response | StreamResponse:
        return await middleware(request, inner)

    return wrapped


def _raiser(error: HttpError) -> Handler:
    async def fail(request: Request) -> Response:
        raise error

    return fail
