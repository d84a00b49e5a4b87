"""Prometheus text parsing and the metrics scrape probe: a valid exposition (vLLM's families:
gauges, counters, a histogram, a summary) with one field mutated (a name, a label name or value,
a sample value or timestamp, a type, the help text), written out as text, or its framing
varied.

Documented outcomes: :func:`probes.promtext.parse_exposition` returns families or raises
:class:`~probes.promtext.ExpositionError` naming the line; ``select`` and ``total`` then never
raise; the scrape probe returns a storable :class:`storage.records.ProbeRun` and only finite
samples, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.base import ProbeTarget
from probes.promtext import ExpositionError, parse_exposition, select, total
from probes.scrape import PRESETS, MetricsScrapeProbe
from tests.fuzz.canned import Canned, CannedServer
from tests.fuzz.mutate import mutate
from tests.fuzz.probe_support import PROBE_TIMEOUT_S, cuts, run_probe
from tests.fuzz.support import budget, deadline, outcome

LABELS = {"model_name": "meta-llama/Llama-3.1-8B-Instruct"}
FAMILIES: list[dict[str, Any]] = [
    {
        "name": "vllm:num_requests_running",
        "type": "gauge",
        "help": "Number of requests in model execution batches.",
        "samples": [{"suffix": "", "labels": LABELS, "value": 2.0}],
    },
    {
        "name": "vllm:generation_tokens",
        "type": "counter",
        "help": "Number of generation tokens processed.",
        "samples": [{"suffix": "_total", "labels": LABELS, "value": 123456.0}],
    },
    {
        "name": "vllm:kv_cache_usage_perc",
        "type": "gauge",
        "help": "KV-cache usage. 1 means 100 percent usage.",
        "samples": [{"suffix": "", "labels": LABELS, "value": 0.25, "ts": 1_700_000_000_000}],
    },
    {
        "name": "vllm:time_to_first_token_seconds",
        "type": "histogram",
        "help": "Histogram of time to first token in seconds.",
        "samples": [
            {"suffix": "_bucket", "labels": {**LABELS, "le": "0.1"}, "value": 3.0},
            {"suffix": "_bucket", "labels": {**LABELS, "le": "+Inf"}, "value": 5.0},
            {"suffix": "_count", "labels": LABELS, "value": 5.0},
            {"suffix": "_sum", "labels": LABELS, "value": 0.75},
        ],
    },
    {
        "name": "rpc_duration_seconds",
        "type": "summary",
        "help": "A summary with a quantile.",
        "samples": [
            {"suffix": "", "labels": {"quantile": "0.5"}, "value": 0.01},
            {"suffix": "_count", "labels": {}, "value": 10.0},
            {"suffix": "_sum", "labels": {}, "value": 0.2},
        ],
    },
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _text(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value).replace("inf", "Inf")
    return str(value)


def exposition(families: Any, framing: str) -> str:
    """The families as Prometheus text; ``framing`` varies escaping and layout."""
    out = []
    for fam in families if isinstance(families, list) else [families]:
        if not isinstance(fam, dict):
            out.append(_text(fam))
            continue
        name = _text(fam.get("name", ""))
        if "help" in fam:
            out.append(f"# HELP {name} {_text(fam['help'])}")
        if "type" in fam:
            out.append(f"# TYPE {name} {_text(fam['type'])}")
        samples = fam.get("samples")
        for sample in samples if isinstance(samples, list) else [samples]:
            if not isinstance(sample, dict):
                out.append(_text(sample))
                continue
            labels = sample.get("labels")
            pairs = labels.items() if isinstance(labels, dict) else [("label", labels)]
            esc = (lambda v: v) if framing == "unescaped" else _escape
            body = ",".join(f'{_text(k)}="{esc(_text(v))}"' for k, v in pairs)
            line = f"{name}{_text(sample.get('suffix', ''))}{{{body}}} {_text(sample.get('value'))}"
            if "ts" in sample:
                line += f" {_text(sample['ts'])}"
            out.append(line)
    text = "\n".join(out) + "\n"
    if framing == "crlf":
        text = text.replace("\n", "\r\n")
    elif framing == "openmetrics":
        text += "# EOF\n"
    elif framing == "no-final-newline":
        text = text.rstrip("\n")
    elif framing == "blank-and-comments":
        text = "\n# a comment\n\n" + text.replace("\n", "\n\n")
    return text


FRAMINGS = st.sampled_from(
    ["plain"] * 6 + ["unescaped", "crlf", "openmetrics", "no-final-newline", "blank-and-comments"]
)
WANTED = [*PRESETS["vllm"].keep, PRESETS["vllm"].running, PRESETS["vllm"].tokens]


@budget(ci=200, fuzz=10_000)
@given(data=st.data())
def test_parse_exposition_on_mutated_text(data: st.DataObject) -> None:
    label, families = data.draw(mutate(FAMILIES, toml=False), label="mutation")
    text = exposition(families, data.draw(FRAMINGS, label="framing"))
    with deadline(f"parse_exposition {label} {text[:500]!r}"):
        try:
            parsed = parse_exposition(text)
        except ExpositionError as exc:
            assert str(exc)
            outcome("prometheus text", "refused")
            return
        kept = select(parsed, WANTED, LABELS if data.draw(st.booleans()) else None)
        assert all(math.isfinite(v.value) for v in kept)
        for name in WANTED:
            total(kept, name)
    outcome("prometheus text", "accepted")


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    canned = CannedServer()
    yield canned
    canned.close()


@budget(ci=100, fuzz=5_000)
@given(data=st.data())
def test_scrape_probe_on_a_mutated_page(server: CannedServer, data: st.DataObject) -> None:
    label, families = data.draw(mutate(FAMILIES, toml=False), label="mutation")
    body = exposition(families, data.draw(FRAMINGS, label="framing")).encode("utf-8", "replace")
    server.routes = {"/metrics": Canned(body, 200, "text/plain", data.draw(cuts(len(body))))}
    choices: list[dict[str, Any]] = [{"preset": "vllm"}, {"preset": "vllm", "labels": LABELS}]
    options = data.draw(st.sampled_from(choices), label="options")
    probe = MetricsScrapeProbe(ProbeTarget("m", f"{server.url}/metrics", PROBE_TIMEOUT_S, options))
    run_probe(probe, "metrics probe", f"metrics {label} {body[:500]!r}")
    assert all(math.isfinite(s.value) for s in probe.drain_samples())
