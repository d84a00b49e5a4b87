"""The previous version's baseline as a deploy takes it (agent.deploy.support), against a real
writer and SQLite file.

Issue 16's flake: a deploy requested just after a rollback found no stored run of the version
serving again (its probes were still in the writer's uncommitted batch), took an empty
baseline, and the gate promoted a version 400x slower with its latency "not judged".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.config import DeployConfig, ModelConfig
from agent.deploy.gate import BakeGate, Baseline, Canary, Outcome
from agent.deploy.strategy import Rollout
from agent.deploy.support import BASELINE_MIN_RUNS, DeploySupport
from probes.base import now_ms
from storage.queries import recent_probe_runs
from storage.records import ProbeRun
from storage.writer import Writer

ANSWER = '[{"data": [1.0]}]'


class Host:
    """The agent as the baseline sees it: a monitor's state, and probes on demand that are
    recorded the way the daemon records them (into the writer's batch, not yet committed)."""

    def __init__(self, writer: Writer, support: list[DeploySupport], state: str = "up") -> None:
        self.writer = writer
        self.support = support
        self.monitors: dict[str, Any] = {"m": SimpleNamespace(state=state)}
        self.probed = 0

    async def probe_models(self, names: list[str]) -> None:
        self.probed += 1
        t = now_ms()
        run = ProbeRun(model="m", ts_ms=t, ok=True, category="ok", e2e_ms=2.0, end_ms=t + 2)
        self.support[0].answers.setdefault("m", deque()).append(ANSWER)
        self.writer.submit_one(run)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    # A batch commits only when a task or a flush comes: the agent's writer commits within a
    # second, and a deploy requested inside that second used to miss what it had just probed.
    w = Writer(tmp_path / "vigil.db", flush_interval_s=60.0)
    w.start()
    try:
        yield w
    finally:
        w.close()


def model(deploy: DeployConfig) -> ModelConfig:
    return ModelConfig(name="m", protocol="kserve_v2", url="http://127.0.0.1:9", deploy=deploy)


async def baseline_of(
    writer: Writer, tmp_path: Path, deploy: DeployConfig, state: str = "up"
) -> tuple[Baseline, Host]:
    ref: list[DeploySupport] = []
    host = Host(writer, ref, state)
    support = DeploySupport(host, writer, tmp_path / "vigil.db")  # type: ignore[arg-type]
    ref.append(support)
    ro = Rollout(1, model(deploy), "srv", tmp_path / "current", "alice")
    return await support.baseline(None, ro), host  # type: ignore[arg-type]


async def test_a_version_with_no_runs_yet_is_probed_for_a_baseline(
    writer: Writer, tmp_path: Path
) -> None:
    base, host = await baseline_of(writer, tmp_path, DeployConfig())
    assert host.probed == BASELINE_MIN_RUNS
    assert base.runs == BASELINE_MIN_RUNS and base.e2e_p95_ms == 2.0
    assert base.answers == BASELINE_MIN_RUNS and base.answer_sha256 is not None
    # With that baseline the gate judges a version 200x slower, and fails it.
    gate = BakeGate(DeployConfig(), base, started_ms=0, bake_s=1.0, interval_s=0.25, timeout_s=1.0)
    for i in range(3):
        t = 100 + 250 * i
        run = ProbeRun(model="m", ts_ms=t, ok=True, category="ok", e2e_ms=400.0, end_ms=t + 400)
        gate.observe(Canary.of(run, ANSWER))
    v = gate.judge(2000)
    assert v.outcome == Outcome.FAIL and "e2e_ms p95 400 ms" in v.reason


async def test_enough_stored_runs_need_no_probe(writer: Writer, tmp_path: Path) -> None:
    t = now_ms() - 10_000
    writer.submit(
        ProbeRun(model="m", ts_ms=t + i, ok=True, category="ok", e2e_ms=5.0, end_ms=t + i + 5)
        for i in range(4)
    )
    base, host = await baseline_of(writer, tmp_path, DeployConfig(golden=False))
    assert host.probed == 0 and base.runs == 4 and base.e2e_p95_ms == 5.0


async def test_a_version_that_is_not_up_is_not_probed(writer: Writer, tmp_path: Path) -> None:
    base, host = await baseline_of(writer, tmp_path, DeployConfig(), state="down")
    assert host.probed == 0 and base.runs == 0 and base.e2e_p95_ms is None
    # The gate then says plainly that it had nothing to compare with.
    gate = BakeGate(DeployConfig(), base, started_ms=0, bake_s=1.0, interval_s=0.25, timeout_s=1.0)
    run = ProbeRun(model="m", ts_ms=10, ok=True, category="ok", e2e_ms=400.0, end_ms=410)
    gate.observe(Canary.of(run, None))
    latency = next(c for c in gate.judge(2000).checks if c.check == "latency")
    assert latency.ok is None and latency.figures["baseline_runs"] == 0
    assert "no ok run of the previous version" in latency.detail


async def test_runs_still_in_the_writers_batch_count(writer: Writer, tmp_path: Path) -> None:
    """The race itself: a run recorded a moment ago is not on disk yet, so a read on another
    connection misses it; the baseline reads after the writer's queue."""
    host = Host(writer, [])
    support = DeploySupport(host, writer, tmp_path / "vigil.db")  # type: ignore[arg-type]
    host.support.append(support)
    await host.probe_models(["m"])
    assert await support.store.read(lambda c: recent_probe_runs(c, "m")) == []
    assert len(await support._baseline_runs("m", 50)) == 1
