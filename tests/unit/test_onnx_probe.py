"""The onnx probe against real onnxruntime models in a real worker process.

The models are built with the ``onnx`` package into tmp_path (tests/onnx_models.py): golden
outputs are recorded from one model and checked against a deliberately changed one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.cli import main as cli_main
from agent.config import ConfigError, load_config
from probes.base import OptionError, ProbeTarget
from probes.onnx import OnnxProbe
from probes.onnx_client import GoldenInputError, OnnxError, record_golden_async
from probes.onnx_file import scan_opsets
from probes.registry import probe_for
from tests import onnx_models

MakeProbe = Callable[..., OnnxProbe]


def live_workers() -> list[int]:
    """Pids of ONNX worker processes this test process started that are still alive."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "probes.onnx_worker" in child.cmdline() and child.status() != "zombie":
                out.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
async def make_probe() -> AsyncIterator[MakeProbe]:
    """Builds probes on ``file://`` models and closes them all after the test."""
    made: list[OnnxProbe] = []

    def make(path: Path, timeout: float = 30.0, **options: Any) -> OnnxProbe:
        OnnxProbe.check_options(options)
        p = OnnxProbe(ProbeTarget("m", f"file://{path}", timeout, options))
        made.append(p)
        return p

    yield make
    for p in made:
        await p.close()
    assert live_workers() == []


async def test_registered_under_onnx() -> None:
    assert probe_for("onnx") is OnnxProbe


async def test_golden_match_is_ok_with_metadata_and_percentiles(
    tmp_path: Path, make_probe: MakeProbe
) -> None:
    model = onnx_models.linear(tmp_path / "m.onnx")
    golden = tmp_path / "golden.json"
    recorded = await record_golden_async(model, None, golden)
    assert recorded["outputs"]["y"] == json.loads(golden.read_text())["outputs"]["y"]

    probe = make_probe(model, golden=str(golden), iterations=7)
    first = await probe.run(None)
    assert first.ok and first.category == "ok", first.error
    assert first.error is None and "load" in first.phases_ms
    p = first.phases_ms
    assert 0 < p["p50"] <= p["p95"] <= p["p99"] and first.e2e_ms == p["p50"]
    samples = probe.drain_samples()
    assert [s.name for s in samples] == ["probe.onnx.iteration_ms"] * 7
    stamps = [s.ts_ms for s in samples]
    assert stamps == sorted(set(stamps)), "one sample per iteration, none overwriting another"

    info = probe.info
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert info["sha256"] == digest == recorded["sha256"]
    assert info["size_bytes"] == model.stat().st_size
    assert info["opset"] == {"ai.onnx": onnx_models.OPSET}
    assert info["ir_version"] == onnx_models.IR_VERSION
    assert info["producer"] == onnx_models.PRODUCER
    assert info["inputs"] == [{"name": "x", "type": "tensor(float)", "shape": ["batch", 4]}]
    assert info["outputs"] == [{"name": "y", "type": "tensor(float)", "shape": ["batch", 3]}]
    assert info["providers"] == ["CPUExecutionProvider"]
    assert "reloaded_at" not in info
    json.dumps(info)  # served by the API as it is

    pid = probe.worker_pid
    second = await probe.run(None)
    assert second.ok and "load" not in second.phases_ms
    assert probe.worker_pid == pid, "the worker is reused between runs"


async def test_opset_scan_reads_every_domain(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    graph = onnx_models.helper.make_graph(
        [onnx_models.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx_models.helper.make_tensor_value_info("x", onnx_models.TensorProto.FLOAT, [1])],
        [onnx_models.helper.make_tensor_value_info("y", onnx_models.TensorProto.FLOAT, [1])],
    )
    onnx_models._save(graph, path, opsets={"ai.onnx.ml": 3})
    assert scan_opsets(str(path)) == (8, {"ai.onnx": 17, "ai.onnx.ml": 3})


async def test_replaced_model_file_is_reloaded_and_judged_against_the_golden(
    tmp_path: Path, make_probe: MakeProbe
) -> None:
    model = onnx_models.linear(tmp_path / "m.onnx")
    golden = tmp_path / "golden.json"
    await record_golden_async(model, None, golden)
    probe = make_probe(model, golden=str(golden))
    assert (await probe.run(None)).ok
    old_pid, old_sha = probe.worker_pid, probe.info["sha256"]

    # A deployment swaps the file atomically, as deploy tools do.
    onnx_models.linear(tmp_path / "changed.onnx", scale=1.5)
    os.replace(tmp_path / "changed.onnx", model)
    run = await probe.run(None)
    assert run.category == "wrong_output" and not run.ok
    assert run.error is not None
    assert run.error.startswith("output 'y': 3 of 3 values out of tolerance")
    assert "worst at [0, 2]" in run.error and "expected 0.84" in run.error, run.error
    assert run.e2e_ms is not None and run.phases_ms["p95"] > 0  # still timed
    assert probe.worker_pid != old_pid, "a changed file gets a fresh worker"
    assert probe.info["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest() != old_sha
    assert probe.info["reloaded_at"] >= run.ts_ms

    onnx_models.linear(tmp_path / "back.onnx")
    os.replace(tmp_path / "back.onnx", model)
    assert (await probe.run(None)).ok
    assert probe.info["sha256"] == old_sha


async def test_nan_and_inline_expectations_are_wrong_output(
    tmp_path: Path, make_probe: MakeProbe
) -> None:
    nan = make_probe(onnx_models.nan_output(tmp_path / "nan.onnx"))
    run = await nan.run(None)
    assert run.category == "wrong_output"
    assert run.error == "output 'y' holds NaN at [0, 0] (1 of 4 values)"

    model = onnx_models.linear(tmp_path / "m.onnx")
    shape = make_probe(model, expect_outputs={"y": [0.52, 0.68, 0.84]})
    run = await shape.run(None)
    assert run.category == "wrong_output" and run.error == (
        "output 'y' has shape [1, 3], expected [3]"
    )
    missing = make_probe(model, expect_outputs={"z": [[1.0]]})
    assert "output 'z' missing" in ((await missing.run(None)).error or "")
    close_enough = make_probe(model, expect_outputs={"y": [[0.52, 0.68, 0.84]]}, atol=1e-6)
    assert (await close_enough.run(None)).ok


@pytest.mark.parametrize("content", [b"not a model at all", "truncated"])
async def test_unloadable_file_is_protocol_error_until_replaced(
    tmp_path: Path, make_probe: MakeProbe, content: bytes | str
) -> None:
    good = onnx_models.linear(tmp_path / "good.onnx")
    model = tmp_path / "m.onnx"
    data = good.read_bytes()
    model.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    probe = make_probe(model)
    run = await probe.run(None)
    assert run.category == "protocol_error"
    assert run.error is not None and run.error.startswith(f"cannot load {model}: ")
    assert probe.info["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert "inputs" not in probe.info
    assert probe.worker_pid is None and live_workers() == []

    os.replace(good, model)
    assert (await probe.run(None)).ok


async def test_killed_worker_is_protocol_error_and_the_next_run_recovers(
    tmp_path: Path, make_probe: MakeProbe
) -> None:
    probe = make_probe(onnx_models.linear(tmp_path / "m.onnx"))
    assert (await probe.run(None)).ok
    pid = probe.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # what the OOM killer or a native crash looks like

    run = await probe.run(None)
    assert run.category == "protocol_error"
    assert run.error is not None and run.error.startswith("worker died: signal SIGKILL (exit -9)")
    assert probe.worker_pid is None

    again = await probe.run(None)
    assert again.ok and probe.worker_pid not in (None, pid)
    assert "reloaded_at" not in probe.info, "the same file in a new worker is no reload"


async def test_missing_model_file_is_refused(tmp_path: Path, make_probe: MakeProbe) -> None:
    run = await make_probe(tmp_path / "gone.onnx").run(None)
    assert run.category == "refused"
    assert run.error == f"model file unavailable: No such file or directory: {tmp_path}/gone.onnx"


async def test_slower_than_max_latency_is_slow(tmp_path: Path, make_probe: MakeProbe) -> None:
    probe = make_probe(onnx_models.slow(tmp_path / "slow.onnx"), iterations=3, max_latency="1ms")
    run = await probe.run(None)
    assert run.category == "slow" and not run.ok
    assert run.error is not None and "over max_latency (on p95) (1 ms)" in run.error
    assert run.phases_ms["p95"] > 1.0


async def test_timeout_kills_the_worker(tmp_path: Path, make_probe: MakeProbe) -> None:
    # 1000 iterations of milliseconds each cannot finish within 0.5 s.
    probe = make_probe(onnx_models.slow(tmp_path / "slow.onnx"), timeout=0.5, iterations=1000)
    await probe.preload()  # loading has its own budget; this test times the canary
    pid = probe.worker_pid
    assert pid is not None and live_workers() == [pid]
    run = await probe.run(None)
    assert run.category == "timeout"
    assert run.error == "ONNX worker did not finish 1000 iteration(s) within 0.5s; killed"
    assert probe.worker_pid is None and not psutil.pid_exists(pid)


async def test_a_run_that_cannot_wait_for_the_load_leaves_it_going(
    tmp_path: Path, make_probe: MakeProbe
) -> None:
    # Starting a Python process and importing onnxruntime takes far longer than 1 ms.
    probe = make_probe(onnx_models.linear(tmp_path / "m.onnx"), timeout=0.001)
    run = await probe.run(None)
    assert run.category == "timeout" and run.error is not None
    assert run.error.startswith("model still loading (load_timeout 60s)")

    probe.target = dataclasses.replace(probe.target, timeout_s=30.0)
    run = await probe.run(None)
    assert run.ok, run.error
    assert len(live_workers()) == 1, "the second run used the first run's load"


async def test_memory_cap_fails_the_run_not_the_agent(
    tmp_path: Path, make_probe: MakeProbe
) -> None:
    # 128 MiB a run: over a 256 MB cap once the runtime's own ~200 MB are counted.
    model = onnx_models.allocating(tmp_path / "big.onnx", floats=1 << 25)
    capped = make_probe(model, max_memory_mb=256, iterations=1)
    run = await capped.run(None)
    assert run.category == "protocol_error" and run.error is not None
    assert run.error.startswith("run failed: out of memory (max_memory_mb=256)"), run.error
    assert capped.worker_pid is None, "a worker that ran out of memory is replaced"

    roomy = make_probe(model, max_memory_mb=2048, iterations=1)
    assert (await roomy.run(None)).ok


async def test_inputs_are_generated_from_the_signature(
    tmp_path: Path, make_probe: MakeProbe
) -> None:
    model = onnx_models.typed(tmp_path / "typed.onnx")
    golden = await record_golden_async(model, None, tmp_path / "g.json")
    f = golden["inputs"]["f"]
    assert [[round(v, 6) for v in row] for row in f] == [[0.0, 0.1, 0.2]]  # batch -> 1
    assert golden["inputs"]["i"] == [0, 1]
    assert golden["inputs"]["b"] == [False, True]
    assert golden["outputs"]["b_out"] == [False, True]
    assert (await make_probe(model).run(None)).ok


async def test_configured_inputs_that_do_not_fit_keep_the_worker(
    tmp_path: Path, make_probe: MakeProbe
) -> None:
    model = onnx_models.linear(tmp_path / "m.onnx")
    wrong_shape = make_probe(model, inputs={"x": [[1.0, 2.0, 3.0]]})
    run = await wrong_shape.run(None)
    assert run.category == "protocol_error" and run.error is not None
    assert run.error.startswith("run failed: InvalidArgument")
    pid = wrong_shape.worker_pid
    assert pid is not None, "a request error is the config's fault; the session is fine"
    assert (await wrong_shape.run(None)).category == "protocol_error"
    assert wrong_shape.worker_pid == pid

    wrong_name = make_probe(model, inputs={"input": [[1.0, 2.0, 3.0, 4.0]]})
    run = await wrong_name.run(None)
    assert run.error == (
        "run failed: inputs do not match the model: unknown ['input'], missing ['x']; "
        "model inputs: ['x']"
    )
    right = make_probe(model, inputs={"x": [[1, 2, 3, 4]]}, expect_outputs={"y": [[6.1, 7.2, 8.3]]})
    assert (await right.run(None)).ok


async def test_close_while_loading_leaves_no_worker(tmp_path: Path, make_probe: MakeProbe) -> None:
    probe = make_probe(onnx_models.linear(tmp_path / "m.onnx"))
    loading = asyncio.create_task(probe.preload())
    while probe._loading is None:  # until the load task exists
        await asyncio.sleep(0)
    await probe.close()
    with pytest.raises((asyncio.CancelledError, Exception)):
        await loading
    assert live_workers() == []
    run = await probe.run(None)
    assert run.category == "protocol_error" and run.error == "the probe is closed"
    assert live_workers() == []


async def test_record_golden_refuses_bad_models_and_inputs(tmp_path: Path) -> None:
    with pytest.raises(GoldenInputError, match="no such model file"):
        await record_golden_async(tmp_path / "none.onnx", None, tmp_path / "g.json")
    model = onnx_models.linear(tmp_path / "m.onnx")
    with pytest.raises(GoldenInputError, match="inputs do not match the model"):
        await record_golden_async(model, {"nope": [1.0]}, tmp_path / "g.json")
    with pytest.raises(OnnxError, match="refusing to record a broken output: output 'y' holds NaN"):
        await record_golden_async(onnx_models.nan_output(tmp_path / "n.onnx"), None, tmp_path / "g")
    assert not (tmp_path / "g.json").exists() and not (tmp_path / "g").exists()


# --- vigil probe record-golden (in-process; tests/integration runs the real command) -------


def test_record_golden_command_reuses_a_golden_files_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx_models.linear(tmp_path / "m.onnx")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert cli_main(["probe", "record-golden", "--model", str(model), "-o", str(first)]) == 0
    # After a deliberate model change, re-recording from the old golden keeps its inputs.
    argv = ["probe", "record-golden", "--model", str(model), "--inputs", str(first)]
    assert cli_main([*argv, "-o", str(second)]) == 0
    assert json.loads(second.read_text())["inputs"] == json.loads(first.read_text())["inputs"]
    out = capsys.readouterr().out
    assert "input x: shape [1, 4]" in out and f'golden = "{second}"' in out


def test_record_golden_command_refuses_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx_models.linear(tmp_path / "m.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe not an onnx model")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    misfit = tmp_path / "misfit.json"
    misfit.write_text(json.dumps({"x": [[1, 2, 3]]}))
    out = str(tmp_path / "out.json")
    cases = [
        (["--inputs", str(bad_json), "-o", out], "is not JSON"),
        (["--inputs", str(tmp_path / "no.json"), "-o", out], "cannot read"),
        (["--inputs", str(not_object), "-o", out], "expected a JSON object of input name"),
        (["--inputs", str(misfit), "-o", out], "InvalidArgument"),
        (["-o", str(tmp_path / "no" / "dir.json")], "does not exist"),
        (["--timeout", "0", "-o", out], "--timeout: expected seconds > 0"),
        (["--max-memory-mb", "64", "-o", out], "--max-memory-mb: expected at least 256"),
    ]
    for args, message in [*cases, (["--model", str(garbage), "-o", out], "not an ONNX model")]:
        default_model = [] if "--model" in args else ["--model", str(model)]
        argv = ["probe", "record-golden", *default_model]
        assert cli_main([*argv, *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("vigil: ") and message in err, (args, err)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["probe", "record-golden", "--model", str(model)])
    assert exit_.value.code == 2 and "-o/--output" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key", "text"),
    [
        ({"iterations": 0}, "iterations", "an integer from 1 to 1000"),
        ({"iterations": True}, "iterations", "an integer from 1 to 1000"),
        ({"rtol": -1}, "rtol", "a number >= 0"),
        ({"atol": "0.1"}, "atol", "a number >= 0"),
        ({"max_latency": 5}, "max_latency", "positive duration"),
        ({"load_timeout": "soon"}, "load_timeout", "positive duration"),
        ({"max_memory_mb": 16}, "max_memory_mb", "from 256"),
        ({"intra_op_threads": 0}, "intra_op_threads", "from 1 to 256"),
        ({"providers": "CPUExecutionProvider"}, "providers", "a list of provider names"),
        ({"inputs": [1, 2]}, "inputs", "a table of input name"),
        ({"inputs": {"x": "text"}}, "inputs", "a table of input name"),
        ({"expect_outputs": {}}, "expect_outputs", "a table of output name"),
        ({"golden": "golden.json"}, "golden", "an absolute file path"),
        ({"golden": "/nonexistent/golden.json"}, "golden", "cannot read /nonexistent"),
        ({"prompt": "hi"}, "prompt", "unknown canary option for protocol 'onnx'"),
    ],
)
def test_option_errors_name_the_key(options: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(OptionError, match=text) as err:
        OnnxProbe.check_options(options)
    assert err.value.field == key


def test_golden_option_conflicts(tmp_path: Path) -> None:
    golden = tmp_path / "g.json"
    golden.write_text(json.dumps({"inputs": {"x": [[1, 2, 3, 4]]}, "outputs": {"y": [[1]]}}))
    with pytest.raises(OptionError, match="either golden or expect_outputs") as err:
        OnnxProbe.check_options({"golden": str(golden), "expect_outputs": {"y": [1]}})
    assert err.value.field == "golden"
    with pytest.raises(OptionError, match="its own inputs") as err:
        OnnxProbe.check_options({"golden": str(golden), "inputs": {"x": [1]}})
    assert err.value.field == "inputs"
    golden.write_text(json.dumps({"outputs": {}}))
    with pytest.raises(OptionError, match="non-empty 'outputs'"):
        OnnxProbe.check_options({"golden": str(golden)})


def test_config_wants_a_file_url_and_names_canary_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.toml"
    cfg.write_text(
        '[agent]\ndata_dir = "/tmp/x"\n\n[[model]]\nname = "m"\nprotocol = "onnx"\n'
        'url = "http://127.0.0.1:1/m.onnx"\n'
    )
    with pytest.raises(ConfigError, match="file:///ABSOLUTE/PATH") as err:
        load_config(cfg)
    assert err.value.field == "model[0].url"
    cfg.write_text(
        '[agent]\ndata_dir = "/tmp/x"\n\n[[model]]\nname = "m"\nprotocol = "onnx"\n'
        'url = "file:///models/m.onnx"\n[model.canary]\niterations = 5000\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert err.value.field == "model[0].canary.iterations" and err.value.line == 9
