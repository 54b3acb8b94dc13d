"""Retention (xfleet/ops/snapshots/retention.py): the newest snapshot per time bucket, in the
policy's time zone; at_least and protected snapshots are never pruned."""

from __future__ import annotations

import datetime as dt

from xfleet.ops.snapshots.retention import Keep, Snap, decide

T0 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC).timestamp()  # a Monday
HOUR = 3600.0


def hourly(hours: int) -> list[Snap]:
    return [Snap(f"s{i:03d}", T0 + i * HOUR) for i in range(hours)]


def test_hourly_and_daily_buckets_keep_the_newest_of_each() -> None:
    snaps = hourly(72)  # three days of hourly snapshots, s000 .. s071
    d = decide(snaps, Keep(hourly=24, daily=7, at_least=1))
    kept = set(d.keep)
    assert {f"s{i:03d}" for i in range(48, 72)} <= kept  # the newest 24 hours
    assert {"s023", "s047", "s071"} <= kept  # the newest of each day
    assert kept == {f"s{i:03d}" for i in range(48, 72)} | {"s023", "s047"}
    assert d.prune == [s.name for s in snaps if s.name not in kept]  # oldest first
    assert d.keep["s071"] == "at_least" and d.keep["s023"] == "daily"


def test_weeks_months_years_and_frequently() -> None:
    days = [Snap(f"d{i:03d}", T0 + i * 86400) for i in range(400)]
    d = decide(days, Keep(frequently=3, weekly=2, monthly=2, yearly=2, at_least=0))
    assert {s.name for s in days[-3:]} <= set(d.keep)
    # ISO week buckets: the newest day of each of the newest two weeks
    weeks: dict[tuple[int, int], str] = {}
    for s in days:  # oldest first: the last written is a week's newest
        iso = dt.datetime.fromtimestamp(s.creation, dt.UTC).isocalendar()
        weeks[(iso.year, iso.week)] = s.name
    assert set(list(weeks.values())[-2:]) <= set(d.keep)
    months: dict[tuple[int, int], str] = {}
    for s in days:
        t = dt.datetime.fromtimestamp(s.creation, dt.UTC)
        months[(t.year, t.month)] = s.name
    assert set(list(months.values())[-2:]) <= set(d.keep)
    years = {dt.datetime.fromtimestamp(s.creation, dt.UTC).year: s.name for s in days}
    assert set(years.values()) <= set(d.keep)  # 2026's and 2027's newest
    assert len(d.keep) + len(d.prune) == len(days)


def test_the_time_zone_decides_the_day() -> None:
    # 23:30 UTC is already the next day in Berlin (UTC+1 in March)
    a = Snap("a", dt.datetime(2026, 3, 2, 22, 0, tzinfo=dt.UTC).timestamp())
    b = Snap("b", dt.datetime(2026, 3, 2, 23, 30, tzinfo=dt.UTC).timestamp())
    assert set(decide([a, b], Keep(daily=2, at_least=0), "UTC").keep) == {"b"}
    assert set(decide([a, b], Keep(daily=2, at_least=0), "Europe/Berlin").keep) == {"a", "b"}


def test_protected_and_at_least_are_never_pruned() -> None:
    snaps = hourly(10)
    snaps[2] = Snap(snaps[2].name, snaps[2].creation, protected=True)  # a clone's origin
    d = decide(snaps, Keep(frequently=1, at_least=3))
    assert d.keep["s002"] == "protected"
    assert {"s009", "s008", "s007"} <= set(d.keep)
    assert d.prune == ["s000", "s001", "s003", "s004", "s005", "s006"]
    assert decide([], Keep(hourly=1)).prune == []
