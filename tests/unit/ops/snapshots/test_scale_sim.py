"""Snapshot policies at scale on the simulator (docs/snapshots.md, "Scale"): a snapshot round's
remote commands depend on what is due, not on the node's size (the same count on a node of
200 volumes and of 100,000, for the same 40 volumes of a policy); pruning a year of hourly
snapshots is planned from the mirror alone, the result checked against the calendar."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

from conftest import write_sim_inventory

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import location
from xfleet.ops.snapshots import apply, run
from xfleet.ops.snapshots.policy import parse_policies
from xfleet.ops.sync import sync

POLICY = """\
policies:
  - name: hot
    match: {name: "tank/sched/*"}
    schedule: {every: 1h}
    keep: {frequently: 2}
"""
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
HOUR = 3600.0
OURS = 40  # the policy's volumes, on every node


def rounds(tmp_path: Path, volumes: int) -> tuple[list[int], list[tuple[int, int]], float]:
    """Three hourly rounds over the 40 volumes of tank/sched on a node of `volumes` more:
    each round's remote commands, its (taken, pruned), and the seconds of the full sync."""
    tmp_path.mkdir()
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml",
                                             {"n1": {"seed": 7, "volumes": volumes}}))
    db = str(tmp_path / "m.db")
    ps = parse_policies(POLICY)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        t = conns.get("n1")
        t.run(["zfs", "create", "tank/sched"])
        for i in range(OURS):
            t.run(["zfs", "create", "-s", "-V", "1G", f"tank/sched/v{i:02d}"])
        start = time.perf_counter()
        assert sync(inv, db).ok
        synced = time.perf_counter() - start
        out = [run.run_policies(inv, location(db), conns, ps, now=T0 + h * HOUR)
               for h in range(3)]
    assert all(r.ok for r in out), [r.to_dict() for r in out]
    return [r.commands for r in out], [(r.taken, r.pruned) for r in out], synced


def test_a_round_costs_the_same_remote_commands_on_a_100k_volume_node(tmp_path: Path) -> None:
    small, small_done, _ = rounds(tmp_path / "small", 200)
    big, big_done, synced = rounds(tmp_path / "big", 100_000)
    assert small_done == big_done == [(OURS, 0), (OURS, 0), (OURS, OURS)]
    assert small == big, (small, big)
    # a take: one `zfs snapshot` and the re-fetch of the new names (listing, user properties);
    # a prune adds the holds' read and one `zfs destroy vol@a` per volume
    assert small[0] == small[1] <= 4 and small[2] <= small[0] + 2 + OURS + 2, small
    print(f"\n  remote commands per round, 40 due volumes: {small} on a 200-volume node, "
          f"{big} on a 100,000-volume node (its full sync: {synced:.1f} s)")


def _oracle(stamps: list[float], hourly: int, daily: int, monthly: int) -> set[float]:
    """The newest snapshot of each of the newest `n` hours, days and months (UTC), by hand."""
    kept: set[float] = {max(stamps)}  # at_least: 1
    for n, key in ((hourly, "%Y-%m-%d %H"), (daily, "%Y-%m-%d"), (monthly, "%Y-%m")):
        newest: dict[str, float] = {}
        for s in stamps:
            b = dt.datetime.fromtimestamp(s, dt.UTC).strftime(key)
            newest[b] = max(newest.get(b, s), s)
        kept |= {newest[b] for b in sorted(newest, reverse=True)[:n]}
    return kept


def test_pruning_a_year_of_hourly_snapshots_is_planned_from_the_mirror(tmp_path: Path) -> None:
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml",
                                             {"n1": {"seed": 8, "volumes": 20}}))
    db = str(tmp_path / "m.db")
    assert sync(inv, db).ok
    ps = parse_policies(POLICY.replace('"tank/sched/*"', '"tank/year"').replace(
        "frequently: 2", "hourly: 24, daily: 30, monthly: 12"))
    p = ps.policies[0]
    stamps = [T0 - h * HOUR for h in range(8760)]  # a year of hourly snapshots
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("INSERT INTO datasets (node, pool, name, type, volsize, synced_at, "
                         "sync_run) VALUES ('n1', 'tank', 'tank/year', 'volume', 1073741824, "
                         "0, 0)")
            conn.executemany(
                "INSERT INTO datasets (node, pool, name, type, creation, used, synced_at, "
                "sync_run) VALUES ('n1', 'tank', ?, 'snapshot', ?, 4096, 0, 0)",
                [(f"tank/year@{p.snapshot_name(s)}", int(s)) for s in stamps])
    finally:
        conn.close()
    kept = _oracle(stamps, 24, 30, 12)
    conn2 = mirror.connect(db)
    try:
        start = time.perf_counter()
        plan = apply.prune(conn2, ps, inventory=inv)
        took = time.perf_counter() - start
    finally:
        conn2.close()
    pruned = {name for _, name, _ in plan.destroyed}
    assert pruned == {f"tank/year@{p.snapshot_name(s)}" for s in stamps if s not in kept}
    # 24 hours (08:00 back to yesterday 09:00: yesterday's 23:00 is also its day's newest),
    # 28 more days, 10 more months (December's newest, the 31st 23:00, is one of the days)
    assert len(kept) == 24 + 28 + 10
    assert len(plan.destroyed) == 8760 - len(kept)
    # one `zfs destroy vol@a,b,...` per argv budget (64 KiB), not one per snapshot
    assert all(c.argv[:2] == ["zfs", "destroy"] for c in plan.commands)
    assert len(plan.commands) < 20, len(plan.commands)
    print(f"\n  a year of hourly snapshots (8,760) on one volume: {len(plan.destroyed)} to "
          f"prune, {len(kept)} kept, planned from the mirror in {took:.2f} s, "
          f"{len(plan.commands)} zfs destroy command(s)")
