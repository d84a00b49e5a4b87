"""The canary gate: whether a new version, during its bake, answers as well as the one before.

The new version is compared with the previous version's own **baseline** (:class:`Baseline`,
taken as the deploy starts and stored with it): the p95 latencies and median tokens/s of its
last stored ``ok`` probe runs, and its canary answer where that answer was deterministic. The
gate is fed every probe run of the model during the bake (:meth:`BakeGate.observe`) and judged
after each one and at the bake's end (:meth:`BakeGate.judge`):

- **fails at once** on more failed canaries than ``max_bad_canaries``, on an answer that differs
  from the previous version's deterministic one (``golden``), on an incident opened about the
  model or its process during the bake, and on drift detected during it;
- **at the bake's end** wants ``min_good_canaries`` ``ok`` runs in a row, the bake's p95
  latency (e2e, and TTFT where measured) within ``latency_ratio_max`` of the baseline's (or
  within ``latency_min_delta`` of it: 1 ms -> 2 ms is noise), and the median tokens/s at least
  ``throughput_ratio_min`` of the baseline's. Too few good canaries by a grace after the bake
  (enough intervals for them) fails.

Every check's result is kept with its figures (:class:`CheckResult`), the evidence a promotion
or a ``deploy_failed`` incident carries. Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from agent.config import DeployConfig
from probes.common import percentile
from storage.records import Incident, ProbeRun

__all__ = [
    "EXCERPT_CHARS",
    "BakeGate",
    "Baseline",
    "Canary",
    "Check",
    "CheckResult",
    "Outcome",
    "Verdict",
    "answer_digest",
    "excerpt",
]

EXCERPT_CHARS = 200
IGNORED_INCIDENTS = frozenset({"deploy_failed"})
"""An earlier failed deploy's incident is what this deploy may be fixing, not its fault."""


def answer_digest(text: str) -> str:
    """sha256 of a canary answer, whitespace aside (as output drift compares them)."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def excerpt(text: str) -> str:
    """The first 200 characters of an answer, whitespace folded."""
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


@dataclass(frozen=True, slots=True)
class Baseline:
    """The previous version as the new one is judged against it (stored with the deploy)."""

    runs: int = 0
    """The stored ``ok`` runs the figures come from (0: no latency baseline)."""
    e2e_p95_ms: float | None = None
    ttft_p95_ms: float | None = None
    tokens_per_s_p50: float | None = None
    answers: int = 0
    """Canary answers seen from the previous version just before the switch."""
    answer_sha256: str | None = None
    """Its answer, when every one of them was the same (deterministic); else None."""
    answer_excerpt: str | None = None

    @classmethod
    def build(cls, runs: Iterable[ProbeRun], answers: Iterable[str]) -> Baseline:
        """From the previous version's ``ok`` runs and its recent answers (oldest first)."""
        ok = [r for r in runs if r.ok and not r.planned]
        said = list(answers)
        digests = {answer_digest(a) for a in said}
        same = len(said) >= 2 and len(digests) == 1
        return cls(
            runs=len(ok),
            e2e_p95_ms=_p95(r.e2e_ms for r in ok),
            ttft_p95_ms=_p95(r.ttft_ms for r in ok),
            tokens_per_s_p50=_median(r.tokens_per_s for r in ok),
            answers=len(said),
            answer_sha256=digests.pop() if same else None,
            answer_excerpt=excerpt(said[-1]) if same else None,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form (stored in the deployment's evidence)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Baseline:
        """Rebuild from :meth:`to_json` output; unknown keys are ignored."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Canary:
    """One probe run of the new version during its bake, with the digest of its answer."""

    ts_ms: int
    end_ms: int
    ok: bool
    category: str
    e2e_ms: float | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    error: str | None = None
    answer_sha256: str | None = None
    answer_excerpt: str | None = None

    @classmethod
    def of(cls, run: ProbeRun, answer: str | None) -> Canary:
        """From a probe run and its answer text (None where the protocol has none)."""
        return cls(
            ts_ms=run.ts_ms,
            end_ms=run.observed_ms,
            ok=run.ok,
            category=run.category,
            e2e_ms=run.e2e_ms,
            ttft_ms=run.ttft_ms,
            tokens_per_s=run.tokens_per_s,
            error=run.error,
            answer_sha256=answer_digest(answer) if answer else None,
            answer_excerpt=excerpt(answer) if answer else None,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form, for evidence."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class Check(StrEnum):
    """The gate's checks, as evidence names them."""

    CANARIES = "canaries"
    GOLDEN = "golden"
    LATENCY = "latency"
    THROUGHPUT = "throughput"
    INCIDENTS = "incidents"
    DRIFT = "drift"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: passed (True), failed (False) or not applicable/not yet judged (None)."""

    check: Check
    ok: bool | None
    detail: str
    figures: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form, for evidence."""
        return {"check": str(self.check), "ok": self.ok, "detail": self.detail, **self.figures}


class Outcome(StrEnum):
    """The gate's answer: promote, roll back, or keep baking."""

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`BakeGate.judge` found, with every check's result."""

    outcome: Outcome
    checks: tuple[CheckResult, ...]

    @property
    def failed(self) -> list[CheckResult]:
        """The checks that failed."""
        return [c for c in self.checks if c.ok is False]

    @property
    def reason(self) -> str:
        """One line: the failed checks' details, or what is still awaited."""
        if self.outcome == Outcome.FAIL:
            return "; ".join(f"{c.check}: {c.detail}" for c in self.failed)
        return "; ".join(f"{c.check}: {c.detail}" for c in self.checks if c.ok is None)

    def to_json(self) -> dict[str, Any]:
        """JSON form, for evidence."""
        return {"outcome": str(self.outcome), "checks": [c.to_json() for c in self.checks]}


class BakeGate:
    """The gate of one deploy's bake, from ``started_ms`` for ``bake_s`` seconds.

    Args:
        config: The thresholds (``[model.deploy]``).
        baseline: The previous version, as the deploy found it.
        interval_s, timeout_s: The model's probe interval and timeout (how long the canaries
            the bake still needs may take: the grace after the bake).
    """

    def __init__(
        self,
        config: DeployConfig,
        baseline: Baseline,
        *,
        started_ms: int,
        bake_s: float,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self.config = config
        self.baseline = baseline
        self.started_ms = started_ms
        self.bake_ms = int(bake_s * 1000)
        grace_s = config.min_good_canaries * interval_s + timeout_s + 1.0
        self.deadline_ms = started_ms + self.bake_ms + int(grace_s * 1000)
        self.canaries: list[Canary] = []

    @property
    def ends_ms(self) -> int:
        """When the bake window ends."""
        return self.started_ms + self.bake_ms

    def observe(self, canary: Canary) -> None:
        """One probe run of the model during the bake (runs sent before it started are not
        the new version's and are left out)."""
        if canary.ts_ms >= self.started_ms:
            self.canaries.append(canary)

    def good_in_a_row(self) -> int:
        """``ok`` runs at the end of the bake so far, in a row."""
        n = 0
        for c in reversed(self.canaries):
            if not c.ok:
                break
            n += 1
        return n

    def judge(
        self,
        now_ms: int,
        incidents: Iterable[Incident] = (),
        drift: Mapping[str, int] | None = None,
    ) -> Verdict:
        """The verdict now, given the open incidents about the model and its process and the
        model's active drift (group -> since when, epoch ms); drift or an incident that began
        before the bake is not this version's doing."""
        at_once = [
            self._canaries(),
            self._golden(),
            self._incidents(incidents),
            self._drift(drift or {}),
        ]
        if any(c.ok is False for c in at_once):
            return Verdict(Outcome.FAIL, tuple(at_once))
        if now_ms < self.ends_ms:
            return Verdict(Outcome.WAIT, tuple(at_once))
        at_end = [self._latency(), self._throughput()]
        checks = tuple(at_once + at_end)
        if any(c.ok is False for c in at_end):
            return Verdict(Outcome.FAIL, checks)
        need, have = self.config.min_good_canaries, self.good_in_a_row()
        if have >= need:
            return Verdict(Outcome.PASS, checks)
        if now_ms >= self.deadline_ms:
            miss = CheckResult(
                Check.CANARIES,
                False,
                f"only {have} ok canaries in a row by the end of the bake; {need} needed",
                {"good_in_a_row": have, "needed": need},
            )
            return Verdict(Outcome.FAIL, (miss, *checks[1:]))
        return Verdict(Outcome.WAIT, checks)

    # --- the checks ----------------------------------------------------------------------

    def _canaries(self) -> CheckResult:
        bad = [c for c in self.canaries if not c.ok]
        figures = {
            "runs": len(self.canaries),
            "failed": len(bad),
            "good_in_a_row": self.good_in_a_row(),
            "needed": self.config.min_good_canaries,
        }
        if len(bad) > self.config.max_bad_canaries:
            last = bad[-1]
            return CheckResult(
                Check.CANARIES,
                False,
                f"{len(bad)} canaries failed during the bake (at most "
                f"{self.config.max_bad_canaries} allowed); last: {last.category}"
                + (f": {last.error}" if last.error else ""),
                {**figures, "last_failed": last.to_json()},
            )
        if self.good_in_a_row() >= self.config.min_good_canaries:
            return CheckResult(
                Check.CANARIES, True, f"{figures['good_in_a_row']} ok in a row", figures
            )
        return CheckResult(
            Check.CANARIES,
            None,
            f"{self.good_in_a_row()} of {self.config.min_good_canaries} ok canaries in a row",
            figures,
        )

    def _golden(self) -> CheckResult:
        want = self.baseline.answer_sha256
        if not self.config.golden:
            return CheckResult(Check.GOLDEN, None, "off ([model.deploy] golden = false)")
        if want is None:
            why = (
                "the previous version's answers varied (a sampled canary)"
                if self.baseline.answers >= 2
                else "no answers of the previous version to compare with"
            )
            return CheckResult(Check.GOLDEN, None, f"not judged: {why}")
        answered = [c for c in self.canaries if c.answer_sha256 is not None]
        for c in answered:
            if c.answer_sha256 != want:
                return CheckResult(
                    Check.GOLDEN,
                    False,
                    "the canary's answer differs from the previous version's",
                    {
                        "expected_sha256": want,
                        "expected_excerpt": self.baseline.answer_excerpt,
                        "got_sha256": c.answer_sha256,
                        "got_excerpt": c.answer_excerpt,
                    },
                )
        if not answered:
            return CheckResult(Check.GOLDEN, None, "no answer from the new version yet")
        return CheckResult(
            Check.GOLDEN,
            True,
            f"{len(answered)} answers equal the previous version's",
            {"sha256": want},
        )

    def _incidents(self, incidents: Iterable[Incident]) -> CheckResult:
        new = [
            i
            for i in incidents
            if i.kind not in IGNORED_INCIDENTS and i.opened_ms >= self.started_ms
        ]
        if new:
            first = new[0]
            return CheckResult(
                Check.INCIDENTS,
                False,
                f"incident #{first.id} {first.kind} opened during the bake: {first.cause}",
                {"incidents": [{"id": i.id, "kind": i.kind, "subject": i.subject} for i in new]},
            )
        return CheckResult(Check.INCIDENTS, True, "none opened during the bake")

    def _drift(self, drift: Mapping[str, int]) -> CheckResult:
        new = sorted(g for g, since in drift.items() if since >= self.started_ms)
        if new:
            return CheckResult(
                Check.DRIFT, False, f"{', '.join(new)} drift during the bake", {"groups": new}
            )
        return CheckResult(Check.DRIFT, True, "none during the bake")

    def _latency(self) -> CheckResult:
        ok = [c for c in self.canaries if c.ok]
        cfg, base = self.config, self.baseline
        figures: dict[str, Any] = {"ratio_max": cfg.latency_ratio_max, "baseline_runs": base.runs}
        verdicts: list[str] = []
        for metric, base_p95 in (("e2e_ms", base.e2e_p95_ms), ("ttft_ms", base.ttft_p95_ms)):
            now = _p95(getattr(c, metric) for c in ok)
            if base_p95 is None or now is None:
                continue
            figures[metric] = {"p95": round(now, 3), "baseline_p95": round(base_p95, 3)}
            limit = base_p95 * cfg.latency_ratio_max
            if now > limit and now - base_p95 > cfg.latency_min_delta_ms:
                return CheckResult(
                    Check.LATENCY,
                    False,
                    f"{metric} p95 {now:.4g} ms is {now / base_p95:.2f}x the previous version's "
                    f"{base_p95:.4g} ms (at most {cfg.latency_ratio_max:g}x)",
                    figures,
                )
            verdicts.append(f"{metric} p95 {now:.4g} ms vs {base_p95:.4g} ms")
        if not verdicts:
            why = (
                "no ok run of the previous version to compare with"
                if base.runs == 0
                else "no latency measured yet"
            )
            return CheckResult(Check.LATENCY, None, f"not judged: {why}", figures)
        return CheckResult(Check.LATENCY, True, "; ".join(verdicts), figures)

    def _throughput(self) -> CheckResult:
        base = self.baseline.tokens_per_s_p50
        now = _median(c.tokens_per_s for c in self.canaries if c.ok)
        ratio = self.config.throughput_ratio_min
        if base is None or now is None or base <= 0:
            return CheckResult(Check.THROUGHPUT, None, "not judged: no tokens/s to compare")
        figures = {"median": round(now, 3), "baseline_median": round(base, 3), "ratio_min": ratio}
        if now < base * ratio:
            return CheckResult(
                Check.THROUGHPUT,
                False,
                f"median {now:.4g} tokens/s is {now / base:.2f}x the previous version's "
                f"{base:.4g} (at least {ratio:g}x)",
                figures,
            )
        return CheckResult(
            Check.THROUGHPUT, True, f"median {now:.4g} vs {base:.4g} tokens/s", figures
        )


def _present(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


def _p95(values: Iterable[float | None]) -> float | None:
    got = _present(values)
    return percentile(got, 95.0) if got else None


def _median(values: Iterable[float | None]) -> float | None:
    got = _present(values)
    return statistics.median(got) if got else None
