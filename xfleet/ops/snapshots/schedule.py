"""When a policy's snapshot is due: `every: 15m`, `hourly: ":MM"`, `daily: "HH:MM"`, in the
policy's time zone (pure: the clock is an argument).

A schedule has slots (the instants a snapshot is meant for). A snapshot is due when the newest
one is older than the latest slot at or before now: after downtime, the missed slots are
caught up by ONE snapshot (the latest slot's), never one per missed slot.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from xfleet.core.errors import UsageError

_EVERY = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_MM = re.compile(r"^\s*:(\d{2})\s*$")


def parse_duration(text: str, what: str = "interval") -> int:
    """'15m' -> 900 seconds (s, m, h, d)."""
    m = _EVERY.match(text)
    if not m:
        raise UsageError(f"cannot read the {what} {text!r}", hint="e.g. 15m, 1h, 2d")
    return int(m.group(1)) * _UNIT[m.group(2)]


def parse_every(text: str) -> int:
    """'15m' -> 900 seconds (s, m, h, d); at least a minute, dividing a day if under one."""
    seconds = parse_duration(text)
    if seconds < 60:
        raise UsageError(f"interval {text!r} is under a minute",
                         hint="snapshots at most once a minute (each is one zfs snapshot)")
    if seconds < 86400 and 86400 % seconds:
        raise UsageError(f"interval {text!r} does not divide a day",
                         hint="pick 5m, 10m, 15m, 20m, 30m, 1h, 2h, 3h, 4h, 6h, 8h or 12h "
                         "so the slots fall at the same times every day")
    return seconds


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r}",
                         hint="an IANA name such as UTC, Europe/Berlin, America/New_York") \
            from None


@dataclass(frozen=True)
class Schedule:
    """One of: `every` seconds (slots at multiples of it from local midnight), `hourly` at a
    minute, `daily` at a local time."""

    every: int | None = None
    minute: int | None = None  # hourly at :MM
    daily: tuple[int, int] | None = None  # (hour, minute)
    tz: str = "UTC"

    @classmethod
    def parse(cls, kind: str, value: str, tz: str = "UTC") -> Schedule:
        zone(tz)  # an unknown zone is an error now, not at the first slot
        if kind == "every":
            return cls(every=parse_every(value), tz=tz)
        if kind == "hourly":
            m = _MM.match(value)
            if not m or int(m.group(1)) > 59:
                raise UsageError(f"hourly {value!r} is not ':MM'", hint='e.g. hourly: ":05"')
            return cls(minute=int(m.group(1)), tz=tz)
        if kind == "daily":
            m = _HHMM.match(value)
            if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
                raise UsageError(f"daily {value!r} is not 'HH:MM'", hint='e.g. daily: "02:30"')
            return cls(daily=(int(m.group(1)), int(m.group(2))), tz=tz)
        raise UsageError(f"unknown schedule {kind!r}", hint="every, hourly or daily")

    @property
    def period(self) -> int:
        """Seconds between slots."""
        if self.every is not None:
            return self.every
        return 3600 if self.minute is not None else 86400

    def last_slot(self, now: float) -> float:
        """The latest slot at or before `now` (unix time)."""
        tzinfo = zone(self.tz)
        local = dt.datetime.fromtimestamp(now, tzinfo)
        if self.daily is not None:
            hour, minute = self.daily
            for back in range(0, 3):  # today's slot, else yesterday's (DST: a day may lack it)
                day = (local - dt.timedelta(days=back)).date()
                slot = dt.datetime.combine(day, dt.time(hour, minute), tzinfo)
                if slot.timestamp() <= now:
                    return slot.timestamp()
            raise AssertionError("a daily slot within three days")
        if self.minute is not None:
            at = local.replace(minute=self.minute, second=0, microsecond=0).timestamp()
            return at if at <= now else at - 3600  # in real seconds: right across DST
        assert self.every is not None
        if self.every >= 86400:  # whole days: from the epoch's local midnights
            days = self.every // 86400
            midnight = dt.datetime.combine(local.date(), dt.time(0), tzinfo)
            ordinal = local.date().toordinal()
            return (midnight - dt.timedelta(days=ordinal % days)).timestamp()
        start = dt.datetime.combine(local.date(), dt.time(0), tzinfo).timestamp()
        return start + ((now - start) // self.every) * self.every

    def due(self, newest: float | None, now: float) -> bool:
        """Whether a snapshot is due, given the newest one's creation time (None: none)."""
        return newest is None or newest < self.last_slot(now)

    def overdue(self, newest: float | None, now: float) -> float | None:
        """How far behind the schedule: seconds since the first slot the newest snapshot
        missed (0 when current; None when there is no snapshot at all)."""
        if newest is None:
            return None
        slot = self.last_slot(now)
        if newest >= slot:
            return 0.0
        first_missed = self.last_slot(newest + self.period) if newest + self.period <= now \
            else slot
        return max(0.0, now - first_missed)
