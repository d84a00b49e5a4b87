"""What the fuzz targets share: the budget, a deadline per example, and the counts of inputs
accepted and refused per target.

The budget is a hypothesis settings profile chosen by ``HYPOTHESIS_PROFILE``: ``ci`` (the
default, what ``make test`` runs: a bounded, derandomized budget, so the run is the same every
time) or ``fuzz`` (``make fuzz``: random, many more examples, ``VIGIL_FUZZ_EXAMPLES`` per
target when set). Profiles are applied per test (``@budget(...)``), never loaded globally, so the
unit tests' own hypothesis settings are untouched.

A hang is a failure, not a slow example: :func:`deadline` arms SIGALRM around one example and
raises :class:`Hang` (a BaseException, so no ``except Exception`` in the code under test can
swallow it) in whatever Python code is running when it fires, a CPU-bound loop included.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hypothesis import HealthCheck, event, settings

PROFILE = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "ci"
EXAMPLE_DEADLINE_S = 10.0
"""One example's wall-clock limit. Generous (a shared 2-core machine under a parallel test run
can stall a process for a second or two); anything near it is a hang, not a slow input."""

_COMMON = {
    # Timing is the deadline's job (a hard limit); hypothesis' own deadline would fail an
    # example that was merely scheduled late on a busy machine.
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("fuzz", **_COMMON)  # type: ignore[arg-type]

COUNTS: defaultdict[str, Counter[str]] = defaultdict(Counter)
"""Per target, how many inputs ended each way (``accepted``, ``refused``, a probe category)."""


def budget(ci: int = 150, fuzz: int = 20_000) -> settings:
    """The settings of one fuzz test: ``ci`` examples in the ci profile, ``fuzz`` (or
    ``VIGIL_FUZZ_EXAMPLES``) in the fuzz profile."""
    examples = int(os.environ.get("VIGIL_FUZZ_EXAMPLES") or fuzz) if PROFILE == "fuzz" else ci
    return settings(settings.get_profile(PROFILE), max_examples=examples)


def outcome(target: str, kind: str) -> None:
    """Count how one input of ``target`` ended (also a hypothesis event, for
    ``--hypothesis-show-statistics``)."""
    COUNTS[target][kind] += 1
    event(f"{target}: {kind}")


class Hang(BaseException):
    """An example ran past :data:`EXAMPLE_DEADLINE_S`."""


@contextmanager
def deadline(what: str, seconds: float = EXAMPLE_DEADLINE_S) -> Iterator[None]:
    """Raise :class:`Hang` naming ``what`` if the block runs longer than ``seconds``.

    pytest-timeout arms the same timer for the whole test; it is saved and re-armed with what
    was left of it.
    """

    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"{what}: still running after {seconds:g}s (a hang)")

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, fire)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            left = max(old_delay - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)
