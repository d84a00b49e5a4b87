"""Reading a model server's own Prometheus ``/metrics`` page: parse it, keep the wanted samples.

Parsing is prometheus-client's text parser. It also reads what OpenMetrics adds (``# EOF``,
``# UNIT``, exemplars, timestamps), which servers built on prometheus-client may send. Its
errors do not say where the text went wrong, so :func:`parse_exposition` finds the first line
that fails on its own and names it.

Which samples a wanted name keeps (:func:`select`):

- the samples of that exact name (``vllm:num_requests_running``);
- ``<name>_total`` too: the parser renames counters declared without the suffix (Triton's
  ``nv_inference_count`` arrives as ``nv_inference_count_total``), and people write counters
  either way. These are kept under the name as configured;
- ``<name>_sum`` and ``<name>_count`` of a histogram or summary. Buckets, quantiles and
  ``_created`` samples are dropped unless named exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # prometheus-client's parser loads on the first scrape, not in every agent
    from prometheus_client.metrics_core import Metric

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LINE_QUOTE = 120
_AGGREGATES = ("_sum", "_count")
_SPLIT_TYPES = frozenset({"histogram", "summary"})


class ExpositionError(ValueError):
    """The body is not in the Prometheus text format.

    Attributes:
        line: 1-based number of the first line that does not parse, or None when no line
            fails on its own (the lines contradict each other).
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class Value:
    """One kept sample: the name it is kept under, the server's labels, the value."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


_PARSER_FAULTS = Exception
"""What prometheus-client's parser raises on a bad page. Mostly ValueError, but not only: a
timestamp of 400 digits is an OverflowError from its division (issue 17, found by
tests/fuzz). A server's page is untrusted input to a third-party parser, so any exception it
raises means the page is not the text format, never a crashed probe."""


def parse_exposition(text: str) -> list[Metric]:
    """Parse a text exposition into metric families.

    Raises:
        ExpositionError: naming the first bad line and quoting it.
    """
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return list(text_string_to_metric_families(text))
    except _PARSER_FAULTS as exc:
        raise _locate(text, exc) from None


def _locate(text: str, exc: Exception) -> ExpositionError:
    from prometheus_client.parser import text_string_to_metric_families

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            list(text_string_to_metric_families(line + "\n"))
        except _PARSER_FAULTS as line_exc:
            shown = line if len(line) <= _LINE_QUOTE else line[: _LINE_QUOTE - 1] + "…"
            return ExpositionError(
                f"not Prometheus text format: line {number}: {shown!r} ({line_exc})", number
            )
    return ExpositionError(f"not Prometheus text format: {exc}")


def select(
    families: Iterable[Metric], wanted: Iterable[str], labels: Mapping[str, str] | None = None
) -> list[Value]:
    """The samples kept for ``wanted`` names (see the module docs), in exposition order.

    Args:
        labels: only samples carrying all these label values are kept (``model_name``, ...).
        wanted: metric names as configured.

    Non-finite values (NaN, ±Inf) are dropped: they are not measurements a series can hold.
    """
    want = frozenset(wanted)
    need = dict(labels or {})
    out: list[Value] = []
    for family in families:
        for sample in family.samples:
            name = _kept_as(sample.name, family, want)
            value = _finite(sample.value)
            if name is None or value is None:
                continue
            if "quantile" in sample.labels and family.type == "summary":
                continue
            if any(sample.labels.get(k) != v for k, v in need.items()):
                continue
            out.append(Value(name, tuple(sorted(sample.labels.items())), value))
    return out


def _finite(value: float) -> float | None:
    """The sample's value as a finite float, else None. The parser reads an integer as an int,
    of any size: one of 400 digits made math.isfinite raise OverflowError (issue 17, found by
    tests/fuzz)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _kept_as(sample_name: str, family: Metric, want: frozenset[str]) -> str | None:
    if sample_name in want:
        return sample_name
    if sample_name.endswith("_total") and sample_name[:-6] in want:
        return sample_name[:-6]
    for suffix in _AGGREGATES:
        base = sample_name.removesuffix(suffix)
        if base != sample_name and base in want and family.type in _SPLIT_TYPES:
            return sample_name
    return None


def total(values: Iterable[Value], name: str) -> float | None:
    """Sum of the kept values of ``name`` over all its label sets; None when it has none.

    A histogram or summary named by its base name counts by its ``_sum``.
    """
    found = [v.value for v in values if v.name == name]
    if not found:
        found = [v.value for v in values if v.name == name + "_sum"]
    if not found:
        return None
    try:
        return math.fsum(found)
    except OverflowError:  # finite values whose sum is not (two of 1e308): what + gives, inf
        return sum(found)


def series_name(metric: str) -> str:
    """The Vigil series a scraped metric is stored as: ``model.metric.<name>``, ``:`` -> ``_``.

    Series names are dotted paths; a Prometheus name may hold ``:``, which reads as a separator
    in many tools, so only letters, digits and ``_`` are kept.
    """
    return "model.metric." + re.sub(r"[^A-Za-z0-9_]", "_", metric)
