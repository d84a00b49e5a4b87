"""The two extension points of ``probes``: resource collectors and model probes.

Collectors are synchronous (psutil and NVML calls block); the agent runs them in a worker
thread. Probes are asynchronous (they speak HTTP) and are given the agent's shared HTTP client
(:class:`probes.httpclient.HttpClient`). Neither ever writes to storage or renders anything:
they return records.

A probe's failure is a result, never an exception: ``run`` returns a ``ProbeRun`` whose category
says what went wrong. The agent still wraps every run in a timeout as a second line of defence.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from storage.records import ProbeRun, Sample, make_labels
from storage.tomlschema import Invalid, decode

if TYPE_CHECKING:
    from probes.httpclient import HttpClient

CATEGORIES = (
    "ok",
    "slow",
    "wrong_output",
    "http_error",
    "timeout",
    "refused",
    "protocol_error",
    "stalled",
)
"""Every probe run ends in exactly one of these. ``stalled`` is the metrics scrape's verdict:
requests are running but the generated-token counter has not moved for N intervals."""

ERROR_TEXT_LIMIT = 500
"""Error texts are kept, truncated to this many characters, so one chatty server cannot bloat
the database or the TUI."""


def now_ms() -> int:
    """Wall-clock now as UTC epoch milliseconds (the stored timestamp unit)."""
    return time.time_ns() // 1_000_000


def truncate_error(text: str) -> str:
    """Keep error texts short enough to store and show."""
    if len(text) <= ERROR_TEXT_LIMIT:
        return text
    return text[: ERROR_TEXT_LIMIT - 1] + "…"


class Collector(ABC):
    """Collects resource samples. ``collect`` is blocking and runs off the event loop."""

    name: ClassVar[str]

    @abstractmethod
    def collect(self, ts_ms: int) -> list[Sample]:
        """Return the samples for this instant. Must not raise for a normal absence (no GPU)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most collectors hold nothing
        """Release what the collector holds (NVML handles, ...)."""


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """What a probe needs to know about the model it probes, independent of the config file."""

    name: str
    url: str
    timeout_s: float
    options: Mapping[str, Any] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    """Bearer credential for the probed server (from an env var or file named in the config).
    Never stored, logged or served: ``repr`` hides it and :func:`redact` scrubs error texts."""

    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` header for servers that want a bearer key, else nothing."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


ARTIFACT_MAX_CHARS = 256


def artifact_info(identity: object, kind: str, time_ms: int | None = None) -> dict[str, Any]:
    """The ``info`` keys naming what a server serves; the agent records each change of
    ``artifact`` as a deployment.

    Args:
        identity: the artifact's identity (a file sha256, Ollama's digest, TGI's model_sha,
            the path vLLM serves from); nothing is recorded when it is empty or not a string.
        kind: what the identity is (``sha256``, ``ollama_digest``, ``tgi_model_sha``,
            ``served_root``), so a report can say what changed.
        time_ms: when the artifact was made (file mtime, Ollama's modified_at), for lead time.
    """
    if not isinstance(identity, str) or not identity:
        return {}
    # A server's string, kept in every deployment event: bounded like any text it sends.
    out: dict[str, Any] = {"artifact": identity[:ARTIFACT_MAX_CHARS], "artifact_kind": kind}
    if time_ms is not None:
        out["artifact_time_ms"] = time_ms
    return out


def redact(text: str, secret: str | None) -> str:
    """Remove a secret from a text (a server may echo the key back in an error)."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text


class OptionError(ValueError):
    """A probe option is wrong. ``field`` names it; the message says what was expected."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


class Probe(ABC):
    """Sends one canary request to one model and measures it."""

    protocol: ClassVar[str]
    allowed_options: ClassVar[frozenset[str]] = frozenset()
    """Keys this protocol accepts in ``[model.canary]``; anything else is refused at load."""
    options_schema: ClassVar[type[Any] | None] = None
    """The protocol's options as a msgspec Struct (:mod:`probes.options`); when set, it is what
    :meth:`check_options` checks keys, types and bounds against."""

    def __init__(self, target: ProbeTarget) -> None:
        self.target = target
        self._samples: list[Sample] = []
        self.info: dict[str, Any] = {}
        """What the probe learned about the model (ONNX opset and sha256, server-reported
        model metadata, ...), JSON-serialisable; the API shows it beside the model."""
        self.last_output: str | None = None
        """The answer text of the last run, where the protocol has one (drift checks compare
        it run to run); None where it has none or the run got no answer."""

    def add_sample(self, name: str, value: float, ts_ms: int, **labels: str) -> None:
        """Queue a series value measured during a run (the model label is added).

        For what is not a latency of the run itself: a scraped server gauge, Ollama's own
        eval timings, an ONNX model's per-iteration latencies.
        """
        self._samples.append(
            Sample(name, make_labels(labels, model=self.target.name), ts_ms, float(value))
        )

    def drain_samples(self) -> list[Sample]:
        """Hand the queued samples to the agent (called after each run) and forget them."""
        out, self._samples = self._samples, []
        return out

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the probe holds (a worker subprocess, ...); called on removal."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Validate ``[model.canary]`` for this protocol; raise OptionError naming the key."""
        if cls.options_schema is not None:
            try:
                decode(dict(options), cls.options_schema)
            except Invalid as exc:
                raise OptionError(str(exc.parts[0]) if exc.parts else "", exc.reason) from None
            return
        for key in options:
            if key not in cls.allowed_options:
                expected = ", ".join(sorted(cls.allowed_options)) or "no keys"
                raise OptionError(
                    key,
                    f"unknown canary option for protocol "
                    f"{cls.protocol!r}; expected one of: {expected}",
                )

    @abstractmethod
    async def run(self, session: HttpClient) -> ProbeRun:
        """Probe once and return the result; never raise for a failing server."""

    def failed(
        self,
        category: str,
        error: str,
        *,
        ts_ms: int,
        e2e_ms: float | None = None,
        status: int | None = None,
    ) -> ProbeRun:
        """Build a failed run with a truncated error text."""
        return ProbeRun(
            model=self.target.name,
            ts_ms=ts_ms,
            ok=False,
            category=category,
            e2e_ms=e2e_ms,
            status=status,
            error=truncate_error(error),
        )


PROBES: dict[str, type[Probe]] = {}
"""Probe classes by protocol name. Filled explicitly by ``probes.registry``."""


def register(cls: type[Probe]) -> type[Probe]:
    """Add a probe class to :data:`PROBES` under its ``protocol``."""
    PROBES[cls.protocol] = cls
    return cls
