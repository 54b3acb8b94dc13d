"""A policy run on simulated nodes (xfleet/ops/snapshots/apply.py), on both engines: the due
volumes get their snapshot in one `zfs snapshot` per pool whatever their number, a second run
in the same slot takes nothing, and the retention's prunes go in `zfs destroy vol@a,b` per
volume; the mirror follows."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import write_sim_inventory

from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.mirror.backend import location
from xfleet.ops import lifecycle
from xfleet.ops.snapshots import apply
from xfleet.ops.snapshots.policy import parse_policies
from xfleet.ops.sync import sync

POLICIES = """\
policies:
  - name: hot
    match: {pool: tank}
    schedule: {every: 1h}
    keep: {frequently: 2}
"""


def run(inv: inventory.Inventory, db: str, plan: lifecycle.LifecyclePlan) -> int:
    """Execute a plan; the remote commands it issued (changes and the mirror's re-fetch)."""
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        out = lifecycle.execute(inv, location(db), plan, conns, source="test")
    assert out.ok, out.to_dict()
    return sum(1 for c in plan.commands)


def test_take_is_one_command_per_pool_and_prune_keeps_the_newest(tmp_path: Path,
                                                                 mirror_at: str) -> None:
    ps = parse_policies(POLICIES)
    counts = []
    for volumes in (20, 200):
        d = tmp_path / str(volumes)
        d.mkdir()
        inv = inventory.load(write_sim_inventory(d / "fleet.yaml",
                                                 {"n1": {"seed": 3, "volumes": volumes}}))
        db = mirror_at if volumes == 200 else str(d / "m.db")
        assert sync(inv, db).ok
        conn = mirror.connect(db)
        try:
            now = time.time()
            plan = apply.take(conn, ps, now=now, inventory=inv)
            counts.append([c.argv[:2] for c in plan.commands])
            assert len(plan.created) == volumes
            run(inv, db, plan)
            # a later run in the same slot takes nothing (the snapshots' own time is in it;
            # `now + 60` could be the next hour's slot)
            taken = conn.execute("SELECT max(creation) FROM datasets WHERE name LIKE ?",
                                 ("%@xfleet_hot_%",)).fetchone()[0]
            assert apply.take(conn, ps, now=taken, inventory=inv).commands == []
        finally:
            conn.close()
    assert counts[0] == counts[1] == [["zfs", "snapshot"]]  # one command, 20 or 200 volumes

    # two more hours: three snapshots per volume, `frequently: 2` lets the oldest go
    conn = mirror.connect(mirror_at)
    try:
        for hour in (1, 2):
            run(inv, mirror_at, apply.take(conn, ps, now=now + hour * 3600, inventory=inv))
        owned = "SELECT count(*) FROM datasets WHERE type = 'snapshot' AND name LIKE ?"
        assert conn.execute(owned, ("%@xfleet_hot_%",)).fetchone()[0] == 600
        plan = apply.prune(conn, ps, inventory=inv)
        assert len(plan.destroyed) == 200
        assert {tuple(c.argv[:2]) for c in plan.commands} == {("zfs", "destroy")}
        oldest = ps.policies[0].snapshot_name(now)
        assert {x for _, x, _ in plan.destroyed} == {
            r[0] for r in conn.execute("SELECT name FROM datasets WHERE name LIKE ?",
                                       (f"%@{oldest}",))}
        run(inv, mirror_at, plan)
        assert conn.execute(owned, ("%@xfleet_hot_%",)).fetchone()[0] == 400
        assert apply.prune(conn, ps, inventory=inv, max_prune=5).destroyed == []
        capped = apply.prune(conn, parse_policies(POLICIES.replace("frequently: 2",
                                                                   "frequently: 1")),
                             inventory=inv, max_prune=5)
        assert len(capped.destroyed) == 5
    finally:
        conn.close()


def test_a_nodes_own_max_prune_caps_its_share_of_a_run(tmp_path: Path) -> None:
    """n1 with `max_prune: 3` in the inventory gives up at most 3 snapshots a run; n2, without
    one, all it has to; the run's own max_prune still caps the total."""
    path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"seed": 3, "volumes": 10},
                                                         "n2": {"seed": 4, "volumes": 10}})
    path.write_text(path.read_text().replace("    n1:\n", "    n1:\n      max_prune: 3\n"))
    inv = inventory.load(path)
    assert inv.hosts["n1"].max_prune == 3 and inv.hosts["n2"].max_prune is None
    db = str(tmp_path / "m.db")
    assert sync(inv, db).ok
    ps = parse_policies(POLICIES.replace("frequently: 2", "frequently: 1"))
    conn = mirror.connect(db)
    try:
        now = time.time()
        for hour in (0, 1):
            run(inv, db, apply.take(conn, ps, now=now + hour * 3600, inventory=inv))
        plan = apply.prune(conn, ps, inventory=inv)
        by_node = {n: sum(1 for x, _, _ in plan.destroyed if x == n) for n in ("n1", "n2")}
        assert by_node == {"n1": 3, "n2": 10}, by_node
        total = apply.prune(conn, ps, inventory=inv, max_prune=5)
        assert len(total.destroyed) == 5
    finally:
        conn.close()
