"""The KServe V2 probe: a valid server (health, model readiness, metadata, an infer answer) with
one field of its JSON mutated, or one endpoint's status changed, served from loopback.

The documented outcome is a :class:`storage.records.ProbeRun` (``protocol_error`` for a
malformed answer, ``wrong_output`` for NaN or a mismatch, ``http_error`` for a refusal), never
an exception, within the timeout, storable. The same answers also go through the pure parts
(``generate_inputs``, ``compare_output``) with their documented ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.base import ProbeTarget
from probes.kserve_v2 import KServeV2Probe, compare_output, generate_inputs
from tests.fuzz.canned import Canned, CannedServer
from tests.fuzz.mutate import json_bytes, mutate
from tests.fuzz.probe_support import PROBE_TIMEOUT_S, run_probe
from tests.fuzz.support import budget, deadline, outcome

METADATA = {
    "name": "m",
    "versions": ["1"],
    "platform": "onnxruntime_onnx",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}
ANSWER = {
    "model_name": "m",
    "model_version": "1",
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]}],
}
EXPECT = {"name": "y", "shape": [1, 3], "data": [0.1, 0.2, 0.7], "tolerance": 0.001}
OPTIONS: list[dict[str, Any]] = [
    {},
    {"expect_output": EXPECT},
    {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
        "expect_output": EXPECT,
        "check_health": False,
    },
    {"check_ready": False, "max_latency": "1s"},
]
PATHS = {
    "live": "/v2/health/live",
    "ready": "/v2/health/ready",
    "model_ready": "/v2/models/m/ready",
    "metadata": "/v2/models/m",
    "infer": "/v2/models/m/infer",
}


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    canned = CannedServer()
    yield canned
    canned.close()


@budget(ci=150, fuzz=5_000)
@given(data=st.data())
def test_kserve_probe_on_a_mutated_server(server: CannedServer, data: st.DataObject) -> None:
    options = data.draw(st.sampled_from(OPTIONS), label="options")
    label, doc = data.draw(mutate({"metadata": METADATA, "answer": ANSWER}, toml=False))
    statuses = dict.fromkeys(PATHS, 200)
    if data.draw(st.integers(0, 5), label="status change?") == 0:
        which = data.draw(st.sampled_from(sorted(PATHS)), label="endpoint")
        statuses[which] = data.draw(st.sampled_from([204, 400, 404, 500, 503]), label="status")
    bodies = {"metadata": json_bytes(doc.get("metadata")), "infer": json_bytes(doc.get("answer"))}
    server.routes = {
        path: Canned(bodies.get(key, b""), statuses[key]) for key, path in PATHS.items()
    }
    probe = KServeV2Probe(ProbeTarget("m", server.url, PROBE_TIMEOUT_S, options))
    run_probe(probe, "kserve probe", f"kserve {label} {statuses} {bodies}"[:2000])


@budget(ci=150, fuzz=10_000)
@given(data=st.data())
def test_kserve_pure_parts_on_mutated_documents(data: st.DataObject) -> None:
    """``generate_inputs`` on mutated metadata and ``compare_output`` on mutated outputs:
    a result or the documented ValueError."""
    label, doc = data.draw(mutate({"metadata": METADATA, "answer": ANSWER}, toml=False))
    metadata, answer = doc.get("metadata"), doc.get("answer")
    with deadline(f"kserve parts {label} {doc}"[:2000]):
        try:
            if isinstance(metadata, dict):
                generate_inputs(metadata)
            outcome("kserve metadata", "accepted")
        except ValueError:
            outcome("kserve metadata", "refused")
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if isinstance(outputs, list) and all(isinstance(o, dict) for o in outputs):
            verdict = compare_output(outputs, EXPECT)
            outcome("kserve compare", "accepted" if verdict is None else "mismatch")
