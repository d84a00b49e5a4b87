"""Five-field cron expressions (minute hour day-of-month month day-of-week), in a time zone.

Enough of Vixie cron for maintenance schedules: ``*``, numbers, ranges ``a-b``, lists ``a,b``,
steps ``*/n`` and ``a-b/n``, month and weekday names (``jan``, ``mon``), weekday 0 or 7 for
Sunday. As in Vixie cron, when both day-of-month and day-of-week are restricted, a day matching
either one matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))


def _value(text: str, names: list[str], base: int) -> int:
    low = text.lower()
    if low in names:
        return names.index(low) + base
    if not text.isdigit():
        raise ValueError(f"not a number: {text!r}")
    return int(text)


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    names = _MONTHS if name == "month" else _DAYS if name == "weekday" else []
    base = 1 if name == "month" else 0
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise ValueError(f"{name}: bad step {step_text!r}")
        if rng == "*":
            start, end = lo, hi
        elif "-" in rng:
            a, b = rng.split("-", 1)
            start, end = _value(a, names, base), _value(b, names, base)
        else:
            start = _value(rng, names, base)
            end = hi if step_text else start
        if not lo <= start <= end <= hi:
            raise ValueError(f"{name}: {part!r} is outside {lo}-{hi}")
        out.update(range(start, end + 1, step))
    if name == "weekday" and 7 in out:
        out = (out - {7}) | {0}
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse ``"0 2 * * sun"``.

        Raises:
            ValueError: naming the field that is wrong.
        """
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"expected 5 fields (minute hour day month weekday), got {text!r}")
        sets = [_field(p, n, lo, hi) for p, (n, lo, hi) in zip(parts, _FIELDS, strict=True)]
        minutes, hours, days, months, weekdays = sets
        return cls(minutes, hours, days, months, weekdays, parts[2] == "*", parts[4] == "*")

    def day_matches(self, day: date) -> bool:
        """Whether a calendar day is one this expression runs on."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def latest_start(self, now_ms: int, tz: tzinfo, within_ms: int) -> int | None:
        """The latest time (epoch ms) this expression fired in ``(now_ms - within_ms, now_ms]``,
        matched on the wall clock of ``tz``; None when it did not fire in that span."""
        earliest = now_ms - within_ms
        local_now = datetime.fromtimestamp(now_ms / 1000, tz)
        day = date(local_now.year, local_now.month, local_now.day)
        # Walk back day by day: a window never spans more days than its duration (plus one).
        for _ in range(within_ms // 86_400_000 + 2):
            if self.day_matches(day):
                for hour in sorted(self.hours, reverse=True):
                    for minute in sorted(self.minutes, reverse=True):
                        local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
                        at = int(local.timestamp() * 1000)
                        if earliest < at <= now_ms:
                            return at
            day -= timedelta(days=1)
        return None


def zone(name: str) -> ZoneInfo:
    """A time zone by IANA name (``Europe/Berlin``, ``UTC``).

    Raises:
        ValueError: no such zone.
    """
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError) as exc:
        # OSError: zoneinfo opens a file by the name; one of 100,000 characters is "File name
        # too long" (issue 17, found by tests/fuzz).
        raise ValueError(f"unknown time zone {name!r}") from exc
