"""`vigil status` as text: every latency the API serves, drift, and agent text made safe."""

from __future__ import annotations

from agent.cli.status_view import render_status
from storage.records import AgentStatus, ModelStatus, ProbeRun

NOW = 1_800_000_000_000


def lat(p50: float, p95: float, p99: float) -> dict[str, float]:
    return {"count": 10, "p50": p50, "p95": p95, "p99": p99}


def test_latency_of_every_phase_over_5m_and_1h() -> None:
    llama = ModelStatus(
        name="llama",
        protocol="openai",
        url="http://x",
        state="up",
        since_ms=NOW - 60_000,
        last_run=ProbeRun(model="llama", ts_ms=NOW, ok=True, category="ok", e2e_ms=412.3),
        drift={"latency": NOW - 240_000},
    )
    tcp = ModelStatus(name="port\x1b[2J", protocol="tcp", url="tcp://x", state="down", since_ms=NOW)
    details = {
        "llama": {
            "availability_1h": 0.995,
            "latency": {
                "5m": {
                    "ttft_ms": lat(51.2, 55.0, 60.1),
                    "itl_ms": lat(20.1, 21.0, 22.4),
                    "e2e_ms": lat(400.0, 420.5, 450.9),
                },
                "1h": {"ttft_ms": lat(50.0, 54.0, 70.0), "e2e_ms": lat(390, 415, 480)},
            },
        }
    }
    text = render_status(
        AgentStatus("gpu1", "1.0", NOW - 3_600_000, NOW, models=(llama, tcp)),
        now_ms=NOW,
        model_details=details,
    )
    lines = text.splitlines()
    header = next(line for line in lines if "TTFT P50/P95/P99" in line)
    assert "ITL P50/P95/P99" in header and "E2E P50/P95/P99" in header
    five = next(line for line in lines if line.split()[:2] == ["llama", "5m"])
    assert five.split()[2:] == ["51.2/55.0/60.1", "20.1/21.0/22.4", "400.0/420.5/450.9"]
    hour = next(line for line in lines if line.split()[:2] == ["llama", "1h"])
    assert hour.split()[2:] == ["50.0/54.0/70.0", "-", "390.0/415.0/480.0"]
    row = next(line for line in lines if line.lstrip().startswith("llama") and "UP" in line)
    assert "99.5%" in row and "latency drift 4m" in row
    # A model without latency has no latency rows; its name is shown without the escape.
    assert not any(line.lstrip().startswith("port") and "5m" in line for line in lines)
    assert "\x1b" not in text and "port" in text


def test_a_planned_start_says_why_instead_of_its_failures() -> None:
    starting = ModelStatus(
        name="llm",
        protocol="openai",
        url="http://x",
        state="starting",
        since_ms=NOW - 3_000,
        last_run=ProbeRun(
            model="llm", ts_ms=NOW, ok=False, category="refused", error="x", planned=True
        ),
        planned="restart by alice@laptop",
    )
    text = render_status(AgentStatus("gpu1", "1.0", NOW, NOW, models=(starting,)), now_ms=NOW)
    row = next(line for line in text.splitlines() if line.lstrip().startswith("llm"))
    assert "STARTING" in row and "planned: restart by alice@laptop" in row
    assert "refused" not in row
