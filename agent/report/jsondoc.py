"""The JSON form of a report (host or fleet), one way for both."""

from __future__ import annotations

import json
from typing import Any

_JSON_CONTROL = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}
"""DEL and C1 controls (a raw CSI), which json.dumps leaves raw with ensure_ascii=False:
escaped so that ``cat report.json`` cannot drive a terminal; json.dumps escapes C0 itself."""


def json_document(doc: dict[str, Any]) -> str:
    """``doc`` as indented JSON with a final newline (no NaN; C1 controls escaped)."""
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
    return text.translate(_JSON_CONTROL) + "\n"
