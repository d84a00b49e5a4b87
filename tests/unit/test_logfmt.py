"""Agent log lines are logfmt: one line per event, values quoted so they parse back."""

from __future__ import annotations

import logging
import re
import sys

from agent.runtime.logfmt import LogfmtFormatter

FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def line(msg: str, *args: object, exc: bool = False) -> str:
    record = logging.LogRecord("vigil.test", logging.WARNING, __file__, 1, msg, args, None)
    if exc:
        try:
            raise ValueError('bad "q"\nvalue')
        except ValueError:
            record.exc_info = sys.exc_info()
    return LogfmtFormatter(timestamps=False).format(record)


def parse(text: str) -> dict[str, str]:
    out = {}
    for key, raw in FIELD.findall(text):
        unquoted = raw[1:-1] if raw.startswith('"') else raw
        out[key] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), unquoted)
    return out


def test_fields_parse_back_whatever_the_message_holds() -> None:
    msg = "probe failed model=llama error='bad \"q\" value' path=C:\\x\nforged=1"
    text = line("%s", msg)
    assert "\n" not in text
    assert parse(text) == {"level": "warning", "logger": "vigil.test", "msg": msg}


def test_plain_words_stay_unquoted_and_empty_is_quoted() -> None:
    assert line("started") == "level=warning logger=vigil.test msg=started"
    assert line("") == 'level=warning logger=vigil.test msg=""'


def test_timestamps_and_exceptions_stay_on_one_line() -> None:
    record = logging.LogRecord("vigil.test", logging.INFO, __file__, 1, "x", (), None)
    assert re.match(
        r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info", LogfmtFormatter().format(record)
    )
    text = line("crashed", exc=True)
    assert "\n" not in text and "exc=" in text and "ValueError" in text
