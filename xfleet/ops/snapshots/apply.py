"""What a policy run changes: the due snapshots taken and the pruned ones destroyed, as
lifecycle plans (xfleet.ops.lifecycle: one atomic `zfs snapshot` per pool and batch of names,
`zfs destroy vol@a,b,c` per volume, every command journaled in `lifecycle_log`, the mirror
re-fetched for exactly the touched names).

Pruning never touches a held snapshot (one `zfs get userrefs` per node and batch: a held one
is skipped and reported, the rest go) nor a clone's origin (the retention keeps those), and
takes at most `max_prune` snapshots per run, and at most a node's own `max_prune` (inventory)
from that node (a first run over a long backlog goes in steps).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

from xfleet.mirror.backend import Connection
from xfleet.ops.lifecycle import Holds, LifecyclePlan, Target, plan_destroy, plan_snapshot
from xfleet.ops.snapshots.plan import newest_sql, owned_snapshots
from xfleet.ops.snapshots.policy import Policies
from xfleet.ops.snapshots.retention import Snap, decide

if TYPE_CHECKING:
    from xfleet.fleet.inventory import Inventory

DEFAULT_MAX_PRUNE = 100_000


def merge(op: str, plans: list[LifecyclePlan]) -> LifecyclePlan:
    out = LifecyclePlan(op)
    for p in plans:
        out.commands += p.commands
        out.created += p.created
        out.changed += p.changed
        out.destroyed += p.destroyed
        out.skipped += p.skipped
        out.refetch_trees += p.refetch_trees
    return out


def take(conn: Connection, policies: Policies, *, now: float | None = None,
         inventory: Inventory | None = None) -> LifecyclePlan:
    """A snapshot of every volume due one now, named by its policy and `now`."""
    now = time.time() if now is None else now
    plans = []
    for p in policies.policies:
        vols, params = newest_sql(policies, p, "node, name", inventory)
        cur = conn.execute(f"SELECT node, name FROM ({vols}) AS vols WHERE newest IS NULL OR "
                           "newest < ? ORDER BY node, name", [*params, p.schedule.last_slot(now)])
        targets = [Target(node, name, "volume") for node, name in cur]
        if targets:
            plans.append(plan_snapshot(conn, targets, p.snapshot_name(now)))
    return merge("snapshot", plans)


def prune(conn: Connection, policies: Policies, *, inventory: Inventory | None = None,
          holds: Holds | None = None, max_prune: int = DEFAULT_MAX_PRUNE) -> LifecyclePlan:
    """The snapshots every policy's retention prunes (up to `max_prune`, and up to each
    node's own `max_prune` from the inventory), held ones skipped;
    a clone's origin is kept by the retention and listed in `skipped` too."""
    chosen: dict[str, list[str]] = defaultdict(list)  # node -> snapshot names
    skipped: list[tuple[str, str, str]] = []
    n = 0
    # a node's own budget (inventory `max_prune`): its share of a run's destroys
    budget = {name: h.max_prune for name, h in inventory.hosts.items()
              if h.max_prune is not None} if inventory is not None else {}
    for p in policies.policies:
        for node, _vol, rows in owned_snapshots(conn, policies, p, inventory):
            d = decide([Snap(name, creation or 0, prot) for name, creation, _, prot in rows],
                       p.keep, p.schedule.tz)
            skipped += [(node, name, "kept: a clone's origin") for name, _, _, prot in rows
                        if prot]
            room = budget.get(node)
            for name in d.prune:
                if n >= max_prune or (room is not None and len(chosen[node]) >= room):
                    break
                chosen[node].append(name)
                n += 1
    targets: list[Target] = []
    for node, names in sorted(chosen.items()):
        held = holds.userrefs(node, names) if holds is not None else {}
        for name in names:
            if name in held:
                skipped.append((node, name, f"held ({held[name]} hold(s))"))
            else:
                targets.append(Target(node, name, "snapshot"))
    plan = plan_destroy(conn, targets) if targets else LifecyclePlan("destroy")
    plan.skipped += skipped
    return plan
