"""Parameters the API's routes share: the error answer, and times given as epoch
milliseconds, ``now`` or a duration relative to now."""

from __future__ import annotations

from agent.serve.httpmessages import HttpError, Response, json_response, whole_number
from storage.units import parse_duration

__all__ = ["error", "parse_time"]


def error(status: int, message: str) -> Response:
    """``{"error": message}`` with ``status``: every refusal of the API looks like this."""
    return json_response({"error": message}, status=status)


def parse_time(value: str | None, default_ms: int, now: int, field: str) -> int:
    """Epoch milliseconds, ``now``, or a duration relative to now (``-5m`` or ``5m`` ago)."""
    if value is None or value == "":
        return default_ms
    if value == "now":
        return now
    number = whole_number(value.removeprefix("-"))
    if number is not None:
        return -number if value.startswith("-") else number
    try:
        return now - int(abs(parse_duration(value)) * 1000)
    except ValueError:
        raise HttpError(
            400,
            f"{field}: expected epoch milliseconds, 'now' or a "
            f"relative duration such as -5m, got {value!r}",
        ) from None
