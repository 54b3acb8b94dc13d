"""The snapshot policies on their schedules (xfleet/ops/scheduler.py): ticks on the policies'
slots with stable offsets, a tick that takes the due snapshots and replicates them, and the
catch-up after downtime: one snapshot per volume and one incremental per replica, whatever the
number of missed slots. The clock is injected; the simulated fleet is the moves' (n1 with
tank/app/db, n2)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

from unit.ops.moves.conftest import Fleet, node
from unit.ops.moves.conftest import fleet as fleet  # noqa: F401 (a fixture)
from unit.ops.replicate.conftest import POLICY
from xfleet import mirror
from xfleet.ops.scheduler import Scheduler, next_tick, offset
from xfleet.ops.snapshots.policy import parse_policies

VOL = "tank/app/db"


def _t(text: str, tz: str = "UTC") -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def _pol(*schedules: str) -> str:
    return "policies:\n" + "".join(
        f"  - name: p{i}\n    match: {{name: \"tank/p{i}/*\"}}\n    schedule: {s}\n"
        "    keep: {hourly: 2}\n" for i, s in enumerate(schedules))


def test_ticks_fall_on_the_earliest_next_slot_of_the_policies() -> None:
    both = parse_policies(_pol('{every: 15m}', '{hourly: ":05"}'))
    assert next_tick(both, _t("2026-12-06 10:07:00")) == _t("2026-12-06 10:15:00")
    assert next_tick(both, _t("2026-12-06 10:00:00")) == _t("2026-12-06 10:05:00")
    assert next_tick(both, _t("2026-12-06 10:05:00")) == _t("2026-12-06 10:15:00")
    daily = parse_policies(_pol('{daily: "04:00"}').replace(
        "    keep:", "    timezone: Europe/Berlin\n    keep:"))
    # across the end of summer time (Oct 25, 03:00 -> 02:00): the next local 04:00 is 25 h on
    at = _t("2026-10-24 04:00:00", "Europe/Berlin")
    got = next_tick(daily, at)
    assert got == _t("2026-10-25 04:00:00", "Europe/Berlin") and got - at == 25 * 3600


def test_offsets_spread_policies_stably_within_half_a_period() -> None:
    pols = parse_policies(_pol(*['{every: 15m}'] * 6)).policies
    offs = [offset(p, 60) for p in pols]
    assert offs == [offset(p, 60) for p in pols]  # stable: a hash of the name
    assert all(0 <= o < 60 for o in offs) and len(set(offs)) > 1
    assert offset(pols[0], 0) == 0
    assert all(offset(p, 3600) < 450 for p in pols)  # at most half the 15-minute period
    shifted = parse_policies(_pol('{every: 15m}'))
    base = _t("2026-12-06 10:07:00")
    tick = next_tick(shifted, base, spread=60)
    assert tick == _t("2026-12-06 10:15:00") + offset(shifted.policies[0], 60)


def _snaps(fleet: Fleet, node_name: str) -> list[str]:
    t = node(fleet[0], node_name)
    out = t.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", VOL],
                check=False).stdout
    return [x.split("@", 1)[1] for x in out.splitlines()]


def test_a_tick_takes_the_due_snapshots_and_replicates_and_catches_up_once(
        fleet: Fleet, tmp_path: Path) -> None:
    inv, _, _ = fleet
    policy = tmp_path / "snapshots.yaml"
    policy.write_text(POLICY)
    sched = Scheduler(lambda: inv, inv.mirror, policy, spread=0)
    now = dt.datetime.now(dt.UTC).timestamp()
    first = sched.tick(now)
    assert first.error is None, first
    assert first.snapshots and first.snapshots["taken"] == 1, first.snapshots
    assert first.replication and [s["how"] for s in first.replication["sent"]] == ["full"]
    taken = [s for s in _snaps(fleet, "n1") if s.startswith("xfleet_app_")]
    assert len(taken) == 1
    assert _snaps(fleet, "n2") == taken  # the copy holds the policy's snapshot

    again = sched.tick(now + 1)  # the same slot: nothing due, nothing to send
    assert again.snapshots and again.snapshots["taken"] == 0
    assert again.replication and again.replication["sent"] == []

    # "down" for ten slots: the next tick takes ONE snapshot per volume, not ten
    node(inv, "n1").write(VOL, 3 << 20)
    late = sched.tick(now + 10 * 900)
    assert late.snapshots and late.snapshots["taken"] == 1, late.snapshots
    after = [s for s in _snaps(fleet, "n1") if s.startswith("xfleet_app_")]
    assert len(after) == 2 and after[0] == taken[0]
    assert late.replication and [(s["how"], s["snapshot"]) for s in
                                 late.replication["sent"]] == [("incremental", after[1])]
    conn = mirror.connect(inv.mirror)
    try:
        runs = [r[0] for r in conn.execute("SELECT state FROM snapshot_runs ORDER BY id")]
    finally:
        conn.close()
    assert runs == ["done", "done", "done"]


def test_run_ticks_at_start_then_on_the_schedule_until_stopped(
        fleet: Fleet, tmp_path: Path) -> None:
    """The loop with an injected clock that moves 5 minutes per reading: it ticks at start
    (10:12), then at the next slot after the tick ended (the tick "took" until 10:17, so
    10:15 is skipped: the 10:30 tick takes what is due, once), and stops when told (no real
    waiting)."""
    inv, _, _ = fleet
    policy = tmp_path / "snapshots.yaml"
    policy.write_text(POLICY)
    start = _t("2026-12-06 10:07:00")
    clock = [start]

    def now() -> float:
        clock[0] += 300
        return clock[0]

    stop = threading.Event()
    said: list[str] = []

    def say(msg: str) -> None:
        said.append(msg)
        if sum(m.startswith("snapshot tick") for m in said) == 3:
            stop.set()

    sched = Scheduler(lambda: inv, inv.mirror, policy, spread=0, clock=now, say=say)
    sched.run(stop)
    ticks = [t.at for t in sched.ticks]
    assert ticks == [start + 300, _t("2026-12-06 10:30:00"), _t("2026-12-06 10:45:00")]
    assert [m for m in said if m.startswith("next snapshot tick")][:2] == [
        f"next snapshot tick {_local('2026-12-06 10:30:00')}",
        f"next snapshot tick {_local('2026-12-06 10:45:00')}"]


def _local(utc: str) -> str:
    return dt.datetime.fromtimestamp(_t(utc)).strftime("%Y-%m-%d %H:%M:%S")


def test_a_broken_policy_file_keeps_the_last_good_one(fleet: Fleet, tmp_path: Path) -> None:
    inv, _, _ = fleet
    policy = tmp_path / "snapshots.yaml"
    policy.write_text(POLICY)
    sched = Scheduler(lambda: inv, inv.mirror, policy)
    good = sched.policies()
    policy.write_text("policies: [oops\n")
    assert sched.policies() is good
