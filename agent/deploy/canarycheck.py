"""``vigil canary``'s verdict: a model's canary run N times now, judged as a pipeline step.

The same judgement serves both ways of running it: through the agent (``POST
/api/v1/models/{name}/canary``: the agent's own probe of the model, each run recorded as any
other) and in-process against any server (``vigil canary --url``, before a deploy, against a
staging server: :func:`run_canaries` runs the probe classes the agent runs, through the same
:class:`~agent.health.monitor.ModelMonitor` step, so a timeout, a crash of the probe and a key
in an error text are handled alike).

A canary **passes** when every run is ``ok`` (the protocol's own checks, from the canary
options: expected text, output tensors, latency bounds), no run's e2e latency is above
``max_latency_ms`` when one is given, and every answer equals the expected one when one is
given (:func:`answer_matches`). Anything else fails, and each failed run is named with its
category and message. The figures (p50/p95 of e2e and TTFT, median tokens/s) are over the ``ok``
runs. Pure but for :func:`run_canaries`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.config import ModelConfig
from agent.health.monitor import ModelMonitor
from probes.common import percentile
from probes.httpclient import HttpClient
from storage.records import ProbeRun

__all__ = [
    "DEFAULT_TOLERANCE",
    "MAX_COUNT",
    "CanaryCriteria",
    "CanaryReport",
    "CanaryRun",
    "answer_matches",
    "answer_value",
    "judge",
    "run_canaries",
]

MAX_COUNT = 100
"""Most runs one ``vigil canary`` asks for: a check, not a load test."""
DEFAULT_TOLERANCE = 1e-4
"""How far an output number may be from the expected one (absolute), as the KServe probe's
``expect_output`` allows."""
ANSWER_CHARS = 2000
"""An answer is kept to this many characters in a report (a long generation stays readable)."""
JSON_ANSWERS = frozenset({"kserve_v2"})
"""Protocols whose answer is canonical JSON (the output tensors), not text."""


@dataclass(frozen=True, slots=True)
class CanaryRun:
    """One canary run and its answer (the probe's ``last_output``; None without one)."""

    run: ProbeRun
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class CanaryCriteria:
    """What a pass needs beyond ``ok`` runs (None: not checked)."""

    max_latency_ms: float | None = None
    expected: Any = None
    """The expected answer: text (LLM protocols), or the output tensors (``kserve_v2``: a
    list of ``{name, shape?, data}`` or an object of name -> data)."""
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def expects_answer(self) -> bool:
        """Whether answers are compared with an expected one."""
        return self.expected is not None


@dataclass(frozen=True, slots=True)
class Failure:
    """A run that did not pass: its number (from 1), category and message."""

    run: int
    category: str
    error: str
    e2e_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "run": self.run,
            "category": self.category,
            "error": self.error,
            "e2e_ms": self.e2e_ms,
        }


@dataclass(frozen=True, slots=True)
class CanaryReport:
    """The verdict and the figures of N canary runs."""

    model: str
    protocol: str
    url: str
    count: int
    passed: bool
    ok: int
    failures: tuple[Failure, ...]
    e2e_ms: Mapping[str, float | None]
    ttft_ms: Mapping[str, float | None]
    tokens_per_s_p50: float | None
    runs: tuple[CanaryRun, ...] = field(default=())
    criteria: CanaryCriteria = field(default_factory=CanaryCriteria)

    @property
    def verdict(self) -> str:
        """``pass`` or ``fail``."""
        return "pass" if self.passed else "fail"

    def to_json(self) -> dict[str, Any]:
        """The JSON the API serves and ``vigil canary --json`` prints."""
        return {
            "model": self.model,
            "protocol": self.protocol,
            "url": self.url,
            "count": self.count,
            "verdict": self.verdict,
            "ok": self.ok,
            "failed": len(self.failures),
            "e2e_ms": dict(self.e2e_ms),
            "ttft_ms": dict(self.ttft_ms),
            "tokens_per_s_p50": self.tokens_per_s_p50,
            "failures": [f.to_json() for f in self.failures],
            "criteria": {
                "max_latency_ms": self.criteria.max_latency_ms,
                "expected_answer": self.criteria.expects_answer,
            },
            "runs": [_run_json(self.protocol, r) for r in self.runs],
        }


def _run_json(protocol: str, r: CanaryRun) -> dict[str, Any]:
    out = r.run.to_json()
    out["answer"] = None if r.answer is None else answer_value(protocol, r.answer)
    return out


def answer_value(protocol: str, answer: str) -> Any:
    """An answer as a report shows it: the output tensors for ``kserve_v2`` (a JSON value, so
    ``jq '.runs[0].answer'`` of one run is a ``--golden`` file for the next), else the text."""
    if protocol in JSON_ANSWERS:
        try:
            return json.loads(answer)
        except ValueError:
            pass
    return answer[:ANSWER_CHARS]


def _flatten(value: object) -> list[object]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def _expected_outputs(expected: Any) -> dict[str, dict[str, Any]]:
    """Expected tensors by name: from a list of ``{name, shape?, data}``, an object of name ->
    data, or a golden file of ``vigil probe record-golden`` (``{"outputs": {name: data}}``).

    Raises:
        ValueError: any other shape; the message says what was expected.
    """
    if isinstance(expected, Mapping) and isinstance(expected.get("outputs"), Mapping | list):
        expected = expected["outputs"]
    if isinstance(expected, Mapping):
        return {str(k): {"data": v} for k, v in expected.items()}
    if isinstance(expected, list) and all(
        isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in expected
    ):
        return {o["name"]: dict(o) for o in expected}
    raise ValueError(
        "expected answer: expected the output tensors as a list of {name, shape?, data} or an "
        "object of output name -> data"
    )


def check_expected(protocol: str, expected: Any) -> None:
    """Refuse an expected answer that can never match the protocol's answers.

    Raises:
        ValueError: the message says what was expected.
    """
    if protocol in JSON_ANSWERS:
        _expected_outputs(expected)
    elif not isinstance(expected, str):
        raise ValueError(
            f"expected answer: protocol {protocol} answers text; expected a JSON string, got "
            f"{type(expected).__name__}"
        )


def answer_matches(protocol: str, answer: str, expected: Any, tolerance: float) -> str | None:
    """What differs between an answer and the expected one, or None when they match.

    Text is compared with whitespace folded (as output drift and the deploy gate compare
    answers); output tensors by name, shape and each number within ``tolerance``.
    """
    if protocol not in JSON_ANSWERS:
        if " ".join(answer.split()) == " ".join(str(expected).split()):
            return None
        return f"the answer differs from the expected one: got {_excerpt(answer)!r}"
    try:
        got = {o["name"]: o for o in json.loads(answer)}
    except (ValueError, TypeError, KeyError):
        return "the answer is not a list of output tensors"
    for name, want in _expected_outputs(expected).items():
        have = got.get(name)
        if have is None:
            return f"output {name!r} missing; got {sorted(got)}"
        if "shape" in want and list(have.get("shape") or []) != list(want["shape"]):
            return f"output {name!r} has shape {have.get('shape')}, expected {want['shape']}"
        want_flat, have_flat = _flatten(want.get("data")), _flatten(have.get("data"))
        if len(want_flat) != len(have_flat):
            return f"output {name!r} has {len(have_flat)} values, expected {len(want_flat)}"
        for i, (w, h) in enumerate(zip(want_flat, have_flat, strict=True)):
            if not _close(h, w, tolerance):
                return f"output {name!r}[{i}] is {h!r}, expected {w!r} (tolerance {tolerance:g})"
    return None


def _close(have: object, want: object, tolerance: float) -> bool:
    numbers = (int, float)
    if (
        isinstance(have, bool)
        or isinstance(want, bool)
        or not isinstance(have, numbers)
        or not isinstance(want, numbers)
    ):
        return have == want
    return math.isclose(float(have), float(want), rel_tol=0.0, abs_tol=tolerance)


def _excerpt(text: str, limit: int = 120) -> str:
    folded = " ".join(text.split())
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"


def _pcts(values: Sequence[float | None]) -> dict[str, float | None]:
    got = [float(v) for v in values if v is not None]
    if not got:
        return {"p50": None, "p95": None}
    return {"p50": round(percentile(got, 50.0), 3), "p95": round(percentile(got, 95.0), 3)}


def judge(
    model: str,
    protocol: str,
    url: str,
    runs: Sequence[CanaryRun],
    criteria: CanaryCriteria | None = None,
) -> CanaryReport:
    """The verdict of these runs by the rule in the module docstring."""
    criteria = criteria or CanaryCriteria()
    failures: list[Failure] = []
    passed_runs: list[ProbeRun] = []
    for i, cr in enumerate(runs, start=1):
        run = cr.run
        problem: tuple[str, str] | None = None
        if not run.ok:
            problem = (run.category, run.error or run.category)
        elif (
            criteria.max_latency_ms is not None
            and run.e2e_ms is not None
            and run.e2e_ms > criteria.max_latency_ms
        ):
            problem = (
                "slow",
                f"e2e {run.e2e_ms:.1f} ms is above --max-latency {criteria.max_latency_ms:g} ms",
            )
        elif criteria.expects_answer:
            if cr.answer is None:
                problem = ("wrong_output", "no answer to compare with the expected one")
            else:
                diff = answer_matches(protocol, cr.answer, criteria.expected, criteria.tolerance)
                if diff is not None:
                    problem = ("wrong_output", diff)
        if problem is None:
            passed_runs.append(run)
        else:
            failures.append(Failure(i, problem[0], problem[1], run.e2e_ms))
    ok_runs = [cr.run for cr in runs if cr.run.ok]
    tps = [r.tokens_per_s for r in ok_runs if r.tokens_per_s is not None]
    return CanaryReport(
        model=model,
        protocol=protocol,
        url=url,
        count=len(runs),
        passed=bool(runs) and not failures,
        ok=len(passed_runs),
        failures=tuple(failures),
        e2e_ms=_pcts([r.e2e_ms for r in ok_runs]),
        ttft_ms=_pcts([r.ttft_ms for r in ok_runs]),
        tokens_per_s_p50=round(statistics.median(tps), 3) if tps else None,
        runs=tuple(runs),
        criteria=criteria,
    )


async def run_canaries(model: ModelConfig, count: int) -> list[CanaryRun]:
    """Run ``model``'s canary ``count`` times, one after another, in this process.

    Each run is the agent's own step (:meth:`ModelMonitor.run_once`): bounded by the model's
    timeout, a probe's crash a ``protocol_error``, the API key scrubbed from error texts.
    Nothing is stored.
    """
    monitor = ModelMonitor(model)
    session = HttpClient()
    out: list[CanaryRun] = []
    try:
        for _ in range(count):
            run = await monitor.run_once(session)
            out.append(CanaryRun(run, monitor.probe.last_output if run.ok else None))
    finally:
        await monitor.probe.close()
        await session.close()
    return out
