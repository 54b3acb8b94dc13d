"""Which snapshots a policy keeps (pure: the snapshots and the clock are arguments).

A grid of the newest snapshot per time bucket, as restic's and borg's `--keep-*` do:
`frequently: N` keeps the N newest snapshots; `hourly: N` the newest snapshot of each of the N
newest hours that have one (in the policy's time zone), `daily`, `weekly` (ISO weeks),
`monthly`, `yearly` likewise. The kept set is the union, plus the `at_least` newest whatever
their age, plus every protected snapshot (held, a clone's origin, a move's or a replica's
base: the caller says which): a protected snapshot is never pruned and never counted as a
bucket's choice.

Compared with sanoid (docs/snapshots.md "Compared with sanoid", checked against real sanoid by
tests/unit/ops/snapshots/test_sanoid_parity.py): sanoid takes a snapshot per granularity
(`autosnap_..._daily`) and prunes each by age and count; here one snapshot serves every
granularity whose bucket it is the newest of. The same hours, days and weeks are kept; a day
is represented by its newest snapshot here, by its first in sanoid.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

GRANULARITIES = ("frequently", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Snap:
    name: str
    creation: float  # unix time
    protected: bool = False


@dataclass(frozen=True)
class Keep:
    frequently: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    at_least: int = 1  # the newest N are never pruned, whatever the grid says

    def counts(self) -> dict[str, int]:
        return {g: getattr(self, g) for g in GRANULARITIES}


def _bucket(g: str, tz: ZoneInfo) -> Callable[[float], tuple[int, ...]]:
    def key(t: float) -> tuple[int, ...]:
        d = dt.datetime.fromtimestamp(t, tz)
        if g == "hourly":
            return (d.year, d.month, d.day, d.hour)
        if g == "daily":
            return (d.year, d.month, d.day)
        if g == "weekly":
            iso = d.isocalendar()
            return (iso.year, iso.week)
        if g == "monthly":
            return (d.year, d.month)
        return (d.year,)
    return key


@dataclass(frozen=True)
class Decision:
    keep: dict[str, str]  # name -> why ("hourly", "protected", "at_least", ...)
    prune: list[str]  # oldest first


def decide(snaps: Sequence[Snap], keep: Keep, tz: str = "UTC") -> Decision:
    """Which of `snaps` (one dataset's snapshots of one policy) to keep and which to prune."""
    zone = ZoneInfo(tz)
    newest_first = sorted(snaps, key=lambda s: (s.creation, s.name), reverse=True)
    why: dict[str, str] = {}
    for s in newest_first:
        if s.protected:
            why[s.name] = "protected"
    candidates = [s for s in newest_first if not s.protected]
    for s in candidates[:max(0, keep.at_least)]:
        why.setdefault(s.name, "at_least")
    for s in candidates[:keep.frequently]:
        why.setdefault(s.name, "frequently")
    for g in GRANULARITIES[1:]:
        n = getattr(keep, g)
        if n <= 0:
            continue
        key = _bucket(g, zone)
        seen: set[tuple[int, ...]] = set()
        for s in candidates:  # newest first: the first of a bucket is its newest
            b = key(s.creation)
            if b in seen:
                continue
            seen.add(b)
            why.setdefault(s.name, g)
            if len(seen) >= n:
                break
    prune = [s.name for s in sorted(candidates, key=lambda s: (s.creation, s.name))
             if s.name not in why]
    return Decision(keep=why, prune=prune)
