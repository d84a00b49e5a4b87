"""Where alerts go, as the config declares it: label matchers and routes (plain data).

Matchers are Alertmanager's: ``label=value``, ``label!=value``, ``label=~regex``,
``label!~regex``, regexes anchored at both ends. Silences (:mod:`agent.alerting.silences`) and
routes share them. A :class:`Route` says which alerts go to one channel and how they are grouped
and timed; the grouping itself is :mod:`agent.alerting.router`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from storage.alerts import AlertRow
from storage.text import compile_regex

OPS = ("=~", "!~", "!=", "=")
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition."""

    label: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"expected an operator among {' '.join(OPS)}, got {self.op!r}")
        if self.op in ("=~", "!~"):
            try:
                compile_regex(self.value)
            except ValueError as exc:
                raise ValueError(f"bad regex {self.value!r}: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``model=~llama.*`` -> Matcher; a quoted value (``model="a b"``) loses its quotes.

        Raises:
            ValueError: naming the text and what was expected.
        """
        m = _MATCHER.fullmatch(text)
        if not m:
            raise ValueError(
                f"expected LABEL=VALUE, LABEL!=VALUE, LABEL=~RE or LABEL!~RE, got {text!r}"
            )
        label, op, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return cls(label, op, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` pass (a missing label is the empty string, as in Alertmanager)."""
        got = labels.get(self.label, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        found = re.fullmatch(self.value, got) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"


@dataclass(frozen=True, slots=True)
class Route:
    """Which alerts go to one channel, and how they are grouped and timed (seconds)."""

    channel: str
    severities: tuple[str, ...] = ()
    """Empty: every severity."""
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ("alertname",)
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    send_resolved: bool = True
    name: str = ""

    @property
    def key(self) -> str:
        """The route's name, or its channel's."""
        return self.name or self.channel

    def accepts(self, row: AlertRow) -> bool:
        """Whether an alert goes this way."""
        if self.severities and row.severity not in self.severities:
            return False
        labels = dict(row.labels)
        return all(m.matches(labels) for m in self.matchers)
