"""``vigil canary`` against real servers: the demo KServe V2 server and the fake LLM server
(OpenAI), with no agent (``--url``), and through a real agent (``vigil canary MODEL``).

Exit codes are the contract a pipeline reads: 0 passed, 1 failed (the reason printed; a server
that cannot be reached is a failed canary), 2 a usage error or an agent it cannot reach.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.helpers import (
    child_env,
    control_fake,
    fake_llm,
    running_agent,
    serving_process,
    vigil_cmd,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def vigil(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vigil_cmd("canary", *args),
        capture_output=True,
        text=True,
        env={**child_env(), **(env or {})},
        timeout=timeout,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo KServe V2 server on a real ONNX model (``y = x @ w + b``), named ``clf``."""
    model = onnx_models.linear(tmp_path_factory.mktemp("canary") / "model.onnx")
    with serving_process(
        "agent.demo.server", "--model", str(model), "--name", "clf", "--port", "0"
    ) as url:
        yield url


def report(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_a_kserve_canary_passes_and_its_json_has_the_figures(kserve: str) -> None:
    out = vigil("--url", kserve, "--protocol", "kserve_v2", "--model-name", "clf", "--count", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    first = out.stdout.splitlines()[0]
    assert first == f"canary clf at {kserve} (kserve_v2): PASS, 3/3 ok"
    assert "e2e p50" in out.stdout

    out = vigil(
        "--url", kserve, "--protocol", "kserve_v2", "--model-name", "clf", "--count", "2", "--json"
    )
    assert out.returncode == 0, out.stderr
    doc = report(out)
    assert doc["verdict"] == "pass" and doc["ok"] == 2 and doc["failed"] == 0
    assert doc["count"] == 2 and doc["model"] == "clf" and doc["protocol"] == "kserve_v2"
    assert doc["through_agent"] is False and doc["url"] == kserve
    assert doc["e2e_ms"]["p50"] > 0 and doc["e2e_ms"]["p95"] >= doc["e2e_ms"]["p50"]
    assert doc["ttft_ms"] == {"p50": None, "p95": None}  # no streaming in KServe
    assert doc["failures"] == [] and len(doc["runs"]) == 2
    answer = doc["runs"][0]["answer"]
    assert answer[0]["name"] == "y" and answer[0]["shape"] == [1, 3]


def test_a_golden_answer_from_a_known_good_run_passes_and_a_wrong_one_fails(
    kserve: str, tmp_path: Path
) -> None:
    args = ("--url", kserve, "--protocol", "kserve_v2", "--model-name", "clf")
    out = vigil(*args, "--count", "1", "--json")
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(report(out)["runs"][0]["answer"]))
    out = vigil(*args, "--count", "2", "--golden", str(golden))
    assert out.returncode == 0, out.stdout + out.stderr

    # The other weights' answer (scale 2) is not this server's: wrong output, exit 1.
    data = report(vigil(*args, "--count", "1", "--json"))["runs"][0]["answer"][0]["data"]
    wrong = {"y": [[v * 2 for v in data]]}
    out = vigil(*args, "--count", "1", "--expect-json", json.dumps(wrong))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL, 0/1 ok" in out.stdout
    assert "run 1: wrong_output: output 'y'[0] is" in out.stdout

    # Too slow for the budget: every run fails as slow.
    out = vigil(*args, "--count", "2", "--max-latency", "0.001ms")
    assert out.returncode == 1
    assert "run 2: slow: e2e" in out.stdout and "above --max-latency" in out.stdout


def test_a_server_returning_errors_or_not_there_fails_with_the_reason(kserve: str) -> None:
    out = vigil("--url", kserve, "--protocol", "kserve_v2", "--model-name", "other", "--count", "2")
    assert out.returncode == 1
    assert "run 1: http_error: model 'other' not ready: HTTP 404" in out.stdout

    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    out = vigil("--url", url, "--protocol", "kserve_v2", "--model-name", "clf", "--json")
    assert out.returncode == 1, out.stderr  # a failed canary, recorded as such: not a usage error
    doc = report(out)
    assert doc["verdict"] == "fail" and doc["ok"] == 0 and doc["failed"] == 5
    assert {f["category"] for f in doc["failures"]} == {"refused"}


def test_an_openai_server_passes_then_fails_on_errors_wrong_text_and_slowness() -> None:
    with fake_llm("--ttft-ms", "5", "--itl-ms", "1", "--tokens", "8") as url:
        args = ("--url", url, "--protocol", "openai", "--model-name", "fake-llm", "--count", "2")
        out = vigil(*args, "--input-json", '{"max_tokens": 8}', "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        doc = report(out)
        assert doc["ttft_ms"]["p50"] > 0 and doc["tokens_per_s_p50"] > 0
        text = doc["runs"][0]["answer"]
        assert text.startswith("The quick brown fox")

        out = vigil(*args, "--expect-json", json.dumps(text))
        assert out.returncode == 0, out.stdout + out.stderr
        out = vigil(*args, "--expect-json", '"something else"')
        assert out.returncode == 1
        assert "run 1: wrong_output: the answer differs from the expected one" in out.stdout
        # The protocol's own expectations, from the canary options.
        out = vigil(*args, "--input-json", '{"expect_contains": "zebra"}')
        assert out.returncode == 1 and "run 1: wrong_output:" in out.stdout

        # A server error, its text escaped: no escape sequence reaches the terminal.
        control_fake(url, status=500, error_body="boom \x1b[31mred")
        out = vigil(*args)
        assert out.returncode == 1
        assert "run 1: http_error:" in out.stdout and "boom ?[31mred" in out.stdout
        assert "\x1b" not in out.stdout

        control_fake(url, status=200, ttft_ms=300)
        out = vigil(*args, "--max-latency", "200ms")
        assert out.returncode == 1 and "run 1: slow:" in out.stdout


def test_bad_usage_exits_2_and_says_what_was_wrong(kserve: str, tmp_path: Path) -> None:
    base = ("--url", kserve, "--protocol", "kserve_v2", "--model-name", "clf")
    cases: list[tuple[tuple[str, ...], str]] = [
        ((), "expected a MODEL to run through the agent, or --url URL"),
        (("--url", kserve, "--protocol", "kserve_v2"), "--model-name: required"),
        (("--url", kserve, "--model-name", "clf"), "--protocol: required"),
        (("--url", kserve, "--protocol", "grpc", "--model-name", "clf"), "unknown probe protocol"),
        (("--url", "ftp://x", "--protocol", "openai", "--model-name", "m"), "--url: expected"),
        ((*base, "--count", "0"), "--count: expected a whole number from 1 to 100"),
        ((*base, "--input-json", "{"), "--input-json: not JSON"),
        ((*base, "--input-json", '{"nope": 1}'), "canary option nope: unknown canary option"),
        ((*base, "--max-latency", "fast"), "--max-latency: expected"),
        ((*base, "--expect-json", '"x"', "--golden", "g.json"), "give one"),
        ((*base, "--expect-json", '"text"'), "expected the output tensors"),
        ((*base, "--golden", str(tmp_path / "missing.json")), "--golden @"),
        ((*base, "--api-key-env", "VIGIL_TEST_UNSET_KEY"), "VIGIL_TEST_UNSET_KEY is unset"),
        (("clf", "--protocol", "openai"), "--protocol is for a canary against a server"),
        (("--config", str(tmp_path / "none.toml"), *base), "config refused"),
    ]
    for args, said in cases:
        out = vigil(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert said in out.stderr, (args, out.stderr)


def test_the_canary_of_a_config_files_model(kserve: str, tmp_path: Path) -> None:
    """``--config`` + ``--model-name``: the [[model]]'s protocol and canary, at --url."""
    cfg = write_config(
        tmp_path,
        """
[[model]]
name = "clf"
protocol = "kserve_v2"
url = "http://production.invalid:8000"
timeout = "3s"
[model.canary]
expect_output = { name = "y", shape = [1, 3] }
""",
    )
    out = vigil("--url", kserve, "--config", str(cfg), "--model-name", "clf", "--count", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    out = vigil(
        "--url", kserve, "--config", str(cfg), "--model-name", "clf",
        "--input-json", '{"expect_output": {"name": "y", "shape": [1, 4]}}',
    )  # fmt: skip
    assert out.returncode == 1 and "has shape [1, 3], expected [1, 4]" in out.stdout
    out = vigil("--url", kserve, "--config", str(cfg), "--model-name", "llama")
    assert out.returncode == 2 and "no such [[model]]" in out.stderr


def test_through_a_real_agent(kserve: str, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        f"""
[[model]]
name = "clf"
protocol = "kserve_v2"
url = "{kserve}"
interval = "30s"
""",
    )
    with running_agent(cfg) as agent:
        token = {"VIGIL_TOKEN": agent.token}
        out = vigil("clf", "--count", "3", "--config", str(cfg))
        assert out.returncode == 0, out.stdout + out.stderr
        assert (
            out.stdout.splitlines()[0] == "canary clf through the agent (kserve_v2): PASS, 3/3 ok"
        )
        # As a pipeline reaches an agent: its URL, and the token in $VIGIL_TOKEN.
        out = vigil("clf", "--count", "2", "--json", "--url", agent.url, env=token)
        assert out.returncode == 0, out.stderr
        doc = report(out)
        assert doc["through_agent"] and doc["verdict"] == "pass" and len(doc["runs"]) == 2
        # Each run is the agent's own, recorded like any other, and the request is audited.
        stamps = {r["ts_ms"] for r in doc["runs"]}

        def stored() -> bool:
            code, body = agent.get("/api/v1/probe_runs?model=clf&limit=100")
            return code == 200 and stamps <= {r["ts_ms"] for r in body["probe_runs"]}

        wait_for(stored, 10, what="the canary runs stored")
        code, body = agent.get("/api/v1/events?kind=model.canary_run&limit=10")
        assert code == 200 and len(body["events"]) >= 2
        assert "canary run 2 times by" in body["events"][0]["message"]

        out = vigil("nope", "--config", str(cfg))
        assert out.returncode == 2 and "no model named 'nope'" in out.stderr
        out = vigil("clf", "--count", "101", "--config", str(cfg))
        assert out.returncode == 2 and "--count" in out.stderr
    # No agent there any more: the canary did not run, which is not a verdict.
    out = vigil("clf", "--url", agent.url, env=token)
    assert out.returncode == 2 and "cannot connect" in out.stderr
