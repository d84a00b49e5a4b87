"""Stored series as Prometheus series: the metric name and the labels they are sent with.

The names are the ones ``/metrics`` gives the same series (:func:`agent.serve.metrics.
metric_name`): ``vigil_`` + the series name with every character other than a letter, digit or
``_`` turned into ``_`` (``host.mem.used_bytes`` -> ``vigil_host_mem_used_bytes``), and where a
series has an unlabelled total beside labelled parts, the parts are ``..._by_<keys>``
(``vigil_host_cpu_percent_by_core{core="0"}``), so a query reads the same whether Prometheus
scraped the agent or received its samples.

Every series gets ``instance = [agent] host`` (a label of its own by that name is kept as
``exported_instance``, as Prometheus does for scraped series) and the host's labels: ``job =
"vigil"``, under the ``[agent] labels`` (region, team, env...), under ``[remote_write] labels``;
those yield to a series' own label of the same name, as Prometheus's ``external_labels`` do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from agent.serve.metrics import metric_name

Labels = tuple[tuple[str, str], ...]

_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A Prometheus-valid label name for a series' label key."""
    name = _INVALID_LABEL.sub("_", key)
    return "_" + name if not name or name[0].isdigit() else name


def prometheus_labels(
    name: str,
    own: Iterable[tuple[str, str]],
    *,
    by_parts: bool,
    host: str,
    extra: Labels,
) -> Labels:
    """The label set (``__name__`` included, sorted by name) one series is sent with.

    Args:
        name: the stored series name (``host.cpu.percent``).
        own: the series' own labels, in stored (sorted) order.
        by_parts: a series of this name without labels exists, so this labelled one is sent
            as ``..._by_<keys>`` (as ``/metrics`` names it).
        host: the agent's host name, the ``instance`` label.
        extra: the configured labels (``job``...).
    """
    own = list(own)
    metric = metric_name(name)
    if own and by_parts:
        metric += "_by_" + "_".join(k for k, _ in own)
    out = {label_name(k): v for k, v in own}
    if "instance" in out:
        out["exported_instance"] = out.pop("instance")
    for k, v in extra:
        out.setdefault(k, v)
    out["instance"] = host
    out["__name__"] = metric
    return tuple(sorted(out.items()))


class Catalog:
    """Series ids and the label sets they are sent with, grown as series appear."""

    def __init__(self, host: str, extra: Labels) -> None:
        self.host = host
        self.extra = extra
        self.last_id = 0
        """The highest series id seen (ids only grow)."""
        self._stored: dict[int, tuple[str, Labels]] = {}
        self._totals: set[str] = set()
        self._sent: dict[int, Labels] = {}

    @property
    def ids(self) -> list[int]:
        """Every series id known, in order."""
        return list(self._stored)

    def add(self, rows: Iterable[tuple[int, str, str]]) -> None:
        """Learn series: (id, name, labels JSON) as ``series`` holds them."""
        totals_before = len(self._totals)
        for sid, name, labels_text in rows:
            try:
                parsed = json.loads(labels_text)
            except ValueError:
                parsed = {}
            own = tuple(sorted((str(k), str(v)) for k, v in dict(parsed).items()))
            self._stored[sid] = (name, own)
            if not own:
                self._totals.add(name)
            self.last_id = max(self.last_id, sid)
        if len(self._totals) != totals_before:
            self._sent.clear()  # a new total renames its name's labelled parts (`_by_`)

    def labels(self, sid: int) -> Labels:
        """The label set series ``sid`` is sent with."""
        found = self._sent.get(sid)
        if found is None:
            name, own = self._stored[sid]
            found = self._sent[sid] = prometheus_labels(
                name, own, by_parts=name in self._totals, host=self.host, extra=self.extra
            )
        return found
