"""The kserve_v2, http and tcp probes against real servers on loopback.

The KServe V2 server is the demo app in-process (the real handlers and the real ONNX model);
the failure modes come from small aiohttp apps that misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from aiohttp import web

from agent.demo import MODEL_PATH
from agent.demo.server import DemoModel, build_app
from probes.base import PROBES, OptionError, Probe, ProbeTarget
from probes.http import HttpProbe
from probes.httpclient import HttpClient
from probes.kserve_v2 import KServeV2Probe, generate_inputs
from probes.registry import probe_for
from probes.tcp import TcpProbe
from storage.records import ProbeRun

MODEL = "iris"
SAMPLE = [[5.1, 3.5, 1.4, 0.2]]
INPUTS = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": SAMPLE}]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def app_with(routes: Mapping[str, Handler]) -> web.Application:
    """An app answering every method on each path with its handler."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    return app


@pytest.fixture(scope="module")
def demo_model() -> DemoModel:
    return DemoModel(str(MODEL_PATH), MODEL)


@pytest.fixture
async def demo_url(demo_model: DemoModel) -> AsyncIterator[str]:
    async with serving(build_app(demo_model)) as url:
        yield url


def golden(data: list[list[float]]) -> list[float]:
    """What the model itself says, straight from onnxruntime."""
    sess = ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.array(data, dtype=np.float32)})[0]
    return [float(x) for x in out.reshape(-1)]


def kserve(url: str, timeout_s: float = 5.0, **options: Any) -> KServeV2Probe:
    KServeV2Probe.check_options(options)
    return KServeV2Probe(ProbeTarget(name=MODEL, url=url, timeout_s=timeout_s, options=options))


def http(url: str, timeout_s: float = 5.0, **options: Any) -> HttpProbe:
    HttpProbe.check_options(options)
    return HttpProbe(ProbeTarget(name="web", url=url, timeout_s=timeout_s, options=options))


def assert_failed(run: ProbeRun, category: str, *fragments: str) -> None:
    assert (run.ok, run.category) == (False, category), run
    for fragment in fragments:
        assert fragment in (run.error or ""), run.error


# --- kserve_v2 against the demo server ----------------------------------------------------


async def test_kserve_ok_with_generated_inputs(demo_url: str, session: HttpClient) -> None:
    probe = kserve(demo_url)
    first = await probe.run(session)
    assert (first.ok, first.category, first.status, first.error) == (True, "ok", 200, None)
    assert set(first.phases_ms) == {"live", "server_ready", "ready", "metadata", "infer"}
    assert first.e2e_ms is not None and first.e2e_ms == first.phases_ms["infer"] > 0
    assert probe.info["platform"] == "onnxruntime_onnx"
    assert probe.info["inputs"][0]["name"] == "input"
    assert (probe.info["artifact"], probe.info["artifact_kind"]) == ("1", "model_versions")
    second = await probe.run(session)
    assert second.ok, second


async def test_kserve_ok_with_golden_expectation(demo_url: str, session: HttpClient) -> None:
    expect = {"name": "probabilities", "shape": [1, 3], "data": golden(SAMPLE)}
    run = await kserve(
        demo_url, inputs=INPUTS, expect_output=expect, check_ready=False, check_health=False
    ).run(session)
    assert run.ok, run
    assert set(run.phases_ms) == {"metadata", "infer"}


@pytest.mark.parametrize(
    ("expect", "fragment"),
    [
        ({"name": "probabilities", "data": [1.0, 0.0, 0.0]}, "differ"),
        ({"name": "probabilities", "shape": [3]}, "shape"),
        ({"name": "logits"}, "'logits' missing"),
    ],
)
async def test_kserve_wrong_output(
    demo_url: str, session: HttpClient, expect: dict[str, Any], fragment: str
) -> None:
    run = await kserve(demo_url, inputs=INPUTS, expect_output=expect).run(session)
    assert_failed(run, "wrong_output", fragment)
    assert run.status == 200 and run.e2e_ms is not None


async def test_kserve_tolerance_allows_small_differences(
    demo_url: str, session: HttpClient
) -> None:
    near = [x + 0.001 for x in golden(SAMPLE)]
    expect = {"name": "probabilities", "data": near, "tolerance": 0.01}
    assert (await kserve(demo_url, inputs=INPUTS, expect_output=expect).run(session)).ok
    strict = {**expect, "tolerance": 1e-5}
    run = await kserve(demo_url, inputs=INPUTS, expect_output=strict).run(session)
    assert_failed(run, "wrong_output")


async def test_kserve_slow(demo_url: str, session: HttpClient) -> None:
    run = await kserve(demo_url, max_latency="0.0001ms").run(session)
    assert_failed(run, "slow", "max_latency")
    assert run.status == 200


async def test_kserve_bad_inputs_is_http_error_with_server_text(
    demo_url: str, session: HttpClient
) -> None:
    inputs = [{**INPUTS[0], "name": "pixels"}]
    run = await kserve(demo_url, inputs=inputs).run(session)
    assert_failed(run, "http_error", "HTTP 400", "unknown input 'pixels'")
    assert run.status == 400


async def test_kserve_unknown_model_fails_ready_check(demo_url: str, session: HttpClient) -> None:
    run = await kserve(demo_url, model="resnet").run(session)
    assert_failed(run, "http_error", "not ready", "404")
    assert run.status == 404


async def test_kserve_refused(closed_port: int, session: HttpClient) -> None:
    run = await kserve(f"http://127.0.0.1:{closed_port}").run(session)
    assert_failed(run, "refused")
    assert run.e2e_ms is None


async def test_kserve_timeout(session: HttpClient) -> None:
    never = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    async with serving(app_with({"/{tail:.*}": hang})) as url:
        start = time.monotonic()
        run = await kserve(url, timeout_s=0.2).run(session)
        took = time.monotonic() - start
        never.set()  # let the handler finish so the server shuts down at once
    assert_failed(run, "timeout")
    assert 0.15 < took < 2.0


async def test_kserve_timeout_budget_covers_the_whole_run(session: HttpClient) -> None:
    never = asyncio.Event()

    async def ready(_: web.Request) -> web.Response:
        await asyncio.sleep(0.15)  # most of the budget goes to the ready check
        return web.Response()

    async def hang(_: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    routes = {f"/v2/models/{MODEL}/ready": ready, f"/v2/models/{MODEL}/infer": hang}
    async with serving(app_with(routes)) as url:
        start = time.monotonic()
        run = await kserve(url, timeout_s=0.3, inputs=INPUTS, check_health=False).run(session)
        took = time.monotonic() - start
        never.set()
    assert_failed(run, "timeout")
    assert "ready" in run.phases_ms
    assert took < 0.3 + 0.5


async def test_kserve_http_error(session: HttpClient) -> None:
    async def boom(_: web.Request) -> web.Response:
        return web.Response(status=500, text="CUDA error: out of memory " + "x" * 1000)

    async with serving(app_with({"/{tail:.*}": boom})) as url:
        run = await kserve(url, check_ready=False, inputs=INPUTS).run(session)
    assert_failed(run, "http_error", "HTTP 500", "out of memory")
    assert run.status == 500 and len(run.error or "") < 400


async def test_kserve_not_ready(session: HttpClient) -> None:
    async def unavailable(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async with serving(app_with({"/{tail:.*}": unavailable})) as url:
        server = await kserve(url, inputs=INPUTS).run(session)
        model = await kserve(url, inputs=INPUTS, check_health=False).run(session)
    assert_failed(server, "http_error", "server not live", "503")
    assert set(server.phases_ms) == {"live"}
    assert_failed(model, "http_error", f"model {MODEL!r} not ready", "503")
    assert set(model.phases_ms) == {"ready"}


async def test_kserve_server_live_but_not_ready(session: HttpClient) -> None:
    async def live(_: web.Request) -> web.Response:
        return web.Response()

    async def loading(_: web.Request) -> web.Response:
        return web.json_response({"error": "models still loading"}, status=503)

    routes = {"/v2/health/live": live, "/v2/health/ready": loading}
    async with serving(app_with(routes)) as url:
        run = await kserve(url, inputs=INPUTS).run(session)
    assert_failed(run, "http_error", "server not ready", "models still loading")
    assert set(run.phases_ms) == {"live", "server_ready"}


async def test_kserve_metadata_failure_with_configured_inputs_is_not_a_failure(
    demo_url: str, session: HttpClient
) -> None:
    # A gateway in front of the model may pass only /infer: the configured canary still runs.
    async def gone(_: web.Request) -> web.Response:
        return web.Response(status=404)

    async def infer(request: web.Request) -> web.Response:
        async with session.post(
            f"{demo_url}/v2/models/{MODEL}/infer", data=await request.read()
        ) as r:
            return web.Response(body=await r.read(), content_type="application/json")

    routes = {f"/v2/models/{MODEL}": gone, f"/v2/models/{MODEL}/infer": infer}
    async with serving(app_with(routes)) as url:
        probe = kserve(url, inputs=INPUTS, check_ready=False, check_health=False)
        run = await probe.run(session)
    assert run.ok, run
    # No metadata: the answer's model_version is the artifact (the same "1" the metadata lists).
    assert probe.info == {"artifact": "1", "artifact_kind": "model_version"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("<html>gateway</html>", "not JSON"),
        ('{"model_name": "iris"}', "no outputs"),
        ('{"outputs": [{"name": "probabilities"}]}', "malformed output"),
    ],
)
async def test_kserve_protocol_error(session: HttpClient, body: str, fragment: str) -> None:
    async def infer(_: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html")

    async with serving(app_with({"/{tail:.*}": infer})) as url:
        run = await kserve(url, check_ready=False, inputs=INPUTS).run(session)
    assert_failed(run, "protocol_error", fragment)
    assert run.status == 200


async def test_kserve_nan_output_is_wrong(session: HttpClient) -> None:
    async def infer(_: web.Request) -> web.Response:
        return web.Response(
            text='{"outputs": [{"name": "p", "shape": [2], "datatype": "FP32",'
            ' "data": [0.5, NaN]}]}',
            content_type="application/json",
        )

    async with serving(app_with({"/{tail:.*}": infer})) as url:
        run = await kserve(url, check_ready=False, inputs=INPUTS).run(session)
    assert_failed(run, "wrong_output", "NaN")


async def test_kserve_bad_metadata_is_protocol_error(session: HttpClient) -> None:
    async def meta(_: web.Request) -> web.Response:
        return web.json_response(
            {"name": MODEL, "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}
        )

    async with serving(app_with({"/{tail:.*}": meta})) as url:
        run = await kserve(url, check_ready=False).run(session)
    assert_failed(run, "protocol_error", "BYTES", "configure canary inputs")


def test_generate_inputs_from_signature() -> None:
    inputs = generate_inputs(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                {"name": "ids", "datatype": "INT64", "shape": [2, -1]},
            ]
        }
    )
    assert inputs == [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.0, 0.1, 0.2, 0.3]},
        {"name": "ids", "shape": [2, 1], "datatype": "INT64", "data": [0, 1]},
    ]


# --- http ---------------------------------------------------------------------------------


async def test_http_ok_and_status_checks(demo_url: str, session: HttpClient) -> None:
    live = f"{demo_url}/v2/health/live"
    run = await http(live).run(session)
    assert (run.ok, run.category, run.status) == (True, "ok", 200)
    assert run.e2e_ms is not None
    assert set(run.phases_ms) == {"resolve_ms", "connect_ms", "processing_ms", "transfer_ms"}
    assert (await http(live, expect_status=["2xx"]).run(session)).ok
    assert (await http(live, expect_status=200).run(session)).ok
    assert_failed(await http(live, expect_status=[204]).run(session), "http_error", "HTTP 200")
    missing = await http(f"{demo_url}/v2/models/nope").run(session)
    assert_failed(missing, "http_error", "HTTP 404", "not found")


async def test_http_body_regex(demo_url: str, session: HttpClient) -> None:
    url = f"{demo_url}/v2/models/{MODEL}"
    assert (await http(url, expect_body_regex=r'"platform":\s*"onnxruntime_onnx"').run(session)).ok
    run = await http(url, expect_body_regex="tensorrt_plan").run(session)
    assert_failed(run, "wrong_output", "tensorrt_plan")
    assert run.status == 200


async def test_http_slow(demo_url: str, session: HttpClient) -> None:
    run = await http(f"{demo_url}/v2/health/live", max_latency="0.0001ms").run(session)
    assert_failed(run, "slow")


async def test_http_sends_method_headers_and_body(session: HttpClient) -> None:
    async def echo(request: web.Request) -> web.Response:
        text = await request.text()
        return web.Response(text=f"{request.method} {request.headers.get('X-Canary')} {text}")

    async with serving(app_with({"/echo": echo})) as url:
        run = await http(
            f"{url}/echo",
            method="post",
            headers={"X-Canary": "vigil"},
            body="ping",
            expect_body_regex=r"^POST vigil ping$",
        ).run(session)
    assert run.ok, run


async def test_http_redirects_are_not_followed(session: HttpClient) -> None:
    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async with serving(app_with({"/": moved})) as url:
        run = await http(f"{url}/").run(session)
        assert (run.ok, run.status) == (True, 302)
        strict = await http(f"{url}/", expect_status=["2xx"]).run(session)
    assert_failed(strict, "http_error", "HTTP 302")


async def test_http_server_error_and_accepting_it(session: HttpClient) -> None:
    async def boom(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async with serving(app_with({"/": boom})) as url:
        assert_failed(await http(f"{url}/").run(session), "http_error", "HTTP 500: boom")
        assert (await http(f"{url}/", expect_status=["5xx", 404]).run(session)).ok


async def test_http_refused_and_timeout(closed_port: int, session: HttpClient) -> None:
    assert_failed(await http(f"http://127.0.0.1:{closed_port}/").run(session), "refused")
    never = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    async with serving(app_with({"/": hang})) as url:
        run = await http(f"{url}/", timeout_s=0.2).run(session)
        never.set()
    assert_failed(run, "timeout")


# --- tcp ----------------------------------------------------------------------------------


def tcp(url: str, **options: Any) -> TcpProbe:
    TcpProbe.check_options(options)
    return TcpProbe(ProbeTarget(name="port", url=url, timeout_s=2.0, options=options))


async def test_tcp_ok_and_refused(demo_url: str, closed_port: int, session: HttpClient) -> None:
    port = demo_url.rsplit(":", 1)[1]
    run = await tcp(f"tcp://127.0.0.1:{port}").run(session)
    assert (run.ok, run.category) == (True, "ok"), run
    assert run.e2e_ms is not None and run.phases_ms == {"connect": run.e2e_ms}
    assert_failed(
        await tcp(f"tcp://127.0.0.1:{closed_port}").run(session), "refused", str(closed_port)
    )
    assert_failed(
        await tcp(f"tcp://127.0.0.1:{port}", max_latency="0.00001ms").run(session), "slow"
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:80", "tcp://127.0.0.1", "tcp://:80"])
async def test_tcp_bad_url_is_protocol_error(url: str, session: HttpClient) -> None:
    assert_failed(await tcp(url).run(session), "protocol_error", "tcp://host:port")


# --- options and registry -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "options", "key"),
    [
        (KServeV2Probe, {"modle": "x"}, "modle"),
        (KServeV2Probe, {"model": 3}, "model"),
        (KServeV2Probe, {"inputs": []}, "inputs"),
        (
            KServeV2Probe,
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]},
            "inputs",
        ),
        (KServeV2Probe, {"inputs": [{**INPUTS[0], "shape": [1, 5]}]}, "inputs"),
        (KServeV2Probe, {"inputs": [{**INPUTS[0], "shape": "1x4"}]}, "inputs"),
        (KServeV2Probe, {"expect_output": {"data": [1]}}, "expect_output"),
        (KServeV2Probe, {"expect_output": {"name": "p", "data": ["a"]}}, "expect_output"),
        (KServeV2Probe, {"expect_output": {"name": "p", "tolerance": -1}}, "expect_output"),
        (KServeV2Probe, {"expect_output": {"name": "p", "tol": 1}}, "expect_output"),
        (KServeV2Probe, {"max_latency": "fast"}, "max_latency"),
        (KServeV2Probe, {"max_latency": True}, "max_latency"),
        (KServeV2Probe, {"check_ready": "yes"}, "check_ready"),
        (HttpProbe, {"method": "FETCH"}, "method"),
        (HttpProbe, {"headers": {"X-A": 1}}, "headers"),
        (HttpProbe, {"body": {"a": 1}}, "body"),
        (HttpProbe, {"expect_status": ["2xy"]}, "expect_status"),
        (HttpProbe, {"expect_status": [700]}, "expect_status"),
        (HttpProbe, {"expect_status": []}, "expect_status"),
        (HttpProbe, {"expect_body_regex": "("}, "expect_body_regex"),
        (HttpProbe, {"max_latency": 0}, "max_latency"),
        (HttpProbe, {"max_latency": "0s"}, "max_latency"),
        (HttpProbe, {"max_latency": 250}, "max_latency"),
        (TcpProbe, {"max_latency": -1}, "max_latency"),
        (TcpProbe, {"method": "GET"}, "method"),
    ],
)
def test_option_errors_name_the_key(cls: type[Probe], options: dict[str, Any], key: str) -> None:
    with pytest.raises(OptionError) as info:
        cls.check_options(options)
    assert info.value.field == key
    assert "expected" in str(info.value)


def test_valid_options_pass() -> None:
    KServeV2Probe.check_options(
        {
            "model": "m",
            "inputs": INPUTS,
            "max_latency": "50ms",
            "check_ready": False,
            "expect_output": {
                "name": "p",
                "shape": [1, 3],
                "data": [[0.1, 0.2, 0.7]],
                "tolerance": 0.01,
            },
        }
    )
    HttpProbe.check_options(
        {
            "method": "HEAD",
            "headers": {"A": "b"},
            "body": "",
            "expect_status": [200, "3xx"],
            "expect_body_regex": "ok",
            "max_latency": "12.5ms",
        }
    )


def test_registry() -> None:
    assert probe_for("kserve_v2") is KServeV2Probe
    assert probe_for("http") is HttpProbe
    assert probe_for("tcp") is TcpProbe
    assert {"kserve_v2", "http", "tcp"} <= set(PROBES)
    with pytest.raises(KeyError, match=r"known: .*http"):
        probe_for("grpc")


async def test_kserve_a_new_model_version_is_a_new_artifact(session: HttpClient) -> None:
    versions = ["1"]

    async def meta(_: web.Request) -> web.Response:
        return web.json_response({"name": MODEL, "versions": versions, "platform": "x"})

    async def infer(_: web.Request) -> web.Response:
        return web.json_response({"outputs": [{"name": "p", "shape": [1], "data": [1.0]}]})

    routes = {f"/v2/models/{MODEL}": meta, f"/v2/models/{MODEL}/infer": infer}
    async with serving(app_with(routes)) as url:
        probe = kserve(url, inputs=INPUTS, check_ready=False, check_health=False)
        assert (await probe.run(session)).ok
        first = probe.info["artifact"]
        versions.append("2")  # Triton loaded version 2 beside 1
        assert (await probe.run(session)).ok
    assert (first, probe.info["artifact"]) == ("1", "1,2")
