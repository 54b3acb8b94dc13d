"""A policy's plan from the mirror (xfleet/ops/snapshots/plan.py), on both engines: the volumes
due a snapshot per pool, and the policy's own snapshots its retention prunes (never a clone's
origin, never another policy's or a hand-made snapshot), with their bytes."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import write_sim_inventory

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops.snapshots.plan import plan, status
from xfleet.ops.snapshots.policy import parse_policies
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

POLICIES = """\
policies:
  - name: db
    match: {name: "tank/snap/db*"}
    schedule: {hourly: ":00"}
    keep: {frequently: 2, at_least: 1}
"""


def test_plan_counts_due_volumes_and_prunes_the_oldest(tmp_path: Path, mirror_at: str) -> None:
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml",
                                             {"n1": {"seed": 5, "volumes": 50}}))
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    ps = parse_policies(POLICIES)
    db = ps.policies[0]
    t.run(["zfs", "create", "-p", "tank/snap"])
    vols = ["tank/snap/db1", "tank/snap/db 2:x", "tank/snap/other"]
    for v in vols:
        t.run(["zfs", "create", "-s", "-V", "1G", v])
    base = time.time()
    for i in range(4):  # four of the policy's snapshots per volume, in one command each
        t.run(["zfs", "snapshot", *(f"{v}@{db.snapshot_name(base + i)}" for v in vols)])
    t.run(["zfs", "snapshot", "tank/snap/db1@by-hand"])
    oldest = f"tank/snap/db1@{db.snapshot_name(base)}"
    t.run(["zfs", "clone", oldest, "tank/snap/clone-of-oldest"])  # protects it
    assert sync(inv, mirror_at).ok
    conn = mirror.connect(mirror_at, readonly=True)
    try:
        now = conn.execute("SELECT max(creation) FROM datasets WHERE name LIKE "
                           "'tank/snap/db1@xfleet_%'").fetchone()[0]
        p = plan(conn, ps, now=now)
        (pool,) = p.pools
        assert (pool.policy, pool.node, pool.pool, pool.volumes, pool.due) == (
            "db", "n1", "tank", 2, 0)  # db1 and 'db 2:x'; just taken: not due
        assert pool.snapshots == 8
        pruned = {r["snapshot"] for r in p.prunes}
        expected = {f"tank/snap/db 2:x@{db.snapshot_name(base + i)}" for i in (0, 1)} | {
            f"tank/snap/db1@{db.snapshot_name(base + 1)}"}  # db1's oldest is an origin
        assert pruned == expected and pool.prune == 3
        used = conn.execute(
            f"SELECT sum(used) FROM datasets WHERE name IN ({', '.join('?' for _ in expected)})",
            sorted(expected)).fetchone()[0]
        assert pool.prune_bytes == used
        later = plan(conn, ps, now=now + 3600)
        assert later.pools[0].due == 2  # the next hour's slot
    finally:
        conn.close()


def test_status_per_policy_and_tenant_against_the_schedule(tmp_path: Path,
                                                           mirror_at: str) -> None:
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml",
                                             {"n1": {"seed": 6, "volumes": 40, "tenants": 2}}))
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    ps = parse_policies("policies:\n  - name: all\n    schedule: {every: 1h}\n"
                        "    keep: {hourly: 24}\n")
    p = ps.policies[0]
    first = t.run(["zfs", "list", "-H", "-o", "name", "-t", "volume"]).stdout.split()[0]
    t.run(["zfs", "snapshot", f"{first}@{p.snapshot_name(time.time())}"])
    assert sync(inv, mirror_at).ok
    conn = mirror.connect(mirror_at, readonly=True)
    try:
        created = conn.execute("SELECT creation FROM datasets WHERE name LIKE ?",
                               (f"{first}@xfleet_all_%",)).fetchone()[0]
        by_tenant = {tenant: n for tenant, n in conn.execute(
            "SELECT tenant, count(*) FROM datasets WHERE type = 'volume' GROUP BY tenant")}
        rows = status(conn, ps, now=created + 2 * 3600)  # two slots later
    finally:
        conn.close()
    assert {r["tenant"]: r["volumes"] for r in rows} == by_tenant
    snapped = next(r for r in rows if r["tenant"] == first.split("/")[1])
    assert snapped["never"] == snapped["volumes"] - 1 and snapped["behind"] == snapped["volumes"]
    assert snapped["oldest_newest_age"] == 7200 and snapped["lag_periods"] == 2
    other = next(r for r in rows if r is not snapped)
    assert other["never"] == other["behind"] == other["volumes"]
    assert other["oldest_newest_age"] is None
