"""A lean agent: the daemon imports only what it runs, /metrics is written without
prometheus-client (and reads the same), migrations without sqlite-utils, and an install without
an extra says which extra a command needs."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.cli.extras import EXTRAS, extra_for, missing_extra
from agent.serve.exposition import LabelledCounter, format_value, gauge, render
from agent.serve.metrics import E2E_BUCKETS, ProbeMetrics
from storage.db import MIGRATIONS, migrate
from storage.records import ProbeRun
from tests.helpers import ROOT, child_env


def _run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_daemon_does_not_import_what_it_does_not_run() -> None:
    out = _run_python(
        "import sys, json; import agent.runtime.daemon; print(json.dumps(sorted(sys.modules)))"
    )
    loaded = set(json.loads(out))
    for module in ("prometheus_client", "sqlite_utils", "agent.report", "storage.report"):
        assert module not in loaded, f"{module} is imported by the daemon at start"
    for module in ("textual", "onnxruntime", "pynvml"):
        assert module not in loaded, f"{module} is imported by the daemon at start"
    # The deploy engine is made on first need (agent.runtime.deploying): ~40 modules, 2.3 MB.
    # ... and the remote_write forwarder when a config has [remote_write].
    for module in (
        "agent.deploy.engine",
        "agent.deploy.canarycheck",
        "storage.deploykpi",
        "agent.forward.remotewrite",
    ):
        assert module not in loaded, f"{module} is imported by the daemon at start"
    for module in ("statistics", "difflib"):  # statistics brings fractions and decimal
        assert module not in loaded, f"{module} is imported by the daemon at start"


def test_the_cli_does_not_load_the_daemon_for_status() -> None:
    out = _run_python(
        "import sys, json; import agent.cli.commands; print(json.dumps(sorted(sys.modules)))"
    )
    loaded = set(json.loads(out))
    for module in ("agent.runtime.daemon", "apscheduler", "numpy", "psutil", "textual"):
        assert module not in loaded


def test_creating_a_database_does_not_load_sqlite_utils(tmp_path: Path) -> None:
    out = _run_python(
        "import sys; from storage.db import open_database; "
        f"open_database({str(tmp_path / 'v.db')!r}).close(); "
        "print('sqlite_utils' in sys.modules)"
    )
    assert out.strip() == "False"


def test_a_migration_that_needs_sqlite_utils_still_gets_it() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, MIGRATIONS)

    def with_table_api(db: Any) -> None:
        db["notes"].insert({"id": 1, "text": "hello"}, pk="id")
        db.execute("UPDATE notes SET text = ? WHERE id = ?", ("hi", 1))

    assert migrate(conn, (*MIGRATIONS, ("9999_notes", with_table_api))) == ["9999_notes"]
    assert conn.execute("SELECT text FROM notes").fetchall() == [("hi",)]


def _run(model: str, category: str, e2e_ms: float | None, ttft_ms: float | None) -> ProbeRun:
    return ProbeRun(
        model=model,
        ts_ms=1_000,
        ok=category in ("ok", "slow"),
        category=category,
        e2e_ms=e2e_ms,
        ttft_ms=ttft_ms,
    )


def _strip_created(text: str) -> str:
    # _created holds when a label set was first seen: a wall-clock time, different per run.
    return re.sub(r"^(\S+_created(?:\{[^}]*\})?) \S+$", r"\1 T", text, flags=re.MULTILINE)


def test_probe_metrics_render_as_prometheus_client_does() -> None:
    ours = ProbeMetrics()
    registry = CollectorRegistry(auto_describe=True)
    e2e = Histogram(
        "vigil_probe_e2e_seconds",
        "Probe request to complete answer",
        ["model"],
        buckets=E2E_BUCKETS,
        registry=registry,
    )
    runs = Counter(
        "vigil_probe_runs",
        "Probe runs by outcome category",
        ["model", "category"],
        registry=registry,
    )
    cases = [
        ("iris", "ok", 4.0),
        ("iris", "ok", 25.0),  # exactly on a bound: counted in that bucket
        ("llm", "slow", 70_000.0),  # over the last bound: +Inf only
        ("iris", "timeout", None),
        ('we"ird\\name\n', "ok", 120.0),
    ]
    for model, category, e2e_ms in cases:
        ours.observe(_run(model, category, e2e_ms, None))
        runs.labels(model, category).inc()
        if e2e_ms is not None:
            e2e.labels(model).observe(e2e_ms / 1000)
    text = render(
        f for f in ours.collect() if f.name.startswith(("vigil_probe_e2e", "vigil_probe_runs"))
    )
    expected = generate_latest(registry).decode()
    assert _strip_created(text.decode()) == _strip_created(expected)

    ours.forget("iris")
    left = {
        s.labels["model"]
        for f in text_string_to_metric_families(render(ours.collect()).decode())
        for s in f.samples
    }
    assert left == {"llm", 'we"ird\\name\n'}


def test_scrape_time_families_parse_back() -> None:
    restarts = LabelledCounter("vigil_process_restarts", "Restarts by the supervisor", ["process"])
    restarts.inc("api", amount=3)
    up = gauge("vigil_model_up", "1 if the model's last probe succeeded", ["model", "protocol"])
    up.add(["iris", "kserve_v2"], 1.0)
    families = {
        f.name: f
        for f in text_string_to_metric_families(
            render(
                [up, *restarts.collect(), gauge("vigil_agent_uptime_seconds", "Up", value=1.5)]
            ).decode()
        )
    }
    assert families["vigil_model_up"].type == "gauge"
    assert families["vigil_model_up"].samples[0].labels == {
        "model": "iris",
        "protocol": "kserve_v2",
    }
    assert families["vigil_process_restarts"].type == "counter"
    assert families["vigil_process_restarts"].samples[0].value == 3.0
    assert families["vigil_agent_uptime_seconds"].samples[0].value == 1.5


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.025, "0.025"),
        (1.0, "1.0"),
        (60.0, "60.0"),
        (1e6, "1e+06"),
        (1_234_567.0, "1.234567e+06"),
        (1.7e9, "1.7e+09"),
        (-2.5, "-2.5"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_values_are_written_as_prometheus_client_writes_them(value: float, text: str) -> None:
    from prometheus_client.utils import floatToGoString

    assert format_value(value) == text == floatToGoString(value)


def test_a_missing_module_names_its_extra() -> None:
    assert extra_for("textual.app") == "tui"
    assert extra_for("numpy") == "agent"
    assert extra_for("yaml") is None
    exc = ModuleNotFoundError("No module named 'numpy'", name="numpy")
    assert missing_extra("agent run", exc) == (
        "`vigil agent run` needs the agent extra: pip install 'vigil[agent]' "
        "(no module named 'numpy')"
    )
    assert missing_extra("report", ModuleNotFoundError("x", name="nothere")) is None


def _vigil_without(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI in a child where ``module`` cannot be imported, as on an install without it."""
    code = (
        "import sys; sys.modules[sys.argv[1]] = None; from agent.cli import main; "
        "sys.exit(main(sys.argv[2:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, module, *args],
        capture_output=True,
        text=True,
        env={**child_env(), **(env or {})},
        cwd=ROOT,
        timeout=60,
    )
    return proc.returncode, proc.stderr


def test_vigil_tui_without_textual_says_to_install_the_tui_extra() -> None:
    code, err = _vigil_without(
        "textual", "tui", "--url", "http://127.0.0.1:9", env={"VIGIL_TOKEN": "t"}
    )
    assert code == 2
    assert "vigil: the TUI needs the tui extra: pip install 'vigil[tui]'" in err
    assert "Traceback" not in err


def test_vigil_agent_run_without_numpy_says_to_install_the_agent_extra(tmp_path: Path) -> None:
    cfg = tmp_path / "vigil.toml"
    cfg.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    code, err = _vigil_without("numpy", "agent", "run", "--config", str(cfg))
    assert code == 2
    assert "vigil: `vigil agent run` needs the agent extra: pip install 'vigil[agent]'" in err
    assert "Traceback" not in err


def test_a_tui_only_install_pulls_no_agent_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in reqs}

    core = names(project["dependencies"])
    extras = project["optional-dependencies"]
    heavy = {"onnxruntime", "numpy", "nvidia-ml-py", "textual"}
    assert not core & heavy
    assert not names(extras["tui"]) & (heavy - {"textual"})
    assert {"onnxruntime", "numpy", "nvidia-ml-py"} <= names(extras["agent"])
    assert "vigil[agent,tui]" in extras["dev"]
    # Every module the CLI maps to an extra is installed by that extra's packages.
    assert {"textual"} <= names(extras["tui"]) and "textual" in EXTRAS["tui"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install -q -e '.[agent,tui,dev]'" in makefile
