"""Schedules (xfleet/ops/snapshots/schedule.py): slots, due, caught up once, time zones."""

from __future__ import annotations

import datetime as dt

import pytest

from xfleet.core.errors import UsageError
from xfleet.ops.snapshots.schedule import Schedule, parse_every


def at(text: str, tz: str = "UTC") -> float:
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_every_15_minutes() -> None:
    s = Schedule.parse("every", "15m")
    assert s.last_slot(at("2026-03-02T10:07:00")) == at("2026-03-02T10:00:00")
    assert s.due(at("2026-03-02T09:58:00"), at("2026-03-02T10:07:00"))
    assert not s.due(at("2026-03-02T10:01:00"), at("2026-03-02T10:07:00"))
    assert s.due(None, at("2026-03-02T10:07:00"))
    # two days down: due, once (the next check after the snapshot is not due)
    assert s.due(at("2026-02-28T10:00:00"), at("2026-03-02T10:07:00"))
    assert not s.due(at("2026-03-02T10:07:00"), at("2026-03-02T10:08:00"))
    assert s.overdue(at("2026-03-02T09:58:00"), at("2026-03-02T10:07:00")) == 7 * 60
    assert s.overdue(at("2026-03-02T10:01:00"), at("2026-03-02T10:07:00")) == 0


def test_hourly_and_daily_in_a_time_zone() -> None:
    h = Schedule.parse("hourly", ":05")
    assert h.last_slot(at("2026-03-02T10:04:00")) == at("2026-03-02T09:05:00")
    assert h.last_slot(at("2026-03-02T10:05:00")) == at("2026-03-02T10:05:00")
    d = Schedule.parse("daily", "02:30", "Europe/Berlin")
    now = at("2026-03-02T02:00:00", "Europe/Berlin")  # before today's slot
    assert d.last_slot(now) == at("2026-03-01T02:30:00", "Europe/Berlin")
    assert d.last_slot(at("2026-03-02T03:00:00", "Europe/Berlin")) == \
        at("2026-03-02T02:30:00", "Europe/Berlin")
    assert d.period == 86400 and h.period == 3600


@pytest.mark.parametrize(("kind", "value", "tz", "words"), [
    ("every", "7m", "UTC", "does not divide a day"),
    ("every", "30s", "UTC", "under a minute"),
    ("every", "soon", "UTC", "cannot read"),
    ("hourly", "5", "UTC", ":MM"),
    ("daily", "25:00", "UTC", "HH:MM"),
    ("weekly", "mon", "UTC", "unknown schedule"),
    ("every", "1h", "Mars/Olympus", "unknown time zone"),
])
def test_bad_schedules_are_clear_errors(kind: str, value: str, tz: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        Schedule.parse(kind, value, tz)


def test_intervals() -> None:
    assert parse_every("15m") == 900 and parse_every("2d") == 172800 and parse_every("1h") == 3600
