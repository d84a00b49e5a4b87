"""The Prometheus text exposition format (0.0.4), written by the agent itself.

What ``/metrics`` needs from prometheus-client is small: gauge and counter families built at
scrape time, two labelled histograms and a labelled counter kept across scrapes, and the text
they render to. Importing prometheus-client for that costs the agent ~30 modules (its
multiprocess mode, wsgiref, its parsers) for its whole life; this module is standard library
only. The output is what prometheus-client 0.2x renders for the same metrics (``_created``
series included), checked against its parser in the unit tests and scraped by a real
Prometheus in the integration tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of the text format; every Prometheus version reads it."""

Sample = tuple[str, tuple[tuple[str, str], ...], float]
"""(full sample name, labels as (name, value) pairs in order, value)."""


def format_value(value: float) -> str:
    """A number as Prometheus writes it (Go's shortest float: ``+Inf``, ``NaN``, ``1e+06``).

    ``repr`` except where Go switches to an exponent sooner than Python does, so bucket bounds
    (``le``) read the same as prometheus-client's and as queries that name them expect.
    """
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


@dataclass
class Family:
    """One metric family: its name, type, help and samples."""

    name: str
    type: str
    documentation: str
    labels: tuple[str, ...] = ()
    samples: list[Sample] = field(default_factory=list)

    def add(self, values: Sequence[str], value: float, suffix: str = "") -> None:
        """Add a sample with these label values (in the order of ``labels``)."""
        self.samples.append(
            (self.name + suffix, tuple(zip(self.labels, values, strict=True)), value)
        )


def gauge(
    name: str, documentation: str, labels: Sequence[str] = (), value: float | None = None
) -> Family:
    """A gauge family; with ``value``, one sample without labels."""
    fam = Family(name, "gauge", documentation, tuple(labels))
    if value is not None:
        fam.add((), value)
    return fam


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Family:
    """A counter family built at scrape time; samples are ``<name>_total``."""
    return Family(name, "counter", documentation, tuple(labels))


def add_total(fam: Family, values: Sequence[str], value: float) -> None:
    """A counter family's sample (``_total``)."""
    fam.add(values, value, "_total")


class LabelledCounter:
    """A counter per label set, kept across scrapes (as prometheus-client's ``Counter``)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}
        self._created: dict[tuple[str, ...], float] = {}

    def inc(self, *values: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the label set ``values``."""
        if values not in self.values:
            self.values[values] = 0.0
            self._created[values] = time.time()
        self.values[values] += amount

    def remove(self, *values: str) -> None:
        """Forget one label set; a missing one is no error."""
        self.values.pop(values, None)
        self._created.pop(values, None)

    def collect(self) -> Iterator[Family]:
        """The ``_total`` family, then the ``_created`` gauge family."""
        total = counter(self.name, self.documentation, self.labels)
        created = gauge(self.name + "_created", self.documentation, self.labels)
        for values, value in self.values.items():
            add_total(total, values, value)
            created.add(values, self._created[values])
        yield total
        yield created


class LabelledHistogram:
    """A histogram per label set, kept across scrapes (as prometheus-client's ``Histogram``)."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Iterable[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        bounds = [float(b) for b in buckets]
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        # Per label set: counts per bucket (not cumulative), sum, created.
        self._series: dict[tuple[str, ...], tuple[list[int], list[float], float]] = {}

    def observe(self, *values: str, value: float) -> None:
        """Count one observation ``value`` for the label set ``values``."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = ([0] * len(self.bounds), [0.0], time.time())
        counts, total, _ = series
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
                break
        total[0] += value

    def remove(self, *values: str) -> None:
        """Forget one label set; a missing one is no error."""
        self._series.pop(values, None)

    def collect(self) -> Iterator[Family]:
        """The histogram family (buckets, count, sum), then the ``_created`` gauge family."""
        hist = Family(self.name, "histogram", self.documentation, self.labels)
        created = gauge(self.name + "_created", self.documentation, self.labels)
        for values, (counts, total, made) in self._series.items():
            labels = tuple(zip(self.labels, values, strict=True))
            running = 0
            for bound, n in zip(self.bounds, counts, strict=True):
                running += n
                le = (("le", format_value(bound)),)
                hist.samples.append((self.name + "_bucket", labels + le, float(running)))
            hist.samples.append((self.name + "_count", labels, float(running)))
            hist.samples.append((self.name + "_sum", labels, total[0]))
            created.add(values, made)
        yield hist
        yield created


def render(families: Iterable[Family]) -> bytes:
    """The families in the text format, as prometheus-client's ``generate_latest`` writes it."""
    out: list[str] = []
    for fam in families:
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out.append(f"# HELP {name} {_escape_help(fam.documentation)}\n")
        out.append(f"# TYPE {name} {fam.type}\n")
        for sample_name, labels, value in fam.samples:
            if labels:
                # Sorted by name, as prometheus-client writes them.
                text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels))
                out.append(f"{sample_name}{{{text}}} {format_value(value)}\n")
            else:
                out.append(f"{sample_name} {format_value(value)}\n")
    return "".join(out).encode("utf-8")
