"""JSON from outside (a client's request, a model server's answer), read without crashing.

``json.loads`` raises ``RecursionError``, not ``ValueError``, for arrays or objects nested
deeper than the interpreter's recursion limit: a few thousand ``[`` are enough. Every caller
that refuses bad JSON catches ``ValueError``, so that input escaped them: a 500 from the API,
an exception out of a probe that promises never to raise (issue 17, found by tests/fuzz).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads_json"]


def loads_json(data: str | bytes) -> Any:
    """``json.loads(data)``.

    Raises:
        ValueError: not JSON (``JSONDecodeError``, ``UnicodeDecodeError``), or nested too
            deeply to read.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
