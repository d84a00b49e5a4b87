"""The kserve_v2 probe against a server that answers like MLServer 1.7, on loopback.

MLServer's model metadata lists no versions (``"versions": []``) and, without a signature in
``model-settings.json``, no inputs or outputs; every inference answer names the version that
served it (``"model_version": "v1"``). The probe takes that version as the model's artifact, and
probes a model without a signature for readiness only instead of calling it down.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.cli.status_view import render_status
from agent.config import ModelConfig
from agent.health.incidents import IncidentBook
from agent.health.monitor import ModelMonitor
from probes.base import ProbeTarget
from probes.httpclient import HttpClient
from probes.kserve_v2 import READINESS_ONLY_NOTE, KServeV2Probe
from storage.records import AgentStatus, Event
from storage.writer import Writer
from tests.unit.test_model_probes import serving

MODEL = "iris"
INPUTS = [{"name": "predict", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
SIGNATURE = [{"name": "predict", "datatype": "FP32", "shape": [-1, 4]}]
# MLServer 1.7's metadata for a model without a signature, in the two forms it takes: the
# keys left out, or present and empty.
UNSIGNED = {
    "absent": {"name": MODEL, "versions": [], "platform": "", "parameters": {}},
    "empty": {
        "name": MODEL,
        "versions": [],
        "platform": "",
        "inputs": [],
        "outputs": [],
        "parameters": {"content_type": "np"},
    },
}


@dataclass
class FakeMLServer:
    """What the fake serves; tests change it between runs."""

    metadata: dict[str, Any] = field(default_factory=lambda: dict(UNSIGNED["absent"]))
    model_version: str = "v1"
    ready: bool = True
    infer_bodies: list[Any] = field(default_factory=list)

    def app(self) -> web.Application:
        async def ok(_: web.Request) -> web.Response:
            return web.Response(status=200)

        async def model_ready(request: web.Request) -> web.Response:
            if request.match_info["name"] != MODEL:
                return self._unknown(request)
            # MLServer answers a loaded but unready model with a bare 400.
            return web.Response(status=200 if self.ready else 400)

        async def metadata(request: web.Request) -> web.Response:
            if request.match_info["name"] != MODEL:
                return self._unknown(request)
            return web.json_response(self.metadata)

        async def infer(request: web.Request) -> web.Response:
            if request.match_info["name"] != MODEL:
                return self._unknown(request)
            body = await request.json()
            self.infer_bodies.append(body)
            inputs = body.get("inputs") if isinstance(body, dict) else None
            if not isinstance(inputs, list) or not inputs or inputs[0].get("shape") != [1, 4]:
                return web.json_response(
                    {"error": "1 validation error for InferenceRequest"}, status=400
                )
            return web.json_response(
                {
                    "model_name": MODEL,
                    "model_version": self.model_version,
                    "id": str(uuid.uuid4()),
                    "parameters": {},
                    "outputs": [
                        {
                            "name": "predict",
                            "shape": [1, 1],
                            "datatype": "INT64",
                            "parameters": {"content_type": "np"},
                            "data": [0],
                        }
                    ],
                }
            )

        app = web.Application()
        app.router.add_get("/v2/health/live", ok)
        app.router.add_get("/v2/health/ready", ok)
        app.router.add_get("/v2/models/{name}/ready", model_ready)
        app.router.add_get("/v2/models/{name}", metadata)
        app.router.add_post("/v2/models/{name}/infer", infer)
        return app

    @staticmethod
    def _unknown(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response({"error": f"Model {name} with version  not found"}, status=404)


@pytest.fixture
def fake() -> FakeMLServer:
    return FakeMLServer()


@pytest.fixture
async def url(fake: FakeMLServer) -> AsyncIterator[str]:
    async with serving(fake.app()) as base:
        yield base


def probe(url: str, **options: Any) -> KServeV2Probe:
    KServeV2Probe.check_options(options)
    return KServeV2Probe(ProbeTarget(name=MODEL, url=url, timeout_s=5.0, options=options))


def monitor(url: str, **options: Any) -> ModelMonitor:
    KServeV2Probe.check_options(options)
    return ModelMonitor(ModelConfig(name=MODEL, protocol="kserve_v2", url=url, canary=options))


# --- the version of the inference answer is the artifact ---------------------------------------


async def test_answer_version_is_the_artifact_and_a_new_one_a_deployment(
    fake: FakeMLServer, url: str, session: HttpClient
) -> None:
    mon = monitor(url, inputs=INPUTS)
    events: list[Event] = []
    run = await mon.run_once(session)
    mon.record(run, events.append)
    assert run.ok, run
    assert (mon.probe.info["artifact"], mon.probe.info["artifact_kind"]) == ("v1", "model_version")
    assert mon.probe.info["versions"] == []
    mon.record(await mon.run_once(session), events.append)  # same version: nothing new
    fake.model_version = "v2"
    mon.record(await mon.run_once(session), events.append)
    artifacts = [e for e in events if e.kind == "model.artifact"]
    assert [(e.data["artifact"], e.data["previous_artifact"]) for e in artifacts] == [
        ("v1", None),
        ("v2", "v1"),
    ]
    assert artifacts[1].data["artifact_kind"] == "model_version"
    assert mon.state == "up"


async def test_metadata_versions_win_over_the_answer_version(
    fake: FakeMLServer, url: str, session: HttpClient
) -> None:
    fake.metadata = {**UNSIGNED["absent"], "versions": ["3"], "platform": "triton"}
    p = probe(url, inputs=INPUTS)
    assert (await p.run(session)).ok
    assert (p.info["artifact"], p.info["artifact_kind"]) == ("3", "model_versions")
    fake.model_version = "v9"  # the answer's version changes, the listed one does not
    assert (await p.run(session)).ok
    assert (p.info["artifact"], p.info["artifact_kind"]) == ("3", "model_versions")


# --- no signature, no configured inputs: readiness only ----------------------------------------


@pytest.mark.parametrize("shape", sorted(UNSIGNED))
async def test_no_signature_is_probed_for_readiness_only(
    shape: str, fake: FakeMLServer, url: str, session: HttpClient
) -> None:
    fake.metadata = dict(UNSIGNED[shape])
    p = probe(url)
    run = await p.run(session)
    assert (run.ok, run.category, run.error, run.e2e_ms) == (True, "ok", None, None), run
    assert set(run.phases_ms) == {"live", "server_ready", "ready", "metadata"}
    assert fake.infer_bodies == []  # no canary was sent
    assert p.info["note"] == READINESS_ONLY_NOTE
    assert "no inference canary" in p.info["note"]
    assert "[model.canary] inputs" in p.info["note"]
    assert "artifact" not in p.info  # nothing answered, so no version is known


async def test_readiness_only_asks_ready_even_when_check_ready_is_off(
    fake: FakeMLServer, url: str, session: HttpClient
) -> None:
    p = probe(url, check_ready=False, check_health=False)
    run = await p.run(session)
    assert run.ok and set(run.phases_ms) == {"metadata", "ready"}, run
    fake.ready = False
    run = await p.run(session)
    assert (run.ok, run.category, run.status) == (False, "http_error", 400), run
    assert "not ready" in (run.error or "")


async def test_readiness_only_model_is_up_when_ready_and_down_when_not(
    fake: FakeMLServer, url: str, session: HttpClient, tmp_path: Path
) -> None:
    writer = Writer(tmp_path / "v.db")
    writer.start()
    events: list[Event] = []
    try:
        book = IncidentBook(writer, events.append)
        mon = monitor(url)
        for _ in range(3):
            mon.record(await mon.run_once(session), events.append, book)
        assert mon.state == "up" and book.open_incidents() == []
        fake.ready = False
        for _ in range(2):
            run = await mon.run_once(session)
            mon.record(run, events.append, book)
        assert (run.category, mon.state) == ("http_error", "down")
        [incident] = book.open_incidents()
        assert incident.kind == "model_down" and "not ready" in (incident.cause or "")
    finally:
        writer.close()


async def test_status_shows_the_readiness_only_note(url: str, session: HttpClient) -> None:
    mon = monitor(url)
    mon.record(await mon.run_once(session), lambda _: None)
    status = AgentStatus("gpu1", "1.0", 0, 1, models=(mon.status(),))
    text = render_status(status, now_ms=1, model_details={MODEL: {"info": mon.probe.info}})
    [line] = [line for line in text.splitlines() if line.lstrip().startswith("note ")]
    assert line == f"  note {MODEL}: {READINESS_ONLY_NOTE}"
    row = next(line for line in text.splitlines() if line.lstrip().startswith(MODEL))
    assert "UP" in row
    # A model with nothing to note has no note line.
    plain = render_status(status, now_ms=1, model_details={MODEL: {"info": {"platform": ""}}})
    assert "note " not in plain


async def test_a_signature_appearing_later_brings_the_canary_back(
    fake: FakeMLServer, url: str, session: HttpClient
) -> None:
    p = probe(url)
    assert (await p.run(session)).ok and "note" in p.info
    fake.metadata = {**UNSIGNED["empty"], "inputs": SIGNATURE}
    run = await p.run(session)
    assert run.ok and "infer" in run.phases_ms and run.e2e_ms is not None, run
    assert "note" not in p.info and p.info["artifact"] == "v1"
    assert [b["inputs"][0]["shape"] for b in fake.infer_bodies] == [[1, 4]]


# --- configured inputs: the canary still runs --------------------------------------------------


async def test_configured_inputs_run_the_inference(
    fake: FakeMLServer, url: str, session: HttpClient
) -> None:
    expect = {"name": "predict", "shape": [1, 1], "data": [0]}
    p = probe(url, inputs=INPUTS, expect_output=expect)
    run = await p.run(session)
    assert (run.ok, run.category, run.status) == (True, "ok", 200), run
    assert "infer" in run.phases_ms and run.e2e_ms is not None
    assert fake.infer_bodies == [{"inputs": INPUTS}]
    assert "note" not in p.info and p.info["artifact"] == "v1"
    # The canary really is judged: a wrong expectation is wrong_output, not readiness.
    wrong = probe(url, inputs=INPUTS, expect_output={**expect, "data": [2]})
    assert (await wrong.run(session)).category == "wrong_output"
