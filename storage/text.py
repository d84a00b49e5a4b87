"""Text that came from models, agents or config is data: make it safe to print.

Terminal control sequences (ANSI escapes, carriage returns, bells) in a model name or an error
text could repaint or retitle an operator's terminal; they are replaced before printing. Rich
markup is a separate concern, handled where Rich renders (the TUI escapes or uses Text).
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

UNSAFE_IN_NAMES = (
    r"\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
)
"""A regex character class (without brackets) of what a name must not hold: C0 and C1 controls,
DEL, line and paragraph separators, and the invisible formatting characters (soft hyphen,
zero-width ones, bidi embeddings, overrides and isolates, BOM) that make a name look like
another or show it reversed."""


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters (ESC included) replaced by a visible "?".

    Args:
        keep_newlines: keep ``\\n`` (for multi-line logs); otherwise it becomes a space.
    """
    s = str(text)
    if not keep_newlines:
        s = s.replace("\n", " ")
    return _CONTROL.sub("?", s)


_HEX = re.compile(r"(?:sha256:)?[0-9a-fA-F]{16,}")


def short_artifact(value: object, width: int = 24) -> str:
    """A model artifact's identity, short: a hash's first 12 digits; a path or repository's
    end, which is the part that differs (``…/Llama-3.1-8B-Instruct``)."""
    text = str(value)
    if _HEX.fullmatch(text):
        return text.removeprefix("sha256:")[:12]
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a regular expression a person wrote (config, API request).

    Raises:
        ValueError: saying why it is no regular expression ``re`` can build: ``re.error``'s
            reason, or the OverflowError of a repeat count over ``re``'s limit
            (``a{9999999999}``) or the RecursionError of deeply nested groups, which used to
            escape the callers' ``except re.error`` as crashes.
    """
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(str(exc)) from None
    except (OverflowError, RecursionError) as exc:
        raise ValueError(f"cannot compile it ({type(exc).__name__}: {exc})") from None
